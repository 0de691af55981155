"""`aal-sweep submit`: checks made before anything is sent (fast), then end to end on a real two-node Ray
cluster started with `ray start --head` and `ray start --address`, through its job server: results on a
path, then on a local S3 server with no shared disk assumed (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import Hold, write_config
from helpers import check_no_redo
from ray_nodes import BIN, RayStart, isolated_env, processes_of
from s3_server import ENV as S3_ENV
from s3_server import make_bucket, s3_server  # noqa: F401,F811  (a fixture)

from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.store import Store

TRAIN = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seed": 0}
RESOURCES = {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_failures": 1}


def aal_sweep(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "aal-sweep"), *args], env=env, capture_output=True, text=True, timeout=timeout)


# ---- before anything is sent -------------------------------------------------------------------------


def test_relative_paths_are_refused_with_the_fix(tmp_path):
    config = write_config(tmp_path / "c.yaml", Path("data"))  # a relative dataset root
    out = aal_sweep("submit", str(config), "--address", "http://127.0.0.1:1", "--results", "results/x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--results: 'results/x' is relative" in out.stderr and "s3://BUCKET/PREFIX" in out.stderr
    assert "dataset.root: 'data' is relative" in out.stderr


def test_the_config_is_validated_locally_like_run(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "data", resources={"gpus_per_trial": "half"})
    submitted = aal_sweep("submit", str(config), "--address", "http://127.0.0.1:1", "--results", "/r")
    ran = aal_sweep("run", str(config))
    assert submitted.returncode == ran.returncode == 2
    assert "resources.gpus_per_trial: expected a number, got 'half'" in submitted.stderr
    assert "resources.gpus_per_trial: expected a number, got 'half'" in ran.stderr


def test_the_job_runs_the_config_as_checked_here(tmp_path):
    from aal_sweep.config import parse_config
    from aal_sweep.orchestration.submit import cluster_config, submission_prefix

    config = write_config(tmp_path / "c.yaml", tmp_path / "data", train={"epochs": 3, "seeds": [0, 1]})
    cfg = cluster_config(config, "s3://bucket/sweep?endpoint_override=minio:9000&scheme=http")
    shipped = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # the job's sweep.yaml
    assert parse_config(shipped, check_files=False) == cfg
    # one sweep, one id prefix: the endpoint parameters do not change it, another location does
    assert submission_prefix(cfg) == submission_prefix(cluster_config(config, "s3://bucket/sweep"))
    assert submission_prefix(cfg) != submission_prefix(cluster_config(config, "s3://bucket/other"))
    assert submission_prefix(cfg).startswith("aal-t-")


def test_an_address_nothing_answers_at_fails_fast(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "data")
    t0 = time.monotonic()
    out = aal_sweep("submit", str(config), "--address", "http://127.0.0.1:1")
    assert out.returncode == 2 and "nothing answers at 127.0.0.1:1" in out.stderr
    assert time.monotonic() - t0 < 30


# ---- a real cluster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):  # noqa: F811
    """A head (the driver's CPU, no GPU) and one GPU node (4 CPUs, 1 GPU) joined with `ray start --address`;
    both see the local S3 server. Stopped after, with every process it started."""
    env = isolated_env() | S3_ENV | {"AWS_ENDPOINT_URL": s3_server}
    ray_start = RayStart(env)
    try:
        ray_start.head(num_cpus=1, num_gpus=0)
        ray_start.join(num_cpus=4, num_gpus=1)
        data = make_synthetic(
            tmp_path_factory.mktemp("submit") / "data", n_attributes=3, n_images=1500, size=(16, 16), seed=4
        )
        yield ray_start, env, data, s3_server
    finally:
        ray_start.stop()
    deadline = time.monotonic() + 30
    while processes_of(env) and time.monotonic() < deadline:  # reaped by their parents
        time.sleep(0.5)
    assert not processes_of(env), f"Ray processes left behind: {processes_of(env)}"


def submit(config: Path, address: str, results: str, env: dict, *flags: str) -> subprocess.CompletedProcess:
    return aal_sweep("submit", str(config), "--address", address, "--results", results, *flags, env=env)


def job_ids(output: str) -> list[str]:
    return [ln.split()[2] for ln in output.splitlines() if ln.startswith("submitted job ")]


def ray_job(env: dict, address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", *args, "--address", address], env=env, capture_output=True, text=True, timeout=120
    )


def job_status(env: dict, address: str, job: str) -> str:
    out = subprocess.run(
        [str(BIN / "ray"), "list", "jobs", "--address", address, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return next(j["status"] for j in json.loads(out.stdout) if j["submission_id"] == job)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["path", "s3"])
def test_submit_stop_resume_and_nothing_left(cluster, tmp_path, monkeypatch, where):
    ray_start, env, data, endpoint = cluster
    for k in (*S3_ENV, "AWS_ENDPOINT_URL"):  # this side reads the store too
        monkeypatch.setenv(k, env[k])
    address = ray_start.address
    results = str(tmp_path / "results") if where == "path" else f"s3://{make_bucket(endpoint)}/sweep"
    # a screened pair phase whose label correlation the job's driver computes where the data is (K = M-1)
    config = write_config(
        tmp_path / "c.yaml",
        data,
        train=TRAIN,
        resources=RESOURCES,
        phases=["single", "pair"],
        pairs={"mode": "screened", "strategy": "static", "estimator": "label_correlation", "confirm": 2},
    )
    raw = yaml.safe_load(config.read_text())
    raw["dataset"]["cache"] = str(tmp_path / "cache")
    config.write_text(yaml.safe_dump(raw))

    # one pair trial waits after its first epoch until the job is stopped (AAL_SWEEP_HOLD, which submit
    # hands to the job): the stop lands mid-sweep however fast the machine
    hold = Hold(tmp_path / "hold", "pair-Disc-Square", epoch=1)
    first = submit(config, address, results, hold.env(env))
    assert first.returncode == 0, first.stderr
    [job1] = job_ids(first.stdout)
    assert f"ray job logs --follow {job1} --address {address}" in first.stdout
    assert f"aal-sweep status {results}" in first.stdout
    # while it runs, the same sweep cannot be submitted again
    twice = submit(config, address, results, env)
    assert twice.returncode == 2 and f"already running as job {job1}" in twice.stderr, twice.stderr
    store = Store(results)
    wait_for(lambda: bool(hold.held()) and len(store.done_ids()) >= 1, job1, env, address)
    assert ray_job(env, address, "stop", job1).returncode == 0
    wait_for(lambda: job_status(env, address, job1) == "STOPPED", job1, env, address)
    done_before = store.done_ids()
    assert len(done_before) < 6, "the sweep ended before it could be stopped"

    second = submit(config, address, results, env, "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"earlier job {job1} ended STOPPED" in second.stdout
    [job2] = job_ids(second.stdout)
    assert job2 == job1[:-1] + "2" and "sweep done" in second.stdout and f"job {job2} SUCCEEDED" in second.stdout
    check_no_redo(store, done_before)  # what the stopped job finished was not trained again
    rows = store.trials()
    assert len(store.done_ids()) == 6 and rows["node_id"].nunique() == 1  # every trial on the GPU node

    third = submit(config, address, results, env, "--wait")
    assert third.returncode == 0 and "nothing to do" in third.stdout, third.stdout + third.stderr

    # the submitting side reads the results where the cluster wrote them
    matrix = aal_sweep("matrix", results, "--format", "json", env=env)
    assert matrix.returncode == 0, matrix.stderr
    shown = json.loads(matrix.stdout)
    assert shown["attributes"] == ["Disc", "Square", "Triangle"]
    assert all(v is not None for row in shown["matrix"].values() for v in row.values())  # all 9 cells


@pytest.mark.slow
def test_a_dataset_missing_on_the_cluster_fails_the_job_with_runs_exit_code(cluster, tmp_path):
    """The dataset is checked where it lives: by the job's driver, before it writes anything."""
    ray_start, env, data, _ = cluster
    config = write_config(tmp_path / "c.yaml", tmp_path / "nowhere")  # absolute, but not there
    out = submit(config, ray_start.address, str(tmp_path / "r"), env, "--wait")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "dataset.root" in out.stdout and "FAILED (exit code 2)" in out.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_wrong_token_is_one_line(cluster, tmp_path):
    ray_start, env, data, _ = cluster
    config = write_config(tmp_path / "c.yaml", data)
    bad = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"RAY_AUTH_TOKEN": "0" * 64}
    out = submit(config, ray_start.address, str(tmp_path / "r"), bad)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "refused our token" in out.stderr and "RAY_AUTH_TOKEN" in out.stderr


