"""`aal-sweep submit`: a sweep as a Ray job, through the Ray Jobs SDK.

    config (checked here) -> working_dir: the resolved sweep.yaml; py_modules: this checkout's aal_sweep
    -> job `python -m aal_sweep.cli run sweep.yaml --address auto` on the cluster -> results on RESULTS

The job runs exactly the submitting code whatever the cluster's image holds (the image provides the
dependencies). Its submission id is derived from the sweep (name, results location, a counter), so a
sweep that is running cannot be submitted twice and a stopped one is resumed by submitting it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

import aal_sweep
from aal_sweep.config import AGENT_TIMEOUT_S, SweepConfig, config_source, load_raw, parse_config
from aal_sweep.errors import AalError, ConfigError
from aal_sweep.orchestration.events import Events
from aal_sweep.orchestration.trainable import test_hooks

CONFIG_NAME = "sweep.yaml"
# The driver runs Tune's event loop, the store's bookkeeping and partner derivation: one CPU, reserved so
# trials never oversubscribe the node it lands on, and deliberately no GPU (all of them go to trials).
DRIVER_CPUS = 1
DRIVER_GPUS = 0
ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)
OUTCOME = {JobStatus.SUCCEEDED: 0, JobStatus.STOPPED: 130}  # FAILED: the driver's own exit code
# Right after `ray start --head` the job server answers HTTP 500 with this until its agent registers.
NO_AGENT = "No available agent to submit job"
AGENT_POLL_S = 1.0
AGENT_LOG_HEAD = 1 << 16  # the dashboard names its address among its first lines
AGENT_LINE = 300  # characters of the agent's last log line in a message


def cluster_config(config_path: str | Path, results: str | None, overrides: Sequence[str] = ()) -> SweepConfig:
    """The config as the cluster will run it, checked here.

    Checked locally: the whole schema (every key, type and choice, as `run` does) and that every path
    the cluster reads or writes is absolute (or, for results, a URI). Not checked locally: the dataset's
    files and model.pretrained's file, which live on the cluster; the job's driver checks them first,
    before it writes anything, with the same one-line errors."""
    path = Path(config_path)
    cfg = parse_config(load_raw(path, overrides), config_source(path, overrides), check_files=False)
    if results is not None:
        cfg = dataclasses.replace(cfg, results=results)
    where = "--results" if results is not None else "results"
    problems = []
    if "://" not in cfg.results and not Path(cfg.results).is_absolute():
        problems.append(
            f"{where}: {cfg.results!r} is relative, and a job runs in a temporary folder of the "
            f"cluster that is deleted with it; pass --results s3://BUCKET/PREFIX or an absolute "
            f"path every node sees (NFS)"
        )
    cluster_paths = {
        "dataset.root": cfg.dataset.root,
        "dataset.cache": cfg.dataset.cache,
        "model.pretrained": None if cfg.model.pretrained == "imagenet" else cfg.model.pretrained,
    }
    for key, value in cluster_paths.items():
        if value and not Path(value).is_absolute():
            problems.append(
                f"{key}: {value!r} is relative; on a cluster it must be the absolute path where every node finds it"
            )
    if problems:
        raise ConfigError(str(path), problems)
    return cfg


def submission_prefix(cfg: SweepConfig) -> str:
    """aal-<name>-<hash of the results location>: one sweep, whatever the counter after it."""
    where = cfg.results.split("?", 1)[0].rstrip("/")  # query parameters (endpoint, keys) do not change it
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return f"aal-{re.sub(r'[^A-Za-z0-9_.]+', '_', cfg.name)[:40]}-{digest}"


def submit(cfg: SweepConfig, address: str, wait: bool, on_event=None, agent_timeout: float = AGENT_TIMEOUT_S) -> int:
    """Submit (or resume) the sweep as a Ray job; say how to follow it. With `wait`, follow its logs (each
    chunk an event of kind "log") and return the job's outcome: 0 succeeded, the driver's exit code when it
    failed, 130 stopped. `agent_timeout`: how long to wait for the job agent of a head that just started."""
    events = Events(on_event)
    # Ray's own logger says INFO about every package it uploads; it follows --log-level like ours
    logging.getLogger("ray").setLevel(logging.getLogger().getEffectiveLevel())
    client = _client(address)
    prefix = submission_prefix(cfg)
    earlier = _earlier_jobs(client, address, prefix)
    running = [j for j in earlier if j.status in ACTIVE]
    if running:
        job = running[0].submission_id
        raise AalError(
            f"sweep {cfg.name!r} on {_shown(cfg.results)} is already running as job {job}; follow it "
            f"with `ray job logs --follow {job} --address {address}`, or stop it with "
            f"`ray job stop {job} --address {address}` and submit again to resume"
        )
    counter = 1 + max((int(j.submission_id.rsplit("-", 1)[1]) for j in earlier), default=0)
    job_id = f"{prefix}-{counter}"
    with tempfile.TemporaryDirectory(prefix="aal-submit-") as folder:
        (Path(folder) / CONFIG_NAME).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        runtime_env = {
            "working_dir": folder,
            "py_modules": [str(Path(aal_sweep.__file__).parent)],
            # progress lines reach `ray job logs` as they happen; the test hooks set here reach the job's driver
            "env_vars": {"PYTHONUNBUFFERED": "1", **{k: v for k, v in test_hooks().items() if v}},
        }
        _submit_when_the_agent_is_up(
            address,
            client,
            events,
            agent_timeout,
            entrypoint=f"python -m aal_sweep.cli run {CONFIG_NAME} --address auto",
            submission_id=job_id,
            runtime_env=runtime_env,
            entrypoint_num_cpus=DRIVER_CPUS,
            entrypoint_num_gpus=DRIVER_GPUS,
            metadata={"aal_sweep": cfg.name, "results": _shown(cfg.results)},
        )
    if earlier:
        events.info(
            f"resuming sweep {cfg.name!r}: earlier job {earlier[-1].submission_id} ended "
            f"{earlier[-1].status.value}; the store keeps every finished trial"
        )
    events.info(
        f"submitted job {job_id} to {address}\n"
        f"  logs:     ray job logs --follow {job_id} --address {address}\n"
        f"  stop:     ray job stop {job_id} --address {address}\n"
        f"  progress: aal-sweep status {_shown(cfg.results)}"
    )
    return _follow(client, address, job_id, events) if wait else 0


def _submit_when_the_agent_is_up(
    address: str, client: JobSubmissionClient, events: Events, wait_s: float = AGENT_TIMEOUT_S, **job
) -> None:
    """Submit; while the job server answers "No available agent" (a head just started: its nodes are up,
    the job agent not yet), wait for it, saying so once, up to `wait_s`, then fail in one line that ends
    with what the agent's log says last (where it can be read here)."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            _call(address, client.submit_job, **job)
            return
        except AalError as e:
            if NO_AGENT not in str(e):
                raise
            if time.monotonic() >= deadline:
                raise AalError(
                    f'--address {address}: the job server had no job agent for {wait_s:g} s ("{NO_AGENT}"); '
                    f"check the head (`ray status`) and submit again, or wait longer with --agent-timeout "
                    f"SECONDS; {agent_log(address)}"
                ) from None
            if not said:
                events.info(
                    f"the job server has no job agent yet (a head that just started); waiting for it, "
                    f"up to {wait_s:g} s (--agent-timeout)"
                )
                said = True
            time.sleep(AGENT_POLL_S)


