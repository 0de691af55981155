"""One helper per setup the end-to-end tests repeat: the CLI in a subprocess, waiting for a moment, killing
exactly what a test started, comparing two results folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

from aal_sweep.store import Store

BIN = Path(sys.executable).parent  # aal-sweep, ray of this virtual environment


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`aal-sweep ARGS` in a subprocess, to its end; `env` adds to (and overrides) this process's."""
    return subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`aal-sweep ARGS` started in a session of its own (as a terminal starts it): kill_group stops the
    driver and the embedded Ray it started, and nothing else."""
    return subprocess.Popen(
        [sys.executable, "-m", "aal_sweep.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def start_run(config: Path, env: dict | None = None) -> subprocess.Popen:
    """`aal-sweep run CONFIG`, started as `start` does."""
    return start("run", str(config), env=env)


def results_of(config: Path) -> Path:
    """The results folder a config names."""
    import yaml

    return Path(yaml.safe_load(config.read_text())["results"])


def run_to_end(config: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`aal-sweep run CONFIG` in a subprocess, which must succeed."""
    out = cli("run", str(config), *args, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[str, str]:
    """`sig` to the process group `start` made (kill -9 of a whole terminal session); its output."""
    os.killpg(proc.pid, sig)
    return proc.communicate()


def wait_until(proc: subprocess.Popen, condition, timeout: float = 600, poll_s: float = 0.05):
    """Poll `condition()` until it returns something truthy, which is returned; the run must stay alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"the run ended (rc {proc.returncode}) before the moment came:\n{out[-1500:]}\n{err[-3000:]}"
            )
        found = condition()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError("the moment never came")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_no_redo(store: Store, done_before: set[str]) -> None:
    """No trial stored before an interruption ran again, and every resumed trial continued after the last
    epoch it finished (each is journaled once its checkpoint is stored): at most the epoch in flight was lost."""
    for trial in store.done_ids():
        events = store.journal(trial)
        starts = [i for i, e in enumerate(events) if e["event"] == "start"]
        if trial in done_before:
            assert len(starts) == 1, f"{trial} finished before the interruption but ran again"
        for i in starts[1:]:
            marked = [e["epoch"] for e in events[:i] if e["event"] == "epoch"]
            assert events[i]["from_epoch"] >= (max(marked) + 1 if marked else 0), events


def assert_same_results(ref, results, kinds: tuple[str, ...] | None = None) -> None:
    """Same trials, same accuracies, same per-epoch curves as the uninterrupted run `ref` (of `kinds`:
    a run of fewer kinds compares with that part of the reference)."""
    cols = ["trial_id", "attribute", "status", "val_acc", "test_acc", "best_epoch", "epochs_run"]
    curves = ["val_acc_by_epoch", "val_loss_by_epoch", "test_acc_by_epoch"]

    def rows(where):
        t = Store(where).trials()
        t = t if kinds is None else t[t["kind"].isin(kinds)]
        return t.sort_values(["trial_id", "attribute"]).reset_index(drop=True)

    a, b = rows(ref), rows(results)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    for c in curves:
        assert a[c].map(list).tolist() == b[c].map(list).tolist(), c


def family(pid: int) -> dict[int, float]:
    """The process's descendants: pid -> start time (a reused pid never matches)."""
    try:
        out = {}
        for p in psutil.Process(pid).children(recursive=True):
            try:
                out[p.pid] = p.create_time()
            except psutil.Error:
                continue
        return out
    except psutil.Error:
        return {}


def still_running(seen: dict[int, float]) -> list[str]:
    """Which of `seen` (pid -> start time) still run: a reused pid does not count, nor a zombie (it runs
    nothing; its parent may be dead and not reap it)."""
    out = []
    for pid, t in seen.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - t) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {p.name()}")
        except psutil.Error:
            continue
    return out


def wait_gone(seen: dict[int, float], timeout: float = 60) -> None:
    """Until none of `seen` (pid -> start time) still runs."""
    deadline = time.monotonic() + timeout
    while still_running(seen):
        assert time.monotonic() < deadline, f"still running after {timeout} s: {still_running(seen)}"
        time.sleep(0.05)
