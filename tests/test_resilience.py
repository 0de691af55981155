"""The driver killed at any moment: missing checkpoints, random kill -9s, Ctrl-C, the embedded Ray's processes.

Every run here is the real CLI in its own session (start_new_session), as a user's terminal would start it,
on a real local Ray that the CLI itself starts; kills hit the whole process group, as a dying terminal or a
scheduler does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import Hold
from helpers import (
    assert_same_results,
    check_no_redo,
    cli,
    family,
    kill_group,
    results_of,
    run_to_end,
    start,
    start_run,
    still_running,
    wait_gone,
    wait_until,
)

from aal_sweep.store import Store

pytestmark = pytest.mark.slow


def finished_epochs(store: Store, trial: str) -> list[int]:
    return [e["epoch"] for e in store.journal(trial) if e["event"] == "epoch"]


# ---- §1: a missing checkpoint is never fatal ------------------------------------------------------


def newest_checkpoint(results: Path, trial: str) -> Path | None:
    """The trial's newest checkpoint: the trial's own files, or (before) Tune's checkpoint folders."""
    own = sorted((results / "tune" / "checkpoints" / trial).glob("epoch-*.pt"))
    if own:
        return own[-1]
    for params in results.glob("tune/*/*/params.json"):
        if json.loads(params.read_text()).get("trial", {}).get("trial_id") == trial or trial in params.read_text():
            tune_ckpts = sorted(params.parent.glob("checkpoint_*"))
            if tune_ckpts:
                return tune_ckpts[-1]
    return None


def test_a_missing_checkpoint_costs_an_epoch_not_the_trial(kill_sweep):
    """Kill the driver, delete the newest checkpoint of a trial in flight: the rerun continues that trial
    from the newest checkpoint there is, says so in its journal, and ends equal to an uninterrupted run."""
    ks = kill_sweep
    config = ks.config("missing")
    results = results_of(config)
    store = Store(results)
    hold = Hold(ks.tmp / "hold-missing", "pair-Disc-Square", epoch=2)  # two epochs checkpointed, three to go
    proc = start_run(config, env=hold.env())
    held = hold.wait(proc)
    victim = held["trial"]
    trial_nice = psutil.Process(held["pid"]).nice()
    kill_group(proc)
    # the embedded Ray's trials run at the driver's priority, not at Ray's nice 15 (ray_connect.py)
    assert trial_nice == psutil.Process().nice()
    assert finished_epochs(store, victim) == [0, 1] and not store.is_done(victim)
    newest = newest_checkpoint(results, victim)
    shutil.rmtree(newest) if newest.is_dir() else newest.unlink()
    out = run_to_end(config)
    # the killed driver's lease is taken over, said once, in aal_sweep's format (not again in Ray's)
    assert out.stderr.count("taking over the results folder") == 1, out.stderr[-3000:]
    assert "WARNING aal_sweep.store: taking over the results folder" in out.stderr
    assert_same_results(ks.ref, results)
    events = store.journal(victim)
    fallback = [e for e in events if e["event"] == "checkpoint_missing"]
    assert fallback, events
    starts = [e for e in events if e["event"] == "start"]
    assert starts[-1]["from_epoch"] == fallback[-1]["resumed_from_epoch"] + 1 <= fallback[-1]["missing_epoch"]
    assert f"{victim}: checkpoint of epoch {fallback[-1]['missing_epoch']} is missing" in out.stdout


# ---- §5: Ctrl-C at any moment, and what a killed driver leaves running -------------------------------


def watch_until(proc: subprocess.Popen, seen: dict[int, float], what, timeout: float = 240):
    """wait_for, recording the run's descendants meanwhile."""

    def probe():
        seen.update(family(proc.pid))
        found = what()
        if found:  # the moment's own look at the processes may have seen ones this one did not yet
            seen.update(family(proc.pid))
        return found

    return wait_until(proc, probe, timeout=timeout, poll_s=0.05)


def moment_reached(moment: str, proc: subprocess.Popen, store: Store):
    if moment == "ray-starting":  # Ray's first processes are up, no trial has started
        names = set()
        for pid in family(proc.pid):
            try:
                names.add(psutil.Process(pid).name())
            except psutil.Error:
                continue
        return "gcs_server" in names and not store.journaled()
    events = [e for t in store.journaled() for e in store.journal(t)]
    if moment == "before-any-report":  # a trial started, none has finished an epoch
        return any(e["event"] == "start" for e in events) and not any(e["event"] == "epoch" for e in events)
    if moment == "between-trials":  # a trial has just been stored, its successor not started yet (or just)
        return bool(store.done_ids())
    return any(e["event"] == "epoch" for e in events)  # mid-trial


# (signal, how it is sent, moment): Ctrl-C as a terminal sends it, to the whole foreground process group;
# SIGTERM as `kill PID`, Kubernetes or `timeout --foreground` send it, to the driver
STOPS = [
    ("SIGINT", "ray-starting"),
    ("SIGINT", "before-any-report"),
    ("SIGINT", "mid-trial"),
    ("SIGTERM", "ray-starting"),
    ("SIGTERM", "mid-trial"),
    ("SIGTERM", "between-trials"),
]
EXIT = {"SIGINT": 130, "SIGTERM": 143}