def agent_log(address: str, temp_dirs: Sequence[str] | None = None) -> str:
    """The last line of the job agent's log (dashboard_agent.log in the head's session logs folder), said
    for a message. Readable here when the head runs on this machine: its session is the one whose
    dashboard.log names the address's port (the newest such), under Ray's temp folder ($RAY_TMPDIR/ray,
    else /tmp/ray)."""
    parsed = urllib.parse.urlparse(address)
    where = "dashboard_agent.log in the head's session logs folder (/tmp/ray/session_latest/logs by default)"
    if not _is_local(parsed.hostname or ""):
        return f"the job agent's log is on the head, not here: {where}"
    if temp_dirs is None:
        temp_dirs = [str(Path(os.environ["RAY_TMPDIR"]) / "ray")] if os.environ.get("RAY_TMPDIR") else []
        temp_dirs.append("/tmp/ray")
    # by port: the address it logs is the node's IP when it listens on 0.0.0.0, not the name we were given
    wanted = re.compile(rf"Dashboard head http address: \S+:{parsed.port}\b")
    sessions = [p for d in dict.fromkeys(temp_dirs) for p in Path(d).glob("session_2*") if p.is_dir()]
    for session in sorted(sessions, key=lambda p: p.name, reverse=True):  # newest first: the name is its start
        try:
            with open(session / "logs" / "dashboard.log", encoding="utf-8", errors="replace") as f:
                if not wanted.search(f.read(AGENT_LOG_HEAD)):
                    continue
            lines = (session / "logs" / "dashboard_agent.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        log = session / "logs" / "dashboard_agent.log"
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), None)
        return f"its log {log} ends with: {last[:AGENT_LINE]}" if last else f"its log {log} is empty"
    return (
        f"no session of this machine's Ray serves {parsed.hostname}:{parsed.port} (or its logs are "
        f"unreadable here): {where}"
    )


