"""End-to-end sweeps on a real local Ray with tiny data: the three phases, failure, refusal, kill and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from aal_sweep.config import load_config
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.errors import AalError
from aal_sweep.orchestration.trials import plan_adversarial, plan_initial
from aal_sweep.store import Store

from conftest import Hold, write_config

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
    with pytest.raises(AalError, match=r"holds results of other training settings \(changed: train.epochs\).*--restart"):
        run_sweep(changed)
    assert sorted(p.name for p in (results / "trials").iterdir()) == before


def test_failing_trial_is_recorded_and_the_rest_completes(ray_local, tiny_root, tmp_path, monkeypatch, capsys):
    from conftest import run_sweep

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_root, phases=["single", "pair"]))
    monkeypatch.setenv("AAL_SWEEP_INJECT_FAULT", "pair-Disc-Square")
    assert run_sweep(cfg) == 1
    captured = capsys.readouterr()
    assert "1 trial(s) failed after their retries: pair-Disc-Square" in captured.err
    assert "2 attribute(s) have an incomplete row of the pair matrix" in captured.err
    assert f"Disc (missing pair-Disc-Square-s0-{cfg.training_hash()})" in captured.err
    df = read_trials(cfg.results)
    failed = df[df.status == "failed"]
    assert set(failed["trial_id"]) == {f"pair-Disc-Square-s0-{cfg.training_hash()}"}
    assert failed["error"].str.contains("fault injected").all()
    assert (failed["attempts"] == cfg.resources.max_failures + 1).all()
    assert (df.status == "ok").sum() == 4 + 2 * 5
    # the cause is gone: the same command retries the failed trial only
    monkeypatch.delenv("AAL_SWEEP_INJECT_FAULT")
    assert run_sweep(cfg) == 0
    assert set(read_trials(cfg.results)["status"]) == {"ok"}


# ---- kill and resume, with the CLI in a subprocess ---------------------------------------------------


@pytest.fixture(scope="module")
def kill_setup(ray_local, tmp_path_factory):
    """Data and an uninterrupted reference for the kill tests: trials long enough to be caught mid-epoch."""
    from conftest import run_sweep

    tmp = tmp_path_factory.mktemp("kill")
    root = make_synthetic(tmp / "data", n_attributes=4, n_images=1500, size=(16, 16), seed=2)
    train = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "lr_milestones": [3], "seed": 0}
    resources = {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 2}
    ref = load_config(write_config(tmp / "ref.yaml", root, train=train, resources=resources))
    assert run_sweep(ref) == 0

    def config(name: str):
        path = write_config(tmp / f"{name}.yaml", root, train=train, resources=resources)
        raw = yaml.safe_load(path.read_text())
        raw["results"] = str(tmp / name)
        path.write_text(yaml.safe_dump(raw))
        return path, load_config(path)

    return ref, config


def start(config_path: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aal_sweep.cli", "run", str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until(proc: subprocess.Popen, condition, timeout: float = 600) -> None:
    """Until `condition()`; the run must stay alive meanwhile (a held trial keeps it from ending)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.05)


def held_mid_trial(tmp: Path, config_path: Path, rd: Store, min_done: int, victim: str = "pair-Disc-Triangle"):
    """Start the CLI with `victim` held between its epochs 1 and 2 (orchestration/trainable.py's hook); return
    the run, the hold and what the held trial wrote, once `min_done` other trials are stored. The sweep
    cannot end meanwhile: the held trial is part of it."""
    hold = Hold(tmp / f"hold-{config_path.stem}", victim, epoch=2)
    proc = start(config_path, env=hold.env())
    held = hold.wait(proc)
    wait_until(proc, lambda: len(rd.done_ids()) >= min_done)
    return proc, hold, held


def check_no_redo(rd: Store, done_before: set[str]) -> None:
    for trial in rd.done_ids():
        events = rd.journal(trial)
        starts = [i for i, e in enumerate(events) if e["event"] == "start"]
        if trial in done_before:
            assert len(starts) == 1, f"{trial} finished before the kill but ran again"
        for i in starts[1:]:
            marked = [e["epoch"] for e in events[:i] if e["event"] == "epoch"]
            # resumed after the last epoch it finished (each is journaled once its checkpoint is stored):
            # at most the epoch in flight is trained again
            assert events[i]["from_epoch"] >= (max(marked) + 1 if marked else 0), events


def assert_same_results(ref_results: str, results: str) -> None:
    cols = ["trial_id", "attribute", "val_acc", "test_acc", "best_epoch"]
    a = read_trials(ref_results)[cols + ["val_acc_by_epoch"]].sort_values(cols[:2]).reset_index(drop=True)
    b = read_trials(results)[cols + ["val_acc_by_epoch"]].sort_values(cols[:2]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert a["val_acc_by_epoch"].map(list).tolist() == b["val_acc_by_epoch"].map(list).tolist()


def resume_and_compare(path: Path, cfg, ref, done_before: set[str]) -> subprocess.CompletedProcess:
    """Rerun the same command to the end; the result must be whole, with nothing redone, equal to `ref`."""
    out = subprocess.run([sys.executable, "-m", "aal_sweep.cli", "run", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    check_complete(cfg, Path(cfg.results))
    check_no_redo(Store(cfg.results), done_before)
    assert_same_results(ref.results, cfg.results)
    return out


def test_kill_9_driver_then_resume(kill_setup, tmp_path):
    ref, config = kill_setup
    path, cfg = config("driver")
    rd = Store(cfg.results)
    proc, _, held = held_mid_trial(tmp_path, path, rd, min_done=3)
    done_before = rd.done_ids()
    assert held["trial"] not in done_before
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray it started, at once
    proc.wait()
    out = resume_and_compare(path, cfg, ref, done_before)
    assert "interrupted trial(s) continue from their last epoch checkpoint" in out.stdout


def test_kill_9_worker_is_retried_from_its_checkpoint(kill_setup, tmp_path):
    ref, config = kill_setup
    path, cfg = config("worker")
    rd = Store(cfg.results)
    proc, hold, victim = held_mid_trial(tmp_path, path, rd, min_done=2)
    os.kill(victim["pid"], signal.SIGKILL)  # the worker alone, held between two epochs
    hold.release()  # its retry goes on past the hold
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    starts = [e for e in rd.journal(victim["trial"]) if e["event"] == "start"]
    assert len(starts) == 2 and starts[-1]["from_epoch"] == 2  # continued after its last epoch, not started over
    check_complete(cfg, Path(cfg.results))
    check_no_redo(rd, set())
    assert_same_results(ref.results, cfg.results)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(kill_setup, tmp_path):
    ref, config = kill_setup
    path, cfg = config("sigint")
    rd = Store(cfg.results)
    proc, _, _ = held_mid_trial(tmp_path, path, rd, min_done=2)
    done_before = rd.done_ids()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Run the same command to resume" in err
    resume_and_compare(path, cfg, ref, done_before)


@pytest.mark.parametrize("address,message", [
    ("127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
    ("ray://127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
    ("headnode", "expected auto, ray://HOST:PORT or HOST:PORT"),
])
def test_unreachable_cluster_fails_fast(address, message):
    from aal_sweep.orchestration.ray_connect import check_reachable

    t0 = time.monotonic()
    with pytest.raises(AalError, match=message):
        check_reachable(address, timeout_s=2)
    assert time.monotonic() - t0 < 10