@pytest.mark.parametrize(("sig", "moment"), STOPS)
def test_a_stop_signal_at_any_moment_exits_with_its_code_and_leaves_no_ray(kill_sweep, sig, moment):
    ks = kill_sweep
    config = ks.config(f"{sig}-{moment}", phases=["single", "pair"])
    store = Store(results_of(config))
    # trials stop before their first (or second) epoch: the moment comes, and stays, however fast the machine;
    # between trials: no hold, the signal follows the first trial stored (polled every 50 ms)
    hold = Hold(ks.tmp / f"hold-{sig}-{moment}", "", epoch=1 if moment == "mid-trial" else 0)
    held = moment not in ("ray-starting", "between-trials")
    proc = start_run(config, env=hold.env() if held else None)
    seen: dict[int, float] = {}
    watch_until(proc, seen, lambda: moment_reached(moment, proc, store), timeout=300)
    if sig == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, getattr(signal, sig))
    if (sig, moment) == ("SIGTERM", "mid-trial"):  # a second one while Tune stops the held trials: at once
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT[sig], (moment, out[-1500:], err[-3000:])
    assert "Run the same command to resume" in err and "Traceback" not in err + out, err[-3000:]
    # no native crash dump: Ray's core worker installs abseil's failure handler for SIGTERM (interrupt.py)
    assert "SIGTERM received" not in err and "PC: @" not in err, err[-3000:]
    # aal_sweep's line only: not Tune's "Resume experiment with: Tuner.restore(...)" (the resume is the same
    # command) nor its metrics warnings (they are shown with -v)
    assert "Tuner.restore" not in err and "Failed to fetch metrics" not in err, err[-3000:]
    ours = [ln for ln in err.strip().splitlines() if ln.startswith("aal-sweep: ")]
    assert len(ours) == 1 and ("interrupted (Ctrl-C)" if sig == "SIGINT" else f"interrupted ({sig})") in ours[0], err
    if moment != "ray-starting":
        assert err.strip().splitlines() == ours, err[-3000:]
    assert seen and not still_running(seen), still_running(seen)  # ray.shutdown() and our own check
    assert not (results_of(config) / "tune" / "embedded_ray.json").exists()
    if moment in ("mid-trial", "between-trials"):  # the same command resumes: nothing stored before runs again
        done_before = store.done_ids()
        run_to_end(config)
        check_no_redo(store, done_before)
        assert_same_results(ks.ref, results_of(config), kinds=("single", "pair"))


def test_kill_9_leaves_no_embedded_ray_behind(kill_sweep):
    """kill -9 of the driver's group: Ray's processes share it and die with it; workers (own groups) end
    once their raylet is gone. kill -9 of the driver alone leaves Ray's agents running: the next run on the
    results folder stops them, from the record the killed driver kept."""
    ks = kill_sweep
    config = ks.config("orphans", phases=["single", "pair"])
    store = Store(results_of(config))
    record = results_of(config) / "tune" / "embedded_ray.json"

    def mid_trial():  # and the record written is this driver's
        try:
            return moment_reached("mid-trial", proc, store) and json.loads(record.read_text())["driver"][0] == proc.pid
        except (FileNotFoundError, ValueError):
            return False

    hold = Hold(ks.tmp / "hold-orphans", "", epoch=1)  # every trial waits after its first epoch: mid-trial stays
    proc = start_run(config, env=hold.env())
    seen: dict[int, float] = {}
    watch_until(proc, seen, mid_trial)
    kill_group(proc)
    wait_gone(seen)  # workers notice their raylet is gone within seconds

    proc = start_run(config, env=hold.env())
    seen = {}
    watch_until(proc, seen, mid_trial)
    recorded = {pid for pid, _ in json.loads(record.read_text())["processes"]}
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone
    proc.communicate()
    time.sleep(5)
    left = still_running({pid: t for pid, t in seen.items() if pid in recorded})
    assert left, "nothing survived the driver: the case the next run handles did not happen"
    out = run_to_end(config)
    assert re.search(r"stopped \d+ process\(es\) of the embedded Ray a killed run left on this machine", out.stdout), (
        out.stdout[-2000:]
    )
    assert not still_running(seen), still_running(seen)
    assert not record.exists()


def test_sigterm_to_a_cluster_driver_leaves_the_cluster_running(kill_sweep):
    """`aal-sweep run --address` on a cluster (`ray start --head`): SIGTERM mid-trial ends the driver (143,
    one line) and only it: the cluster's Ray runs on, and the same command on it resumes to the
    uninterrupted results."""
    from ray_nodes import RayStart, isolated_env

    ks = kill_sweep
    config = ks.config("sigterm-cluster", phases=["single", "pair"])
    store = Store(results_of(config))
    hold = Hold(ks.tmp / "hold-sigterm-cluster", "", epoch=1)
    with RayStart(isolated_env()) as ray_start:
        ray_start.head(num_cpus=2)
        address = f"{ray_start.IP}:{ray_start.gcs_port}"
        proc = start("run", str(config), "--address", address, env=hold.env(ray_start.env))
        hold.wait(proc)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 143, (out[-1500:], err[-3000:])
        assert err.strip().splitlines() == [
            f"aal-sweep: interrupted (SIGTERM); finished trials are stored in {store.show('trials')}. "
            f"Run the same command to resume."
        ], err[-3000:]
        assert ray_start.procs[0].poll() is None and ray_start.node_count() == 1, "the cluster's Ray went too"
        done_before = store.done_ids()
        out = cli("run", str(config), "--address", address, env=ray_start.env)
        assert out.returncode == 0, out.stderr[-3000:]
    check_no_redo(store, done_before)
    assert_same_results(ks.ref, results_of(config), kinds=("single", "pair"))