def _is_local(host: str) -> bool:
    """Whether `host` is an address of this machine (a socket can be bound to it)."""
    try:
        with socket.socket() as s:
            s.bind((socket.gethostbyname(host), 0))
        return True
    except OSError:
        return False


def _follow(client: JobSubmissionClient, address: str, job_id: str, events: Events) -> int:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            events.info(chunk, kind="log")

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        events.info(
            f"stopped following; job {job_id} keeps running (`ray job stop {job_id} --address {address}` stops it)"
        )
        return 130
    info = _call(address, client.get_job_info, job_id)
    code = OUTCOME.get(info.status, info.driver_exit_code or 1)
    events.info(f"job {job_id} {info.status.value}" + (f" (exit code {code})" if code else ""))
    return code


def _earlier_jobs(client: JobSubmissionClient, address: str, prefix: str) -> list:
    """This sweep's earlier submissions, oldest first."""
    pattern = re.compile(re.escape(prefix) + r"-(\d+)$")
    jobs = [j for j in _call(address, client.list_jobs) if j.submission_id and pattern.match(j.submission_id)]
    return sorted(jobs, key=lambda j: int(j.submission_id.rsplit("-", 1)[1]))


def _client(address: str) -> JobSubmissionClient:
    parsed = urllib.parse.urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise AalError(f"--address {address!r}: expected the job server's URL, http://HEAD:8265")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:  # fail in seconds where nothing listens (the SDK would wait on the TCP connect)
        socket.create_connection((parsed.hostname, port), timeout=5).close()
    except OSError as e:
        raise AalError(
            f"--address {address}: nothing answers at {parsed.hostname}:{port} ({e.strerror or e}); "
            f"check the address (the head's dashboard port, 8265 by default)"
        ) from None
    return _call(address, JobSubmissionClient, address)


def _call(address: str, fn, *args, **kwargs):
    """One Jobs SDK call, its failures as one-line errors."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args, **kwargs)
    except AuthenticationError as e:
        raise AalError(
            f"--address {address}: the job server refused our token ({_first_line(e)}); set "
            f"RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token (`ray get-auth-token` on "
            f"the head)"
        ) from None
    except ConnectionError as e:
        raise AalError(f"--address {address}: cannot reach the job server ({_first_line(e)})") from None
    except RuntimeError as e:  # the SDK's "Request failed with status code ..."
        raise AalError(f"--address {address}: the job server said: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def _shown(results: str) -> str:
    return results.split("?", 1)[0]  # query parameters may hold credentials: never printed
