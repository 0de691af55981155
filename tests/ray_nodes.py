"""Real multi-node Ray clusters on this machine, for the cluster tests and benchmarks/cluster.py.

    env = isolated_env(folder)                  # the environment every process of the cluster gets
    with local_cluster(env, [dict(num_cpus=4, num_gpus=1)] * 2) as cluster: ...   # ray.cluster_utils.Cluster
    with RayStart(env, ip) as ray_start: ray_start.head(...); ray_start.join(...)  # `ray start` processes

Isolation from every other Ray on the machine: a temp dir of our own (RAY_TMPDIR; Ray's default address
file lives there, so a bare `ray.init()` elsewhere never finds these clusters). Token authentication stays
on, with the user's token (~/.ray/auth_token, created by `ray get-auth-token --generate` when missing).
Every process started here is stopped by its process group or by Cluster.shutdown, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # ray, aal-sweep of this virtual environment


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def agent_ports(host: str = "127.0.0.1") -> dict[str, int]:
    """Free ports for a node's dashboard and runtime-env agents, as RayParams names them. Left at 0, each
    agent picks its own and the raylet waits for it in a file for a fixed time (Ray 2.60; seen: it gave up
    16-17 s after starting the agent): on a machine whose cores are busy the agent's imports take longer
    (seen: 19-22 s, docs/robustness.md).
    Given ports, the raylet does not wait."""
    names = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    return {name: free_port(host) for name in names}


def isolated_env(loopback_only: bool = True) -> dict[str, str]:
    """os.environ plus a Ray temp dir of our own and token authentication.

    loopback_only: Ray resolves a 127.0.0.1 address to the machine's outbound IP before connecting
    (ray._private.services.resolve_ip_for_localhost) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; with it,
    every node and driver stays on 127.0.0.1. `ray start --address` refuses that setting, so RayStart uses
    another loopback address instead (see there)."""
    token = Path.home() / ".ray" / "auth_token"
    if not token.is_file():
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True)
    # short: Ray's unix sockets live below it and their paths are limited to 107 characters
    tmp = tempfile.mkdtemp(prefix="aalray-", dir="/tmp")
    (Path(tmp) / "ray").mkdir()
    env = dict(
        os.environ,
        RAY_TMPDIR=tmp,
        RAY_AUTH_MODE="token",
        PYTHONUNBUFFERED="1",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Ray starts a node's workers at nice 15; beside other busy processes (the loaded run of the slow
        # tests) they got about 5% of a core. These clusters' trials are the work, as on the embedded Ray.
        RAY_worker_niceness="0",
    )
    if loopback_only:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def ray_temp_dir(env: dict[str, str]) -> Path:
    return Path(env["RAY_TMPDIR"]) / "ray"


@contextlib.contextmanager
def patched_environ(env: dict[str, str]):
    """os.environ = env while the block runs (the Cluster's nodes inherit it), restored after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def local_cluster(
    env: dict[str, str], workers: list[dict], head: dict | None = None, worker_env: list[dict[str, str]] | None = None
):
    """A ray.cluster_utils.Cluster: a head (by default no GPU, one CPU: the driver's) and `workers`, each
    node's processes started with `env` (plus its own `worker_env[i]`). Yields the Cluster; its
    `worker_nodes_in_order` lists the worker nodes as added."""
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 1, "num_gpus": 0, **(head or {})}
    with patched_environ(env):
        cluster = Cluster(
            initialize_head=True,
            shutdown_at_exit=False,
            head_node_args={
                **head,
                "node_ip_address": "127.0.0.1",
                "temp_dir": str(ray_temp_dir(env)),
                "include_dashboard": False,
                **agent_ports(),
            },
        )
    cluster.worker_nodes_in_order = []
    try:
        for i, args in enumerate(workers):
            with patched_environ({**env, **(worker_env[i] if worker_env else {})}):
                node = cluster.add_node(node_ip_address="127.0.0.1", **agent_ports(), **args)
            cluster.worker_nodes_in_order.append(node)
        yield cluster
    finally:
        with patched_environ(env):
            cluster.shutdown()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


