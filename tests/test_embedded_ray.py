"""`aal-sweep run` without --address starts a Ray of its own, on loopback, whatever else runs on the machine;
and a trial too large for every node of the cluster fails at once, in one line.

The other Ray clusters here live in a private Ray temp folder (RAY_TMPDIR), so the address file they write
never reaches another process of the machine; each is stopped by its own process group.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import write_config

from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.store import Store

pytestmark = pytest.mark.slow
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
QUICK = {"train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seed": 0}, "phases": ["single"]}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A sweep of two one-epoch trials on 16x16 images."""
    tmp = tmp_path_factory.mktemp("embedded")
    root = make_synthetic(tmp / "data", n_attributes=2, n_images=300, size=(16, 16), seed=4)
    return tmp, root


def quick_config(tmp: Path, root: Path, name: str, **overrides) -> Path:
    path = write_config(tmp / f"{name}.yaml", root, **(QUICK | overrides))
    raw = yaml.safe_load(path.read_text())
    raw["results"] = str(tmp / name)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def ray_tmpdir():
    """A private Ray temp folder; short, because Ray's unix socket paths must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="aalray-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_watching_ports(config: Path, env: dict, timeout: float = 300) -> tuple[subprocess.CompletedProcess, set]:
    """Run the CLI; meanwhile collect the address of every socket its processes listen on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **env},
    )
    listening: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                break
            for p in family:
                try:
                    listening |= {
                        (p.name(), c.laddr.ip, c.laddr.port)
                        for c in p.net_connections("inet")
                        if c.status == psutil.CONN_LISTEN
                    }
                except psutil.Error:
                    continue
            time.sleep(0.5)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"the run did not end in {timeout}s (joined another cluster?):\n{out[-2000:]}\n{err[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), listening


def test_a_stale_address_file_and_ray_address_are_not_followed(quick, ray_tmpdir):
    """A `ray start` whose processes died leaves its address in <ray temp>/ray_current_cluster; RAY_ADDRESS
    may name a dead cluster too. Both made `ray.init()` retry a dead address for minutes."""
    tmp, root = quick
    dead = f"127.0.0.1:{free_port()}"
    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text(dead)  # where ray.init() looks (RAY_TMPDIR/ray/)
    config = quick_config(tmp, root, "stale")
    out, listening = run_watching_ports(config, {"RAY_TMPDIR": str(ray_tmpdir), "RAY_ADDRESS": dead}, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"RAY_ADDRESS={dead} is ignored" in out.stdout
    assert Store(tmp / "stale").done_ids()
    # the embedded Ray listens on loopback only: gcs, raylet, agents, workers
    assert listening and {ip for _, ip, _ in listening} <= LOOPBACK, sorted(listening)
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in listening}


def test_another_local_cluster_is_not_joined(quick, ray_tmpdir):
    tmp, root = quick
    port = free_port()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (ray_tmpdir / "ray" / "ray_current_cluster").is_file():
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        head_node = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                import ray
                ray.init(address="127.0.0.1:{port}", logging_level="ERROR")
                print(ray.get_runtime_context().get_node_id())"""),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        ).stdout.split()[-1]
        config = quick_config(tmp, root, "beside")
        out, _ = run_watching_ports(config, {"RAY_TMPDIR": str(ray_tmpdir)}, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        nodes = set(Store(tmp / "beside").trials()["node_id"])
        assert nodes and head_node not in nodes  # the trials ran on the run's own Ray
        assert len(list((ray_tmpdir / "ray").glob("session_2*"))) == 2  # the head's session and the run's own
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` does not stop promptly on SIGTERM
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()


# ---- §4: a trial larger than every node ----------------------------------------------------------------


def test_a_trial_larger_than_every_node_fails_at_once(quick):
    tmp, root = quick
    config = quick_config(tmp, root, "toolarge", resources={"cpus_per_trial": 64, "gpus_per_trial": 0})
    raw = yaml.safe_load(config.read_text())
    raw["dataset"]["cache"] = str(tmp / "toolarge-cache")
    config.write_text(yaml.safe_dump(raw))
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(config)], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 2, out.stderr[-2000:]
    line = (
        r"aal-sweep: error: resources: a trial needs 64 CPU and 0 GPU on one node, but no node of the cluster "
        r"has that: the largest of its 1 node\(s\) has \d+ CPU and 0 GPU; lower resources.cpus_per_trial"
    )
    assert re.search(line, out.stderr) and "Traceback" not in out.stderr, out.stderr[-2000:]
    # refused before anything is built or written: no decode cache, no results folder
    assert not (tmp / "toolarge").exists() and not (tmp / "toolarge-cache").exists()
    assert time.monotonic() - t0 < 180


def test_the_size_check_reads_every_node_of_a_cluster(tmp_path):
    """On a real three-node cluster (ray.cluster_utils.Cluster): a trial that fits only the GPU node passes;
    one that fits none names the largest node; the check takes the node with most GPUs into account."""
    script = textwrap.dedent("""
        import ray
        from ray.cluster_utils import Cluster
        from aal_sweep.errors import AalError
        from aal_sweep.orchestration.ray_connect import check_fits

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=4)
        cluster.add_node(num_cpus=2, num_gpus=1)
        ray.init(address=cluster.address, logging_level="ERROR")
        try:
            check_fits(2, 1)
            check_fits(4, 0)
            for cpus, gpus in ((4, 1), (8, 0), (1, 2)):
                try:
                    check_fits(cpus, gpus)
                    print("FITS", cpus, gpus)
                except AalError as e:
                    print("ERROR", e)
        finally:
            ray.shutdown()
            cluster.shutdown()
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="aalc-", dir="/tmp")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith(("ERROR", "FITS"))]
    largest = "the largest of its 3 node(s) has 4 CPU and 0 GPU (the node with most GPUs: 2 CPU and 1 GPU)"
    assert errors == [
        f"ERROR resources: a trial needs 4 CPU and 1 GPU on one node, but no node of the cluster has that: {largest}; "
        "lower resources.cpus_per_trial / resources.gpus_per_trial or add a larger node",
        f"ERROR resources: a trial needs 8 CPU and 0 GPU on one node, but no node of the cluster has that: {largest}; "
        "lower resources.cpus_per_trial / resources.gpus_per_trial or add a larger node",
        f"ERROR resources: a trial needs 1 CPU and 2 GPU on one node, but no node of the cluster has that: {largest}; "
        "lower resources.cpus_per_trial / resources.gpus_per_trial or add a larger node",
    ], out.stdout
