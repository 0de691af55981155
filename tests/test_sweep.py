"""End-to-end sweeps on a real local Ray with tiny data: the three phases, failure, refusal, kill and resume."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import Hold, write_config
from helpers import assert_same_results, check_no_redo, cli, kill_group, start, wait_until

from aal_sweep.config import load_config
from aal_sweep.errors import AalError
from aal_sweep.orchestration.trials import plan_adversarial, plan_initial
from aal_sweep.store import Store

pytestmark = pytest.mark.slow
ATTRS = ("Disc", "Square", "Triangle", "Cross")


def read_trials(results) -> pd.DataFrame:
    return Store(results).trials()


def expected_rows(cfg, results: Path) -> int:
    partners = pd.read_parquet(results / "partners.parquet")
    return 4 + 2 * 6 + len(plan_adversarial(cfg, partners))


def check_complete(cfg, results: Path) -> pd.DataFrame:
    df = read_trials(results)
    assert set(df["status"]) == {"ok"}
    planned = plan_initial(cfg, ATTRS) + plan_adversarial(cfg, pd.read_parquet(results / "partners.parquet"))
    assert set(df["trial_id"]) == {t.trial_id for t in planned}
    assert len(df) == expected_rows(cfg, results)  # one row per (trial, head): nothing lost
    return df


@pytest.fixture(scope="module")
def reference(tiny_sweep):
    """One uninterrupted sweep, in process, on the shared local Ray (conftest's, shared by the suite)."""
    return tiny_sweep


def test_full_sweep(reference, capsys):
    from conftest import run_sweep

    cfg, results = reference
    df = check_complete(cfg, results)
    partners = pd.read_parquet(results / "partners.parquet").set_index("attribute")
    singles = df[df.kind == "single"].set_index("attribute")["val_acc"]
    for a, row in partners.iterrows():
        pairs = df[(df.kind == "pair") & (df.attribute == a)].set_index("partner")["val_acc"]
        if pd.isna(row["partner"]):
            assert (pairs >= singles[a]).all()
        else:
            assert pairs[row["partner"]] == pairs.min() < singles[a]
    adv = df[df.kind == "adversarial"]
    assert set(adv["lambda"]) <= {0.1, 0.5} and adv["partner"].notna().all()
    assert (df["attempts"] == 1).all() and df["val_acc_by_epoch"].map(len).eq(2).all()
    # run again: nothing to do, nothing re-run
    capsys.readouterr()
    assert run_sweep(cfg) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert all(Store(results).attempts(t) == 1 for t in df["trial_id"])


def test_changed_training_settings_are_refused(reference):
    from conftest import run_sweep

    cfg, results = reference
    before = sorted(p.name for p in (results / "trials").iterdir())
    changed = cfg.__class__(**{**cfg.__dict__, "train": cfg.train.__class__(**{**cfg.train.__dict__, "epochs": 3})})
    with pytest.raises(
        AalError, match=r"holds results of other training settings \(changed: train.epochs\).*--restart"
    ):
        run_sweep(changed)
    assert sorted(p.name for p in (results / "trials").iterdir()) == before


def test_failing_trial_is_recorded_and_the_rest_completes(ray_local, tiny_root, tmp_path, monkeypatch):
    """The real CLI (its stderr whole): one line for the failed trial, Tune's tracebacks only at -v."""
    from conftest import run_sweep

    config = write_config(tmp_path / "c.yaml", tiny_root, phases=["single", "pair"])
    cfg = load_config(config)
    trial = f"pair-Disc-Square-s0-{cfg.training_hash()}"
    fault = {"AAL_SWEEP_INJECT_FAULT": "pair-Disc-Square"}
    out = cli("run", str(config), env=fault)
    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and "Trials did not complete" not in out.stderr, out.stderr[-3000:]
    error_file = next(Path(cfg.results, "tune").glob("sweep-1/pair_*/error.txt"))
    assert lines[0] == (
        f"aal-sweep: {trial} failed ({cfg.resources.max_failures + 1} attempt(s)): RuntimeError: fault injected "
        f"by AAL_SWEEP_INJECT_FAULT='pair-Disc-Square'; its traceback: {error_file}"
    ), out.stderr
    assert error_file.read_text().count("RuntimeError: fault injected") == cfg.resources.max_failures + 1
    assert lines[1].startswith(f"aal-sweep: 1 trial(s) failed after their retries: {trial}")
    assert lines[2].startswith("aal-sweep: 2 attribute(s) have an incomplete row of the pair matrix")
    assert f"Disc (missing {trial})" in lines[2] and len(lines) == 3, out.stderr
    assert "Last result" not in out.stdout  # only the CLI prints: Tune's per-trial lines at -vv
    df = read_trials(cfg.results)
    failed = df[df.status == "failed"]
    assert set(failed["trial_id"]) == {trial}
    assert failed["error"].str.contains("RuntimeError: fault injected").all()
    assert (failed["attempts"] == cfg.resources.max_failures + 1).all()
    assert (df.status == "ok").sum() == 4 + 2 * 5
    # -v: Tune's own error lines too (in aal_sweep's format), with their tracebacks
    out = cli("run", str(config), "-v", env=fault)
    assert out.returncode == 1
    assert f"ERROR ray.tune.execution.tune_controller: Trial task failed for trial {trial}" in out.stderr
    assert "Traceback (most recent call last)" in out.stderr and "Trials did not complete" in out.stderr
    # the cause is gone: the same command retries the failed trial only
    assert run_sweep(cfg) == 0
    assert set(read_trials(cfg.results)["status"]) == {"ok"}


# ---- a worker killed (the driver killed, Ctrl-C: tests/test_resilience.py) ---------------------------------


def test_kill_9_worker_is_retried_from_its_checkpoint(kill_sweep, tmp_path):
    """One pair trial's worker dies between two epochs (held there, AAL_SWEEP_HOLD): Tune retries it, and
    it continues after its checkpointed epochs; nothing else is redone, the results equal the reference's.
    Meanwhile the third attribute's row completes, is decided into partners.parquet, and its adversarial
    trial starts while the held pair still trains: no barrier between kinds of trial."""
    config = kill_sweep.config("worker")
    store = Store(yaml.safe_load(config.read_text())["results"])
    reference = pd.read_parquet(kill_sweep.ref / "partners.parquet").set_index("attribute")["partner"]
    free = next(a for a, p in reference.items() if isinstance(p, str))  # a row with a partner ...
    held_pair = [a for a in reference.index if a != free]  # ... which the held pair is not in
    hold = Hold(tmp_path / "hold", f"pair-{held_pair[0]}-{held_pair[1]}-", epoch=2)
    proc = start("run", str(config), env=hold.env())
    victim = hold.wait(proc)

    def adversarial_started():
        return any(
            t.startswith(f"adv-grl-{free}-vs-") and any(e["event"] == "start" for e in store.journal(t))
            for t in store.journaled()
        )

    def partner_written():
        try:
            partners = pd.read_parquet(store.location.path("partners.parquet")).set_index("attribute")
        except (OSError, ValueError):  # being replaced as we read it
            return False
        return partners.loc[free, "partner"] == reference[free]

    try:
        wait_until(proc, adversarial_started)  # released by its row alone, while the held pair is unfinished
        # partners.parquet follows within the driver's time budget for it (driver.PARTNERS_SHARE): soon after
        # the decision, not at once (seen: read under load just before its rewrite)
        wait_until(proc, partner_written)
        assert victim["trial"] not in store.done_ids()
    except BaseException:
        kill_group(proc)  # a failed look stops what this test started
        raise
    os.kill(victim["pid"], signal.SIGKILL)  # the worker alone
    hold.release()  # its retry goes on past the hold
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    starts = [e for e in store.journal(victim["trial"]) if e["event"] == "start"]
    assert len(starts) == 2 and starts[-1]["from_epoch"] == 2  # continued after its last epoch, not started over
    check_no_redo(store, set())
    assert_same_results(kill_sweep.ref, store.location.root)


@pytest.mark.parametrize(
    "address,message",
    [
        ("127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
        ("headnode", "expected auto, ray://HOST:PORT or HOST:PORT"),
    ],
)
def test_unreachable_cluster_fails_fast(address, message):
    from aal_sweep.orchestration.ray_connect import check_reachable

    t0 = time.monotonic()
    with pytest.raises(AalError, match=message):
        check_reachable(address, timeout_s=2)
    assert time.monotonic() - t0 < 10
