"""The training core on real (tiny) data: it learns, every method runs, and resume is exact on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from aal_sweep.cli import main
from aal_sweep.data.cache import open_decoded
from aal_sweep.train import TrainSpec, fit

from conftest import write_config


@pytest.fixture(scope="module")
def data(tiny_root, tmp_path_factory):
    return open_decoded(tiny_root, (16, 16), tmp_path_factory.mktemp("cache"))


def spec(**kw) -> TrainSpec:
    base = dict(kind="single", attributes=("Disc",), backbone="small_cnn", epochs=4, batch_size=32, lr=3e-3,
                lr_milestones=(3,), num_threads=1)
    return TrainSpec(**(base | kw))


def majority(data, attribute: str) -> float:
    y = data.labels["val"][:, data.attributes.index(attribute)]
    return max(y.mean(), 1 - y.mean())


def test_single_beats_majority(data):
    r = fit(spec(), data)
    (head,) = r.heads
    assert head.val_acc > majority(data, "Disc") + 0.1
    assert head.val_acc == max(head.val_acc_by_epoch) and head.val_acc_by_epoch[head.best_epoch] == head.val_acc
    assert head.test_acc == head.test_acc_by_epoch[head.best_epoch]
    assert r.epochs_run == 4 and len(head.val_loss_by_epoch) == 4 and r.n_val == len(data.labels["val"])


def test_pair_and_multitask_report_every_head(data):
    r = fit(spec(kind="pair", attributes=("Disc", "Square")), data)
    assert [h.attribute for h in r.heads] == ["Disc", "Square"]
    assert all(h.val_acc > majority(data, h.attribute) for h in r.heads)
    r = fit(spec(kind="multitask", attributes=data.attributes, epochs=1), data)
    assert len(r.heads) == 4


@pytest.mark.parametrize("method", ["grl", "gan", "wgan"])
def test_adversarial_methods_learn_the_primary(data, method):
    r = fit(spec(kind="adversarial", attributes=("Disc", "Square"), method=method, lam=0.3), data)
    (head,) = r.heads  # C_b is thrown away: only the primary head is measured
    assert head.attribute == "Disc"
    assert head.val_acc > majority(data, "Disc") + 0.1


def test_resume_equals_uninterrupted(data):
    s = spec(kind="adversarial", attributes=("Disc", "Square"), method="grl", lam=0.5)
    full = fit(s, data)
    states = {}
    fit(s, data, on_epoch=lambda st, m: states.setdefault(st["epoch"], copy.deepcopy(st)))
    for stop in (0, 2):
        resumed = fit(s, data, state=states[stop])
        assert resumed.heads[0].val_acc_by_epoch == full.heads[0].val_acc_by_epoch
        assert resumed.heads[0].test_acc_by_epoch == full.heads[0].test_acc_by_epoch
        assert resumed.history["train_loss"] == full.history["train_loss"]
    assert fit(s, data, state=states[3]).epochs_run == 4


def test_resume_from_a_state_file(data, tmp_path):
    s = spec(epochs=3)
    full = fit(s, data)
    fit(s, data, on_epoch=lambda st, m: torch.save(st, tmp_path / f"{st['epoch']}.pt"))
    state = torch.load(tmp_path / "1.pt", weights_only=True)  # as a Tune checkpoint is read back
    assert fit(s, data, state=state).heads[0].val_acc_by_epoch == full.heads[0].val_acc_by_epoch


def test_seeded_and_deterministic(data):
    a, b = fit(spec(epochs=2), data), fit(spec(epochs=2), data)
    assert a.heads[0].val_acc_by_epoch == b.heads[0].val_acc_by_epoch
    c = fit(spec(epochs=2, seed=1), data)
    assert c.history["train_loss"] != a.history["train_loss"]


def test_spec_rejects_wrong_arity():
    with pytest.raises(ValueError, match="a pair training takes 2 attribute"):
        spec(kind="pair", attributes=("Disc",))


def test_train_cli(tmp_path, tiny_root, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_root)
    assert main(["train", str(cfg), "--kind", "pair", "--attributes", "Disc,Square"]) == 0
    out = capsys.readouterr().out
    assert "Disc: val_acc" in out and "Square: val_acc" in out
    assert main(["train", str(cfg), "--kind", "adversarial", "--attributes", "Disc,Square"]) == 2
    assert "--lambda is required" in capsys.readouterr().err
    assert main(["train", str(cfg), "--kind", "single", "--attributes", "Bald"]) == 2
    assert "unknown ['Bald']" in capsys.readouterr().err