def wait_for(condition, job: str, env: dict, address: str, timeout: float = 600) -> None:
    """Until `condition()`; fails with the job's logs when it times out or the job ends unexpectedly."""
    deadline = time.monotonic() + timeout
    while not condition():
        status = job_status(env, address, job)
        ok = time.monotonic() < deadline and status in ("PENDING", "RUNNING", "STOPPED")
        assert ok, f"job {job} {status}: " + ray_job(env, address, "logs", job).stdout[-3000:]
        time.sleep(0.5)


# ---- a job server without its agent yet ----------------------------------------------------------------


class _AgentLater(__import__("http.server").server.BaseHTTPRequestHandler):
    """Ray's job server as `ray start --head` leaves it for a while: its version answers, a submission gets
    HTTP 500 "No available agent to submit job, please try again later" (the real text) `refusals` times."""

    refusals = 2
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._reply(
            200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}
        ) if self.path == "/api/version" else self._reply(200, [])

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body["submission_id"])
        if len(type(self).seen) <= type(self).refusals:
            self._reply(500, "No available agent to submit job, please try again later.")
        else:
            self._reply(200, {"submission_id": body["submission_id"], "job_id": None})

    def _reply(self, code: int, doc) -> None:
        data = (json.dumps(doc) if not isinstance(doc, str) else doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if not isinstance(doc, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_agent_log_s_last_line_is_named_where_it_can_be_read(tmp_path):
    """The head's session is the one whose dashboard.log names the job server's address; its
    dashboard_agent.log's last line goes into the message. A head on another machine: said so."""
    from aal_sweep.orchestration.submit import agent_log

    temp = tmp_path / "ray"
    for name, port in (("session_2026-12-07_10-00-00_000000_1", 8265), ("session_2026-12-07_11-00-00_000000_2", 8300)):
        logs = temp / name / "logs"
        logs.mkdir(parents=True)
        (logs / "dashboard.log").write_text(
            "2026-12-07 10:00:01,000\tINFO head.py:516 -- Initialize the http server.\n"
            f"2026-12-07 10:00:01,200\tINFO http_server_head.py:493 -- Dashboard head http address: 127.0.0.2:{port}\n"
        )
        (logs / "dashboard_agent.log").write_text(
            "2026-12-07 10:00:05,748\tINFO process_watcher.py:65 -- check_parent_via_pipe\n"
            f"2026-12-07 10:00:09,001\tINFO agent.py:1 -- the last line of the agent of port {port}\n\n"
        )
    said = agent_log("http://127.0.0.2:8265", [str(temp)])
    log = temp / "session_2026-12-07_10-00-00_000000_1" / "logs" / "dashboard_agent.log"
    last = "2026-12-07 10:00:09,001\tINFO agent.py:1 -- the last line of the agent of port 8265"
    assert said == f"its log {log} ends with: {last}"
    # the same head by another of this machine's names: found by its port (a head on 0.0.0.0 logs its IP)
    assert agent_log("http://localhost:8265", [str(temp)]) == said
    assert agent_log("http://127.0.0.2:9999", [str(temp)]).startswith(
        "no session of this machine's Ray serves 127.0.0.2:9999 (or its logs are unreadable here): "
        "dashboard_agent.log in the head's session logs folder"
    )
    (log.parent / "dashboard_agent.log").write_text("")
    assert agent_log("http://127.0.0.2:8265", [str(temp)]) == f"its log {log} is empty"
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine
    assert agent_log("http://192.0.2.1:8265", [str(temp)]).startswith("the job agent's log is on the head, not here")


def test_agent_timeout_must_be_a_positive_number_of_seconds(tmp_path):
    for bad in ("0", "-5", "nan", "soon"):
        out = subprocess.run(
            [sys.executable, "-m", "aal_sweep.cli", "submit", "c.yaml", "--agent-timeout", bad],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert f"argument --agent-timeout: '{bad}' must be a number of seconds greater than 0" in out.stderr


@pytest.mark.parametrize("refusals,ok", [(2, True), (10**6, False)])
def test_submit_waits_for_the_job_agent_of_a_new_head_then_gives_up_in_one_line(refusals, ok):
    import threading
    from http.server import ThreadingHTTPServer

    from ray.job_submission import JobSubmissionClient

    from aal_sweep.errors import AalError
    from aal_sweep.orchestration.events import Events
    from aal_sweep.orchestration.submit import _submit_when_the_agent_is_up

    handler = type("Handler", (_AgentLater,), {"refusals": refusals, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    said = []
    try:
        client = JobSubmissionClient(address)
        job = {"entrypoint": "true", "submission_id": "aal-x-1"}
        if ok:
            _submit_when_the_agent_is_up(address, client, Events(said.append), wait_s=30, **job)
            assert handler.seen == ["aal-x-1"] * 3  # two refusals, then accepted
            assert len(said) == 1 and "waiting for it" in said[0].text  # said once
        else:
            with pytest.raises(AalError, match="the job server had no job agent for 2 s") as e:
                _submit_when_the_agent_is_up(address, client, Events(said.append), wait_s=2, **job)
            assert "\n" not in str(e.value) and len(handler.seen) >= 2
            assert "wait longer with --agent-timeout SECONDS" in str(e.value)
            # no Ray of this machine serves the fake job server: the message says where the log would be
            assert f"no session of this machine's Ray serves 127.0.0.1:{server.server_address[1]}" in str(e.value)
    finally:
        server.shutdown()
