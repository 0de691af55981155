"""kill -9 of the driver at random moments, eight times, then the same command to the end: the store equals
an uninterrupted run's, and the journal proves that no kill cost more than the epoch in flight.

A file of its own: the suite's longest test, so the two workers of `make test` start it first (conftest)."""

from __future__ import annotations

import random
import statistics
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import KILL_TRAIN, Hold
from helpers import assert_same_results, family, kill_group, results_of, run_to_end, start_run, wait_until

from aal_sweep.orchestration.checkpoints import TrialCheckpoints
from aal_sweep.store import Store

pytestmark = pytest.mark.slow


# ---- §1: random kill -9s of the driver --------------------------------------------------------------

STRESS_SEED = 8_2026
STRESS_KILLS = 8


def epochs_finished(store: Store) -> int:
    return sum(1 for t in store.journaled() for e in store.journal(t) if e["event"] == "epoch")


def median_epoch_seconds(store: Store) -> float:
    """How long an epoch of the uninterrupted run took (epoch_start -> epoch in its journal). Kill moments
    are drawn in epochs, not seconds, so a fast machine gets kills inside epochs as a slow one does, and
    never runs out of sweep before the last kill."""
    spans = []
    for t in store.journaled():
        begun = None
        for e in store.journal(t):
            if e["event"] == "epoch_start":
                begun = e["time"]
            elif e["event"] == "epoch" and begun is not None:
                spans.append(e["time"] - begun)
                begun = None
    return statistics.median(spans)


def epochs_lost(events: list[dict]) -> list[dict]:
    """Per restart of one trial: where it resumed and what the kill before it cost, from its journal alone.

    `finished`: the last epoch finished (checkpoint stored, then journaled) before the restart; `lost`: the
    epochs started but not finished since the attempt before."""
    out, finished, started = [], -1, set()
    for i, e in enumerate(events):
        if e["event"] == "epoch":
            finished = max(finished, e["epoch"])
            started.discard(e["epoch"])
        elif e["event"] == "epoch_start":
            started.add(e["epoch"])
        elif e["event"] == "start":
            if i:
                out.append({"from_epoch": e["from_epoch"], "finished": finished, "lost": sorted(started)})
            started = set()
    return out


def last_trial(results: Path) -> str:
    """The trial to hold through the stress: an adversarial one of the reference run (the last kind to be
    released), else its last pair."""
    ids = sorted(Store(results).trials(["trial_id"])["trial_id"].unique())
    return next((t for t in ids if t.startswith("adv-")), [t for t in ids if t.startswith("pair-")][-1])


def ray_started(proc: subprocess.Popen) -> bool:
    """The run's embedded Ray has its first process (gcs_server) up."""
    for pid in family(proc.pid):
        try:
            if psutil.Process(pid).name() == "gcs_server":
                return True
        except psutil.Error:
            continue
    return False


def test_random_kill_9s_cost_at_most_the_epoch_in_flight(kill_sweep, capsys):
    """8 kill -9s of the driver's process group at random moments (during Ray's start, between and inside
    epochs, as rows complete), each followed by the same command: the store ends equal to an uninterrupted
    run's, and the journal proves that no kill cost more than the epoch in flight of each running trial.

    Each moment is reached by an event (Ray's first process, one more epoch finished) plus a random part of
    an epoch; one trial of the sweep is held before its last epoch during the stress (AAL_SWEEP_HOLD), so
    the sweep cannot end before a kill, however fast the machine, and the last kill waits for that hold, so
    a trial is always killed between two epochs, however slow. The last run, without the hold, finishes."""
    ks = kill_sweep
    config = ks.config("stress")
    store = Store(results_of(config))
    rng = random.Random(STRESS_SEED)
    epoch_s = median_epoch_seconds(Store(ks.ref))
    hold = Hold(ks.tmp / "hold-stress", last_trial(ks.ref), epoch=KILL_TRAIN["epochs"] - 1)
    moments: list[str] = []
    while len(moments) < STRESS_KILLS:
        for held in hold.folder.glob("*.held"):
            held.unlink()  # what the run before held
        proc = start_run(config, env=hold.env())
        t0 = time.monotonic()
        jitter = rng.uniform(0.0, 1.0) * epoch_s
        try:
            early = rng.random() < 0.25  # drawn for every kill, so the first seven moments stay as they were
            if len(moments) == STRESS_KILLS - 1:  # the last kill: the held trial between two epochs, always
                wait_until(proc, hold.held, timeout=600, poll_s=0.1)
                moment = f"the hold + {jitter:.2f}s"
            elif early:  # while Ray starts, or before any trial reported
                wait_until(proc, lambda proc=proc: ray_started(proc), timeout=300, poll_s=0.02)
                moment = f"Ray's first process + {jitter:.2f}s"
            else:  # inside the sweep: once one more epoch finished (or only the held trial is left), + 0-1 epoch
                base = epochs_finished(store)
                wait_until(
                    proc, lambda base=base: epochs_finished(store) >= base + 1 or hold.held(), timeout=600, poll_s=0.1
                )
                moment = f"an epoch + {jitter:.2f}s"
        except AssertionError as e:
            raise AssertionError(f"kills so far (seed {STRESS_SEED}): {moments}") from e
        time.sleep(jitter)
        moment += f" ({time.monotonic() - t0:.1f}s after start)"
        assert proc.poll() is None, f"the run ended before kill {len(moments) + 1} (seed {STRESS_SEED}): {moments}"
        kill_group(proc)
        moments.append(moment)
    # Every unfinished trial with an epoch checkpoint continues from it, the held one among them (the last kill
    # came while it waited before its last epoch). Not every kill reaches it: on a busy machine the first
    # seven all came before it started (seen: a run whose last run resumed nothing).
    resumable = [t for t in store.journaled() if not store.is_done(t) and TrialCheckpoints(store.location, t).epochs()]
    assert last_trial(ks.ref) in resumable, (resumable, moments)
    out = run_to_end(config)
    assert f"[sweep] {len(resumable)} interrupted trial(s) continue from their last epoch checkpoint" in out.stdout, (
        out.stdout[-2000:]
    )
    context = f"seed {STRESS_SEED}, kills at: {moments}"
    assert_same_results(ks.ref, results_of(config))
    redone, lost_max, restarts = 0, 0, 0
    for trial in store.done_ids():
        for r in epochs_lost(store.journal(trial)):
            restarts += 1
            # resumed from the last epoch it finished: nothing finished is trained again ...
            assert r["from_epoch"] >= r["finished"] + 1, (trial, r, context)
            # ... and a kill cost at most the one epoch in flight, which the restart trains again
            assert len(r["lost"]) <= 1 and all(e >= r["from_epoch"] for e in r["lost"]), (trial, r, context)
            redone += len(r["lost"])
            lost_max = max(lost_max, len(r["lost"]))
    trials_restarted = sum(1 for t in store.done_ids() if epochs_lost(store.journal(t)))
    with capsys.disabled():
        print(
            f"\nkill-stress: {len(moments)} kills (seed {STRESS_SEED}); {trials_restarted} trial(s) restarted, "
            f"{restarts} restart(s), {redone} epoch(s) trained again, at most {lost_max} epoch lost per trial "
            f"per kill; kills at: {moments}"
        )
