"""Connecting to Ray: an embedded Ray on 127.0.0.1, or a cluster at --address; what the cluster can host."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket

import ray
import ray._private.utils
import ray.job_config

from aal_sweep.errors import AalError
from aal_sweep.orchestration import interrupt
from aal_sweep.orchestration.events import Events
from aal_sweep.orchestration.ray_processes import children, stop_new_children
from aal_sweep.orchestration.state import parse_address

START_TRIES = 3
# Ray starts its workers at nice 15 (raylet's worker_niceness) so that they never starve its own daemons.
# On the embedded Ray the trials are the work the user asked for, as a plain PyTorch run would be: beside
# any other busy process at the user's priority, nice-15 trials got about 5% of a core (measured with two
# busy loops on this 2-core machine, docs/robustness.md), so they run at the driver's priority.
EMBEDDED_SYSTEM_CONFIG = {"worker_niceness": 0}


def connect(address: str | None, verbose: int, events: Events) -> bool:
    """Start an embedded Ray, or join a cluster. Returns True when this call started Ray (and must stop it)."""
    if ray.is_initialized():
        return False
    # Workers log at the CLI's --log-level too (e.g. each node's decode-cache build at INFO); -vv shows them.
    # Their logging config goes in the job's config, not ray.init's `logging_config`, which would also add a
    # handler of Ray's format to this process's root logger: every record twice (ours, then Ray's).
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    job = ray.job_config.JobConfig()
    job.set_py_logging_config(ray.LoggingConfig(encoding="TEXT", log_level=level))
    kwargs = dict(include_dashboard=False, log_to_driver=verbose >= 2, logging_level=logging.WARNING, job_config=job)
    ray_records_ours()
    if address is None:
        # address="local": always a new Ray of our own. Without an address ray.init joins RAY_ADDRESS or the
        # cluster named in <ray temp dir>/ray_current_cluster (the last `ray start` on this machine): a dead
        # one there makes it retry for minutes, a live one would run the sweep on it
        # (ray._private.services.canonicalize_bootstrap_address). The CLI puts Ray in its single-machine
        # mode first, so every port it opens is on 127.0.0.1. Token authentication stays on (Ray's default
        # since 2.59): the CLI sets RAY_AUTH_MODE=token before ray is imported (Ray reads it once, at import).
        if os.environ.get("RAY_ADDRESS"):
            events.info(
                f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} is ignored: this run starts its own Ray "
                f"(pass --address auto to use that cluster)"
            )
        return _start_local(kwargs, events)
    check_reachable(address)
    try:
        with _signals_stay_ours():
            ray.init(address=address, **kwargs)
    except ray.exceptions.AuthenticationError as e:
        raise AalError(
            f"--address {address}: the cluster refused our token ({str(e).splitlines()[0][:100]}); "
            f"set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token "
            f"(`ray get-auth-token` on the head)"
        ) from None
    except ConnectionError as e:
        raise AalError(
            f"--address {address}: cannot reach a Ray cluster ({str(e).splitlines()[0][:100]}); "
            f"check the address, or leave --address out for an embedded Ray"
        ) from None
    return True


def ray_records_ours() -> None:
    """Ray's records in this process (the `ray` logger: Tune, Ray's core) reach the CLI's handler, in its
    format, once: `import ray` gives that logger a handler of Ray's own and stops it propagating."""
    ray_log = logging.getLogger("ray")
    for handler in ray_log.handlers[:]:
        ray_log.removeHandler(handler)
    ray_log.propagate = True


def _start_local(kwargs: dict, events: Events, tries: int = START_TRIES) -> bool:
    """ray.init(address="local"), tried again when its raylet did not register within the 30 s Ray allows
    (a hard-coded limit in ray._private.node.Node; a busy machine can exceed it)."""
    for attempt in range(1, tries + 1):
        before = children()
        try:
            with _signals_stay_ours():
                ray.init(address="local", dashboard_host="127.0.0.1", _system_config=EMBEDDED_SYSTEM_CONFIG, **kwargs)
            return True
        except Exception as e:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(e):
                raise
            stop_new_children(before)  # what the failed start left running
        if attempt < tries:
            events.info(
                f"the embedded Ray did not start within Ray's 30 s (a busy machine?); trying again "
                f"({attempt + 1}/{tries})"
            )
    raise AalError(
        f"the embedded Ray did not start: its raylet did not register within Ray's 30 s, {tries} "
        f"times (is the machine overloaded?); run the same command again when it has spare CPU"
    )


@contextlib.contextmanager
def _signals_stay_ours():
    """ray.init, with the driver's signal handlers (interrupt.py) in place from start to end. Ray installs
    two SIGTERM handlers of its own as it starts (ray._private.utils.set_sigterm_handler): `sys.exit(15)`
    at once, then, for a Ray it starts, one that kills its processes and exits 1; either would end the
    driver half-way through ray.init. So they are not installed. Its core worker then installs abseil's
    failure signal handler for SIGTERM too (natively: a `*** SIGTERM received ... PC: @` dump, then the
    previous handler); installing ours again once ray.init returns takes SIGTERM back from it."""
    install = ray._private.utils.set_sigterm_handler
    ray._private.utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray._private.utils.set_sigterm_handler = install
        interrupt.install()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    where = parse_address(address)
    if where is None:
        return
    host, port = where
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise AalError(
            f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); check the "
            f"address (`ray status` on the head), or leave --address out for an embedded Ray"
        ) from None


def _alive_nodes() -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def check_fits(cpus: float, gpus: float) -> None:
    """Fail at once, in one line, when no node of the cluster can ever host a trial (Tune would wait forever)."""
    nodes = _alive_nodes()
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    most_cpu = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("GPU", 0)), default={})
    most_gpu = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    largest = f"{most_cpu.get('CPU', 0):g} CPU and {most_cpu.get('GPU', 0):g} GPU"
    if most_gpu is not most_cpu and most_gpu.get("GPU", 0) > most_cpu.get("GPU", 0):
        largest += f" (the node with most GPUs: {most_gpu.get('CPU', 0):g} CPU and {most_gpu.get('GPU', 0):g} GPU)"
    raise AalError(
        f"resources: a trial needs {cpus:g} CPU and {gpus:g} GPU on one node, but no node of the "
        f"cluster has that: the largest of its {len(nodes)} node(s) has {largest}; lower "
        f"resources.cpus_per_trial / resources.gpus_per_trial or add a larger node"
    )


def hosts_trials(cpus: float, gpus: float) -> bool:
    """Whether this process's node can host a trial of (cpus, gpus): its total resources, as Ray knows them."""
    here = ray.get_runtime_context().get_node_id()
    node = next((n["Resources"] for n in ray.nodes() if n.get("NodeID") == here and n.get("Alive")), {})
    return node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus


def slots(cpus: float, gpus: float) -> int:
    """How many trials of (cpus, gpus) the cluster's live nodes hold at once (at least 1)."""
    total = 0
    for r in _alive_nodes():
        by_cpu = math.floor(r.get("CPU", 0) / cpus + 1e-9)  # cpus_per_trial > 0: the config checks it
        by_gpu = math.floor(r.get("GPU", 0) / gpus + 1e-9) if gpus > 0 else by_cpu
        total += min(by_cpu, by_gpu)
    return max(1, total)
