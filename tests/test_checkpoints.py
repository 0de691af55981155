"""A trial's own epoch checkpoints (aal_sweep.orchestration.checkpoints): two kept, the newest that loads wins."""

from __future__ import annotations

import torch

from aal_sweep.orchestration.checkpoints import KEEP, TrialCheckpoints, clear_done
from aal_sweep.store.location import Location


def state(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "model": {"w": torch.full((3,), float(epoch))},
        "history": {"val_acc": [[0.5] * (epoch + 1)]},
    }


def test_keeps_the_newest_two_and_resumes_from_the_newest(tmp_path):
    ckpts = TrialCheckpoints(Location(tmp_path), "single-A-s0-h")
    assert ckpts.load_newest().state is None and ckpts.load_newest().from_epoch == 0
    for e in range(4):
        ckpts.save(e, state(e))
    assert KEEP == 2 and ckpts.epochs() == [2, 3]
    resume = ckpts.load_newest()
    assert resume.epoch == 3 and resume.from_epoch == 4 and resume.skipped == []
    assert torch.equal(resume.state["model"]["w"], torch.full((3,), 3.0))
    assert not list((tmp_path / "tune" / "checkpoints" / "single-A-s0-h").glob(".*"))  # no temporary file left


def test_an_unreadable_newest_checkpoint_falls_back_to_the_older_one(tmp_path):
    ckpts = TrialCheckpoints(Location(tmp_path), "t")
    for e in range(2):
        ckpts.save(e, state(e))
    newest = tmp_path / "tune" / "checkpoints" / "t" / "epoch-00001.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # torn by something outside our atomic writes
    resume = ckpts.load_newest()
    assert resume.epoch == 0 and resume.from_epoch == 1
    assert len(resume.skipped) == 1 and resume.skipped[0].startswith("epoch-00001.pt: ")


def test_a_file_holding_another_epoch_is_not_trusted(tmp_path):
    ckpts = TrialCheckpoints(Location(tmp_path), "t")
    ckpts.save(0, state(0))
    (tmp_path / "tune" / "checkpoints" / "t" / "epoch-00005.pt").write_bytes(
        (tmp_path / "tune" / "checkpoints" / "t" / "epoch-00000.pt").read_bytes()
    )
    resume = ckpts.load_newest()
    assert resume.epoch == 0 and resume.skipped == ["epoch-00005.pt: ValueError: holds epoch 0"]


def test_nothing_loadable_means_from_scratch(tmp_path):
    ckpts = TrialCheckpoints(Location(tmp_path), "t")
    ckpts.save(0, state(0))
    (tmp_path / "tune" / "checkpoints" / "t" / "epoch-00000.pt").write_bytes(b"")
    resume = ckpts.load_newest()
    assert resume.state is None and resume.from_epoch == 0 and len(resume.skipped) == 1


def test_stored_trials_lose_their_checkpoints(tmp_path):
    loc = Location(tmp_path)
    for t in ("done", "running"):
        TrialCheckpoints(loc, t).save(0, state(0))
    assert clear_done(loc, {"done", "other"}) == 1
    assert TrialCheckpoints(loc, "done").epochs() == [] and TrialCheckpoints(loc, "running").epochs() == [0]


def test_a_checkpoint_ahead_of_the_journal_is_journaled_before_the_restart(tmp_path):
    """kill -9 between an epoch's checkpoint and its journal line: the restart resumes after the checkpoint
    and writes the missing `epoch` line first, so the journal never shows that epoch as lost."""
    from aal_sweep.orchestration.trainable import _check_resume
    from aal_sweep.store import Store

    store = Store(tmp_path)
    ckpts = TrialCheckpoints(store.location, "t")
    store.mark("t", "start", from_epoch=0)
    for e in range(2):
        store.mark("t", "epoch_start", epoch=e)
        ckpts.save(e, state(e))
        if e == 0:
            store.mark("t", "epoch", epoch=e)  # epoch 1's line never written: the kill came first
    resume = ckpts.load_newest()
    assert resume.from_epoch == 2
    assert _check_resume(store, "t", resume) is None  # nothing missing: no note
    events = [(e["event"], e.get("epoch"), e.get("recovered")) for e in store.journal("t")]
    assert events[-1] == ("epoch", 1, True) and ("checkpoint_missing", None, None) not in events
    assert _check_resume(store, "t", ckpts.load_newest()) is None
    assert sum(1 for e in store.journal("t") if e["event"] == "epoch") == 2  # written once, not per attempt
