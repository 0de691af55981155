"""TAG's lookahead affinity: the measurement leaves the model (and so the training) untouched, and a duplicated
attribute, whose gradients agree with its original's, comes out as its original's closest partner."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from aal_sweep.analysis.screening import ESTIMATE_COLUMNS
from aal_sweep.data.cache import DecodedDataset, open_decoded
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.train import TrainSpec, fit
from aal_sweep.train.lookahead import AffinityRecorder, affinity_step, lookahead_affinity


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DecodedDataset:
    """Disc, Square, Xor (= Disc XOR Square) and SquareCopy (Square's labels again); 600 images of 16x16."""
    tmp = tmp_path_factory.mktemp("lookahead")
    root = make_synthetic(tmp / "data", n_attributes=2, n_images=600, size=(16, 16), seed=5, xor=True)
    d = open_decoded(root, (16, 16), tmp / "cache")
    k = d.attributes.index("Square")
    labels = {s: np.concatenate([v, v[:, [k]]], axis=1) for s, v in d.labels.items()}
    return DecodedDataset(d.attributes + ("SquareCopy",), d.images, labels, d.path)


def _spec(data: DecodedDataset, **kw) -> TrainSpec:
    base = dict(
        kind="multitask_all",
        attributes=data.attributes,
        backbone="small_cnn",
        pretrained=None,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        lr_milestones=(1,),
        device="cpu",
        seed=0,
        num_threads=1,
    )
    return TrainSpec(**(base | kw))


def test_affinity_step_restores_the_model_and_treats_identical_tasks_alike():
    from aal_sweep.backbones import build_backbone
    from aal_sweep.train.factory import make_task

    torch.manual_seed(0)
    backbone, width = build_backbone("small_cnn")
    task = make_task("multitask_all", backbone, width, 3).train()
    with torch.no_grad():  # head 2 is head 1 again, and so are its labels: the same loss, the same gradient
        task.heads.weight[2] = task.heads.weight[1]
        task.heads.bias[2] = task.heads.bias[1]
    x = torch.randn(16, 3, 16, 16)
    y = (torch.rand(16, 3) < 0.5).float()
    y[:, 2] = y[:, 1]
    before = copy.deepcopy(task.state_dict())  # parameters and batch-norm buffers
    z = affinity_step(task, x, y, lr=1e-2)
    after = task.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in task.parameters())
    assert z.shape == (3, 3) and torch.isfinite(z).all()
    assert torch.allclose(z[:, 2], z[:, 1], rtol=1e-5, atol=0) and torch.allclose(z[2], z[1], rtol=1e-5, atol=0)
    assert (torch.diagonal(z) > 0).all()  # a small step on a task's own loss lowers it


def test_lookahead_run_is_the_plain_run_and_finds_the_copy(data):
    spec = _spec(data)
    result = lookahead_affinity(spec, data, every=2)
    plain = fit(spec, data)
    # measuring changed nothing: every head's accuracy at every epoch is the plain training's
    assert [h.val_acc_by_epoch for h in result.fit.heads] == [h.val_acc_by_epoch for h in plain.heads]
    assert result.val_acc == {h.attribute: h.val_acc for h in plain.heads}

    est = result.estimates
    assert list(est.columns) == ESTIMATE_COLUMNS and len(est) == 4 * 3
    assert set(est["estimator"]) == {"lookahead"} and set(est["seed"]) == {0}
    assert np.isfinite(est["score"]).all() and est["cost"].sum() == pytest.approx(result.seconds)
    assert 0 < result.lookahead_seconds < result.seconds
    batches = math.ceil(len(data.images["train"]) / spec.batch_size)  # 420 images -> 14 steps per epoch
    assert result.steps == math.ceil(spec.epochs * batches / 2)

    z = result.affinity
    assert list(z.index) == list(z.columns) == list(data.attributes)
    for a, b in (("Square", "SquareCopy"), ("SquareCopy", "Square")):
        row = z.loc[a].drop(a)
        assert row.idxmax() == b and row[b] > 0  # the identical task helps most
        score = est[(est["attribute"] == a) & (est["partner"] == b)]["score"].item()
        assert score == pytest.approx(row[b])  # score = Z[a <- b]: positive helps, negative hurts


def test_bad_arguments():
    with pytest.raises(ValueError, match="every must be at least 1"):
        AffinityRecorder(every=0)
    spec = TrainSpec(kind="pair", attributes=("A", "B"))
    with pytest.raises(ValueError, match="kind multitask_all"):
        lookahead_affinity(spec, None)