class RayStart:
    """`ray start --head` and `ray start --address` processes, each in its own process group.

    The nodes use 127.0.0.2: a joining node resolves a 127.0.0.1 head address to the machine's outbound IP
    and `ray start --address` refuses RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; 127.0.0.2 is loopback too, but
    not "localhost" to Ray, so nothing is resolved. (Ray then listens on all interfaces for its gRPC ports;
    token authentication guards them.)"""

    IP = "127.0.0.2"

    def __init__(self, env: dict[str, str]):
        self.env = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        self.procs: list[subprocess.Popen] = []
        self.logs = Path(env["RAY_TMPDIR"])
        self.gcs_port = self.dashboard_port = None

    @property
    def address(self) -> str:
        return f"http://{self.IP}:{self.dashboard_port}"

    def head(self, num_cpus: float = 1, num_gpus: float = 0, timeout: float = 120) -> str:
        self.gcs_port, self.dashboard_port = free_port(self.IP), free_port(self.IP)
        self._start(
            "head",
            [
                "--head",
                "--port",
                str(self.gcs_port),
                "--dashboard-host",
                self.IP,
                "--dashboard-port",
                str(self.dashboard_port),
                "--ray-client-server-port",
                str(free_port(self.IP)),
                "--num-cpus",
                str(num_cpus),
                "--num-gpus",
                str(num_gpus),
            ],
        )
        _wait_listening(self.IP, self.dashboard_port, timeout, self.procs[-1], self.logs / "head.log")
        deadline = time.monotonic() + timeout
        while True:  # the job server answers before its agent takes jobs ("No available agent ...")
            out = subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--address", self.address, "--", "true"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                return self.address
            assert time.monotonic() < deadline, out.stdout + out.stderr
            time.sleep(1)

    def join(self, num_cpus: float, num_gpus: float, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        before = self.node_count()
        self._start(
            f"node{len(self.procs)}",
            ["--address", f"{self.IP}:{self.gcs_port}", "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)],
            env,
        )
        deadline = time.monotonic() + timeout
        while self.node_count() <= before:
            assert self.procs[-1].poll() is None, (self.logs / f"node{len(self.procs) - 1}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the node never joined"
            time.sleep(1)

    def node_count(self) -> int:
        out = subprocess.run(
            [
                str(BIN / "ray"),
                "list",
                "nodes",
                "--address",
                self.address,
                "--filter",
                "state=ALIVE",
                "--format",
                "json",
            ],
            env=self.env,
            capture_output=True,
            text=True,
        )
        try:
            return len(json.loads(out.stdout))
        except ValueError:  # "No resource in the cluster", or the state API not up yet
            return 0

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "w")
        # Each node its own temp folder, as on two machines: nodes sharing one delete each other's runtime-env
        # files (the job's working_dir and py_modules) when they clean up.
        temp_dir = ray_temp_dir(self.env) if name == "head" else Path(self.env["RAY_TMPDIR"]) / name
        # The agents' ports, given (agent_ports): the HTTP one is fixed (52365) unless given, and another Ray
        # on the machine may hold it; the others, so that the raylet does not wait for them.
        ports = agent_ports(self.IP)
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address",
            self.IP,
            "--temp-dir",
            str(temp_dir),
            "--dashboard-agent-listen-port",
            str(ports["dashboard_agent_listen_port"]),
            "--dashboard-agent-grpc-port",
            str(ports["metrics_agent_port"]),
            "--metrics-export-port",
            str(ports["metrics_export_port"]),
            "--runtime-env-agent-port",
            str(ports["runtime_env_agent_port"]),
            *args,
        ]
        self.procs.append(
            subprocess.Popen(
                cmd, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def stop(self, grace_s: float = 3) -> None:
        """SIGTERM to each node's process group, SIGKILL to what is left after `grace_s`
        (`ray start --block` does not stop promptly on SIGTERM)."""
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # the group: raylet, workers, dashboard, GCS
            p.wait()
        shutil.rmtree(self.env["RAY_TMPDIR"], ignore_errors=True)

    def __enter__(self) -> RayStart:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"nothing listens at {host}:{port}: {log.read_text()[-2000:]}"
            time.sleep(0.5)


def processes_of(env: dict[str, str]) -> list[int]:
    """Pids of live processes whose environment holds this cluster's RAY_TMPDIR (every one we started)."""
    marker = f"RAY_TMPDIR={env['RAY_TMPDIR']}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "environ").read_bytes().split(b"\0"):
                    found.append(int(p.name))
            except OSError:  # gone, or not ours to read
                pass
    return found
