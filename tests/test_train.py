"""The training core on real (tiny) data: it learns, every method runs, and resume is exact on the CPU."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from conftest import write_config

from aal_sweep.cli import main
from aal_sweep.data.cache import open_decoded
from aal_sweep.train import TrainSpec, fit


@pytest.fixture(scope="module")
def data(tiny_root, tmp_path_factory):
    return open_decoded(tiny_root, (16, 16), tmp_path_factory.mktemp("cache"))


def spec(**kw) -> TrainSpec:
    base = dict(
        kind="single",
        attributes=("Disc",),
        backbone="small_cnn",
        epochs=4,
        batch_size=32,
        lr=3e-3,
        lr_milestones=(3,),
        num_threads=1,
    )
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


# ---- the loop owns backward: each stage's gradients go where the recipe says -------------------------


def _task(method: str, lam: float = 0.5):
    from aal_sweep.backbones import build_backbone
    from aal_sweep.train.factory import make_task

    torch.manual_seed(0)
    backbone, width = build_backbone("small_cnn")
    return make_task("adversarial", backbone, width, 2, method, lam)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, 16, 16, generator=g), (torch.rand(16, 2, generator=g) < 0.5).float()


def _grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_grl_stage_reverses_the_partner_gradient_into_the_backbone():
    from aal_sweep.train.tasks import bce

    task, (x, y) = _task("grl", lam=0.5), _batch()
    (stage,) = list(task.stages(x, y))
    assert stage.groups == (0,)
    stage.loss.backward()
    got_backbone, got_b = _grads(task.backbone.parameters()), _grads(task.head_b.parameters())
    # by hand: the backbone gets grad(L_a) - lambda * grad(L_b); C_b gets +grad(L_b)
    task.zero_grad(set_to_none=True)
    f = task.backbone(x)
    bce(task.head_a(f)[:, 0], y[:, 0]).backward(retain_graph=True)
    grad_a = _grads(task.backbone.parameters())
    task.zero_grad(set_to_none=True)
    bce(task.head_b(f)[:, 0], y[:, 1]).backward()
    grad_b, head_b = _grads(task.backbone.parameters()), _grads(task.head_b.parameters())
    assert any(g.abs().sum() > 0 for g in grad_b)
    for got, a, b in zip(got_backbone, grad_a, grad_b):
        torch.testing.assert_close(got, a - 0.5 * b)
    for got, want in zip(got_b, head_b):
        torch.testing.assert_close(got, want)  # C_b itself still minimises L_b


def test_gan_one_backward_gives_each_group_its_own_gradient():
    from aal_sweep.train.tasks import bce

    task, (x, y) = _task("gan", lam=0.3), _batch()
    (stage,) = list(task.stages(x, y))
    assert stage.groups == (0, 1)
    stage.loss.backward()
    main, aux = task.param_groups()
    got_main, got_aux = _grads(main), _grads(aux)
    # the former two-step recipe: F, C_a on L_a + lambda * fooled; C_b on its own loss, detached features
    task.zero_grad(set_to_none=True)
    f = task.backbone(x)
    (bce(task.head_a(f)[:, 0], y[:, 0]) + 0.3 * bce(task.head_b(f)[:, 0], 1 - y[:, 1])).backward()
    want_main = _grads(main)
    task.zero_grad(set_to_none=True)
    bce(task.head_b(f.detach())[:, 0], y[:, 1]).backward()
    want_aux = _grads(aux)
    for got, want in zip(got_main + got_aux, want_main + want_aux):
        torch.testing.assert_close(got, want)


def test_wgan_critic_steps_first_then_the_features_see_the_updated_critic():
    task, (x, y) = _task("wgan", lam=0.3), _batch()
    main, critic = task.param_groups()
    stages = task.stages(x, y)
    first = next(stages)
    assert first.groups == (1,) and first.logged is None
    first.loss.backward()
    assert all(p.grad is None for p in main)  # the critic's loss reaches no backbone / C_a parameter
    assert any(p.grad.abs().sum() > 0 for p in critic)
    with torch.no_grad():  # stands for the critic's optimizer step
        for p in critic:
            p.add_(1.0)
    task.zero_grad(set_to_none=True)
    second = next(stages)
    assert second.groups == (0,) and next(stages, None) is None
    f = task.backbone(x).detach()
    torch.testing.assert_close(second.loss - second.logged, 0.3 * task._estimate(f, y[:, 1]))


# ---- per-image correctness of the best epoch -----------------------------------------------------------


def test_packbits_matches_numpy():
    from aal_sweep.train.evaluate import packbits

    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 8, 9, 100):
        bits = torch.rand(n, generator=g) < 0.5
        assert packbits(bits).numpy().tobytes() == np.packbits(bits.numpy()).tobytes()


def _unpack(blob: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8))[:n].astype(bool)


def test_correct_bits_are_the_best_epochs_accuracy(data):
    r = fit(spec(kind="pair", attributes=("Disc", "Square"), epochs=3), data)
    for h in r.heads:
        assert len(h.val_correct) == -(-r.n_val // 8) and len(h.test_correct) == -(-r.n_test // 8)
        assert _unpack(h.val_correct, r.n_val).mean() == h.val_acc  # exactly: same count, same n
        assert _unpack(h.test_correct, r.n_test).mean() == h.test_acc


def test_evaluate_keeps_split_order(data):
    from aal_sweep.backbones import build_backbone
    from aal_sweep.data.tensors import SplitTensors
    from aal_sweep.train.evaluate import evaluate
    from aal_sweep.train.factory import make_task

    torch.manual_seed(0)
    task = make_task("pair", *build_backbone("small_cnn"), 2).eval()
    cols = data.columns(("Disc", "Square"))
    split = SplitTensors(data.images["val"], data.labels["val"][:, cols], torch.device("cpu"))
    got = evaluate(task, split, 7, contextlib.nullcontext)  # batches that do not divide the split
    with torch.no_grad():
        x, y = next(split.batches(split.n))  # the whole split in one batch, in order
        want = (task(x) > 0) == (y > 0.5)
    for j in range(2):
        assert got.packed_correct(j).numpy().tobytes() == np.packbits(want[:, j].numpy()).tobytes()
        assert got.accuracy[j] == want[:, j].double().mean().item()


def test_resume_gives_identical_correct_bits(data, tmp_path):
    s = spec(kind="adversarial", attributes=("Disc", "Square"), method="wgan", lam=0.3, epochs=3)
    full = fit(s, data, on_epoch=lambda st, m: torch.save(st, tmp_path / f"{st['epoch']}.pt"))
    for stop in (0, 1):
        state = torch.load(tmp_path / f"{stop}.pt", weights_only=True)
        resumed = fit(s, data, state=state)
        assert resumed.heads[0].val_correct == full.heads[0].val_correct
        assert resumed.heads[0].test_correct == full.heads[0].test_correct
        assert resumed.heads[0].val_acc_by_epoch == full.heads[0].val_acc_by_epoch
    state = torch.load(tmp_path / "0.pt", weights_only=True)
    assert "cuda_rng" not in state  # only a CUDA training carries the CUDA generator's state


def test_to_dict_is_plain_json(data):
    import json

    r = fit(spec(epochs=1), data)
    d = json.loads(json.dumps(r.to_dict()))
    assert bytes.fromhex(d["heads"][0]["val_correct"]) == r.heads[0].val_correct
    assert d["history"]["compiled"] is False and d["history"]["first_step_seconds"] > 0


# ---- train.compile -------------------------------------------------------------------------------------


def test_compile_setting(tmp_path, tiny_root):
    from aal_sweep.config import load_config
    from aal_sweep.errors import ConfigError
    from aal_sweep.train.loop import use_compile

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_compile("auto", cuda) and not use_compile("auto", cpu)
    assert use_compile(True, cpu) and not use_compile(False, cuda)
    cfg = load_config(write_config(tmp_path / "a.yaml", tiny_root))
    assert cfg.train.compile == "auto" and TrainSpec.from_config(cfg, "single", ("Disc",)).compile == "auto"
    train = {"epochs": 2, "batch_size": 32, "compile": True}
    on = load_config(write_config(tmp_path / "b.yaml", tiny_root, train=train))
    assert TrainSpec.from_config(on, "single", ("Disc",)).compile is True
    assert (
        on.training_hash()
        == load_config(write_config(tmp_path / "c.yaml", tiny_root, train=train | {"compile": False})).training_hash()
    )
    with pytest.raises(ConfigError, match="train.compile: 'yes' is not one of auto, true, false"):
        load_config(write_config(tmp_path / "d.yaml", tiny_root, train=train | {"compile": "yes"}))


def test_compiled_training_matches_eager(data):
    # Pays an inductor compile (about a minute on 2 cold CPU cores, seconds once its cache is warm).
    eager, compiled = fit(spec(epochs=2), data), fit(spec(epochs=2, compile=True), data)
    assert compiled.history["compiled"] and not eager.history["compiled"]
    np.testing.assert_allclose(compiled.history["train_loss"], eager.history["train_loss"], rtol=1e-3)
    assert compiled.heads[0].val_acc_by_epoch[-1] == pytest.approx(eager.heads[0].val_acc_by_epoch[-1], abs=0.02)


@pytest.mark.parametrize("labels", [[1, 0, 0, 1, 1, 0, 1, 1], [1, 1, 1, 1, 0, 1, 1, 1], [0] * 8, [1] * 8])
def test_wgan_gradient_penalty_pairs_positives_with_negatives_without_a_sync(labels):
    task = _task("wgan")
    g = torch.Generator().manual_seed(2)
    f, alpha = torch.randn(8, 128, generator=g), torch.rand(8, 1, generator=g)
    yb = torch.tensor(labels, dtype=torch.float32)
    got = task._gradient_penalty(f, yb, alpha)
    # the definition, with boolean indexing: the k-th positive mixed with the k-th negative, k < n
    pos, neg = f[yb > 0.5], f[yb <= 0.5]
    n = min(len(pos), len(neg))
    if n == 0:
        assert got.item() == 0
        return
    mix = (alpha[:n] * pos[:n] + (1 - alpha[:n]) * neg[:n]).requires_grad_(True)
    (grad,) = torch.autograd.grad(task.critic(mix).sum(), mix)
    torch.testing.assert_close(got, ((grad.norm(dim=1) - 1) ** 2).mean())


def test_resident_rule():
    from aal_sweep.data.residency import GPU_RESIDENT_FRACTION, keeps_resident

    free = 100 * 2**30
    assert keeps_resident(int(GPU_RESIDENT_FRACTION * free) - 1, free)
    assert not keeps_resident(int(GPU_RESIDENT_FRACTION * free) + 1, free)
    assert keeps_resident(2 * free, free, "always") and not keeps_resident(1, free, "never")
    with pytest.raises(ValueError, match="is not one of auto, always, never"):
        keeps_resident(1, free, "sometimes")


def test_steps_per_epoch_cap_counts_the_images_trained(data):
    r = fit(spec(epochs=2, max_steps_per_epoch=2), data)
    assert r.history["train_images"] == [64, 64]  # 2 steps of 32
    assert r.train_images_per_second == pytest.approx(128 / r.train_seconds)
    assert r.history["resident"] == {"train": False, "val": False, "test": False}  # a CPU keeps the memmap
