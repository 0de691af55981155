"""Table 1's other variants without Ray: their tasks (shapes, gradient reversal over several partners, the
frozen conv layers), one real training of each, their plan (ids, dependencies), their store rows and the
Table 1 view."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from s3_server import s3_server, s3_uri  # noqa: F401 (fixtures)
from torch import nn

from aal_sweep.analysis.partners import negative_partners
from aal_sweep.analysis.variants import COLUMNS, variants_table
from aal_sweep.backbones.builtin import SmallCNN
from aal_sweep.config import parse_config
from aal_sweep.errors import ConfigError
from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL, partner_of
from aal_sweep.orchestration.graph import DONE, FAILED, Decision, Graph
from aal_sweep.orchestration.trials import (
    Trial,
    multitask_all_of,
    plan_adversarial_multiple,
    plan_adversarial_shared,
    plan_initial,
    plan_multitask_all,
    trial_id,
)
from aal_sweep.report.tables import render_table, with_paper
from aal_sweep.store.rows import failed_rows
from aal_sweep.train.factory import make_task
from aal_sweep.train.loop import TrainSpec, _apply, fit
from aal_sweep.train.tasks import MultiHead
from aal_sweep.train.variants import MultipleAdversarial, SharedAdversarial, weights_bytes

ATTRS = ("Disc", "Square", "Triangle")


def _batch(n=8, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), (torch.rand(n, k, generator=g) > 0.5).float()


# ---- tasks ---------------------------------------------------------------------------------------


def test_multiple_adversarial_shapes_and_one_stage():
    torch.manual_seed(0)
    task = MultipleAdversarial(SmallCNN(), 128, n_partners=3, lam=0.3)
    x, y = _batch(k=4)
    assert task(x).shape == (8, 1) and task.n_eval == 1
    assert task.heads_b.out_features == 3  # one auxiliary classifier per partner
    stages = list(task.stages(x, y))
    assert len(stages) == 1 and stages[0].groups == (0,)
    (group,) = task.param_groups()
    assert {id(p) for p in group} == {id(p) for p in task.parameters()}


def test_multiple_adversarial_reverses_the_mean_partner_loss_into_the_backbone():
    """Eq. 10-11: C_b's get the gradient of (1/B) sum_j L_bj; F gets grad L_a - lambda grad (1/B) sum_j L_bj."""
    torch.manual_seed(0)
    lam = 0.5
    task = MultipleAdversarial(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 6)), 6, n_partners=3, lam=lam)
    x, y = _batch(k=4)
    (stage,) = task.stages(x, y)
    stage.loss.backward()
    got_f = [p.grad.clone() for p in task.backbone.parameters()]
    got_b = [p.grad.clone() for p in task.heads_b.parameters()]

    f = task.backbone(x)
    loss_a = nn.functional.binary_cross_entropy_with_logits(task.head_a(f)[:, 0], y[:, 0])
    per_partner = [nn.functional.binary_cross_entropy_with_logits(task.heads_b(f)[:, j], y[:, 1 + j]) for j in range(3)]
    loss_b = sum(per_partner) / 3
    grad_a = torch.autograd.grad(loss_a, list(task.backbone.parameters()), retain_graph=True)
    grad_b = torch.autograd.grad(loss_b, list(task.backbone.parameters()), retain_graph=True)
    want_heads_b = torch.autograd.grad(loss_b, list(task.heads_b.parameters()))
    for got, ga, gb in zip(got_f, grad_a, grad_b):
        torch.testing.assert_close(got, ga - lam * gb)
        assert not torch.allclose(got, ga + lam * gb)  # the sign matters: this would be plain multi-task
    for got, want in zip(got_b, want_heads_b):
        torch.testing.assert_close(got, want)


def test_multiple_adversarial_with_one_partner_is_pairwise_grl():
    """Eq. 10-11 with B = 1 are eq. 5-6: same initialisation, same loss, same gradients as the GRL task."""
    from aal_sweep.train.tasks import GRL

    torch.manual_seed(0)
    multi = MultipleAdversarial(SmallCNN(), 128, n_partners=1, lam=0.3)
    torch.manual_seed(0)
    pairwise = GRL(SmallCNN(), 128, lam=0.3)
    x, y = _batch(k=2)
    (a,), (b,) = multi.stages(x, y), pairwise.stages(x, y)
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    for p, q in zip(multi.parameters(), pairwise.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def _multitask_state(width=128, n=3):
    torch.manual_seed(1)
    mt = MultiHead(SmallCNN(), width, n)
    mt(torch.randn(4, 3, 16, 16))  # one forward in train mode: BN statistics differ from a fresh model's
    return mt.state_dict()


def test_shared_adversarial_trains_only_hidden_layers_and_heads():
    state = _multitask_state()
    torch.manual_seed(0)
    task = SharedAdversarial(SmallCNN(), 128, lam=0.5)
    task.load_backbone(state)
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    for k, v in before.items():  # the multitask_all model's conv layers, BN statistics included
        torch.testing.assert_close(v, state[f"backbone.{k}"])
    hidden_before = [p.clone() for p in task.hidden.parameters()]
    (group,) = task.param_groups()
    assert not any(p is q for p in group for q in task.backbone.parameters())
    opt = torch.optim.Adam(group, lr=0.1)
    task.train()
    assert not task.backbone.training  # frozen batch norm: eval mode whatever the task's mode
    x, y = _batch(k=2)
    for stage in task.stages(x, y):
        _apply(stage, [opt])
    for k, v in task.backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"frozen {k} changed"
    assert all(p.grad is None for p in task.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(hidden_before, task.hidden.parameters()))
    assert task(x).shape == (8, 1)


def test_shared_adversarial_reverses_the_partner_gradient_into_the_hidden_layers():
    torch.manual_seed(0)
    lam = 0.3
    task = SharedAdversarial(SmallCNN(), 128, lam=lam)
    x, y = _batch(k=2)
    (stage,) = task.stages(x, y)
    stage.loss.backward()
    got = [p.grad.clone() for p in task.hidden.parameters()]
    h = task.representation(x)
    loss_a = nn.functional.binary_cross_entropy_with_logits(task.head_a(h)[:, 0], y[:, 0])
    loss_b = nn.functional.binary_cross_entropy_with_logits(task.head_b(h)[:, 0], y[:, 1])
    ga = torch.autograd.grad(loss_a, list(task.hidden.parameters()), retain_graph=True)
    gb = torch.autograd.grad(loss_b, list(task.hidden.parameters()))
    for g, a, b in zip(got, ga, gb):
        torch.testing.assert_close(g, a - lam * b)


def test_shared_adversarial_refuses_weights_of_another_backbone(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(weights_bytes({"heads.weight": torch.zeros(3, 128)}))
    with pytest.raises(ValueError, match="no backbone"):
        make_task(ADVERSARIAL_SHARED, SmallCNN(), 128, 2, lam=0.1, init_weights=str(path))
    with pytest.raises(ValueError, match="needs the multitask_all"):
        make_task(ADVERSARIAL_SHARED, SmallCNN(), 128, 2, lam=0.1)


def test_make_task_dispatches_the_variants(tmp_path):
    assert make_task(MULTITASK_ALL, SmallCNN(), 128, 5).n_eval == 5
    assert isinstance(make_task(ADVERSARIAL_MULTIPLE, SmallCNN(), 128, 4, lam=0.1), MultipleAdversarial)
    path = tmp_path / "w.pt"
    path.write_bytes(weights_bytes(_multitask_state()))
    assert isinstance(
        make_task(ADVERSARIAL_SHARED, SmallCNN(), 128, 2, lam=0.1, init_weights=str(path)), SharedAdversarial
    )


# ---- one real training of each, without Ray ---------------------------------------------------------


def _spec(kind, attributes, lam=None, init_weights=None):
    return TrainSpec(
        kind=kind,
        attributes=attributes,
        lam=lam,
        backbone="small_cnn",
        epochs=1,
        batch_size=32,
        lr=3e-3,
        lr_milestones=(1,),
        device="cpu",
        num_threads=1,
        compile=False,
        init_weights=init_weights,
    )


def test_each_variant_trains_and_measures_its_heads(tiny_root, tmp_path):
    from aal_sweep.data.cache import open_decoded

    data = open_decoded(tiny_root, (16, 16), tmp_path / "cache")
    states = []
    mt = fit(_spec(MULTITASK_ALL, ATTRS), data, lambda state, m: states.append(weights_bytes(state["model"])))
    assert [h.attribute for h in mt.heads] == list(ATTRS)
    assert all(0.0 <= h.val_acc <= 1.0 for h in mt.heads)
    multi = fit(_spec(ADVERSARIAL_MULTIPLE, ATTRS, lam=0.1), data)
    assert [h.attribute for h in multi.heads] == ["Disc"]  # the partners' heads are thrown away
    path = tmp_path / "mt.pt"
    path.write_bytes(states[-1])
    shared = fit(_spec(ADVERSARIAL_SHARED, ATTRS[:2], lam=0.1, init_weights=str(path)), data)
    assert [h.attribute for h in shared.heads] == ["Disc"] and 0.0 <= shared.heads[0].val_acc <= 1.0


# ---- plan ----------------------------------------------------------------------------------------


def _cfg(phases, seeds=(0,)):
    return parse_config(
        {
            "name": "t",
            "results": "/tmp/r",
            "dataset": {"root": "/nonexistent"},
            "model": {"backbone": "small_cnn"},
            "train": {"seeds": list(seeds)},
            "adversarial": {"lambdas": [0.1, 0.5]},
            "phases": phases,
        },
        check_files=False,
    )


ALL = ["single", "pair", "adversarial", "multitask_all", "adversarial_multiple", "adversarial_shared"]


@pytest.mark.parametrize(
    "phases,message",
    [
        (["multitask_all", "adversarial_multiple"], "phases: adversarial_multiple needs single and pair"),
        (
            ["single", "pair", "adversarial_shared"],
            "phases: adversarial_shared needs multitask_all and single and pair",
        ),
        (["multitask_all", "adversarial_shared"], "add single, pair to phases or drop adversarial_shared"),
    ],
)
def test_phase_dependencies_are_checked(phases, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(phases)


def test_variants_are_not_in_the_default_phases():
    cfg = parse_config({"dataset": {"root": "/x"}}, check_files=False)
    assert cfg.phases == ("single", "pair", "adversarial")
    assert _cfg(ALL).phases == tuple(ALL) and _cfg(["multitask_all"]).phases == ("multitask_all",)


def _matrix():
    # rows measured, columns partner; diagonal single. Disc is lowered by Square and Triangle, Square by
    # Triangle only, Triangle by nobody.
    return pd.DataFrame(
        [[0.90, 0.88, 0.89], [0.95, 0.93, 0.92], [0.80, 0.81, 0.80]],
        index=pd.Index(list(ATTRS), name="attribute"),
        columns=list(ATTRS),
    )


def test_negative_partners_are_every_drop_of_a_complete_row():
    neg = negative_partners(_matrix())
    assert neg["partners"].tolist() == [("Square", "Triangle"), ("Triangle",), ()]
    assert neg["partner"].tolist() == ["Square,Triangle", "Triangle", None]
    partial = _matrix()
    partial.iloc[1, 0] = np.nan  # Square's row lacks a cell: undecided unless allow_partial
    assert negative_partners(partial)["partners"].tolist()[1] == ()
    assert negative_partners(partial, allow_partial=True)["partners"].tolist()[1] == ("Triangle",)


def test_variant_plans_and_ids_are_stable_and_readable():
    cfg = _cfg(ALL, seeds=(0, 1))
    h = cfg.training_hash()
    mt = plan_multitask_all(cfg, ATTRS)
    assert [t.trial_id for t in mt] == [f"mta-3attrs-{mt[0].trial_id.split('-')[2]}-s{s}-{h}" for s in (0, 1)]
    assert [t.attributes for t in mt] == [ATTRS, ATTRS]
    assert multitask_all_of(cfg, ATTRS, 1) == mt[1].trial_id
    assert trial_id(MULTITASK_ALL, ATTRS[::-1], 0, h) != mt[0].trial_id  # another head order, another model

    multi = plan_adversarial_multiple(cfg, negative_partners(_matrix()))
    assert len(multi) == 2 * 2 * 2  # seeds x attributes with a negative partner x lambdas
    disc = [t for t in multi if t.attributes[0] == "Disc"][0]
    assert disc.attributes == ("Disc", "Square", "Triangle") and disc.method == "grl"
    assert disc.trial_id.startswith("advm-grl-Disc-vs-2p") and disc.trial_id.endswith(f"-l0.1-s0-{h}")
    again = plan_adversarial_multiple(_cfg(ALL, seeds=(0, 1)), negative_partners(_matrix()))
    assert [t.trial_id for t in again] == [t.trial_id for t in multi]  # same config, same ids
    assert len({t.trial_id for t in multi}) == len(multi)
    assert Trial.from_dict(disc.to_dict()) == disc

    partners = pd.DataFrame({"attribute": list(ATTRS), "partner": ["Square", "Triangle", None]})
    shared = plan_adversarial_shared(cfg, partners)
    assert [t.trial_id for t in shared][:2] == [
        f"advs-grl-Disc-vs-Square-l0.1-s0-{h}",
        f"advs-grl-Disc-vs-Square-l0.5-s0-{h}",
    ]
    assert len(shared) == 2 * 2 * 2
    # in the graph, each adversarial_shared trial waits for its own seed's multitask_all weights
    graph = Graph.build(cfg, ATTRS, done={t.trial_id for t in plan_initial(cfg, ATTRS)} | {mt[0].trial_id})
    graph.decide({a: Decision(partner=p) for a, p in zip(ATTRS, ["Square", "Triangle", None])})
    assert {t.trial_id for t in graph.by_kind()["adversarial_shared"]} == {t.trial_id for t in shared}
    graph.complete(mt[1].trial_id, FAILED)
    assert list(graph.blocked()) == [mt[1].trial_id]
    assert {t.seed for t in graph.blocked()[mt[1].trial_id]} == {1}
    assert DONE in graph.outcome.values()


def test_store_rows_of_the_variants():
    cfg = _cfg(ALL)
    mt = plan_multitask_all(cfg, ATTRS)[0]
    rows = failed_rows(mt, cfg, "boom", 1)
    assert [r["attribute"] for r in rows] == list(ATTRS) and {r["partner"] for r in rows} == {None}
    multi = Trial("advm-x", ADVERSARIAL_MULTIPLE, ATTRS, 0.1, "grl")
    rows = failed_rows(multi, cfg, "boom", 1)
    assert [(r["attribute"], r["partner"]) for r in rows] == [("Disc", "Square,Triangle")]
    assert partner_of(ADVERSARIAL_SHARED, ("Disc", "Square"), "Disc") == "Square"


# ---- Table 1 -------------------------------------------------------------------------------------


def _rows():
    """A complete 3-attribute store as the matrix above says (test = val - 0.01), with every variant but
    adversarial_shared."""
    m = _matrix()
    rows = []
    for i, a in enumerate(ATTRS):
        rows.append(dict(kind="single", attribute=a, partner=None, **{"lambda": None}, val_acc=m.iat[i, i]))
        for j, b in enumerate(ATTRS):
            if i != j:
                rows.append(dict(kind="pair", attribute=a, partner=b, **{"lambda": None}, val_acc=m.iat[i, j]))
        rows.append(dict(kind=MULTITASK_ALL, attribute=a, partner=None, **{"lambda": None}, val_acc=0.5 + 0.1 * i))
    for lam, acc in ((0.1, 0.91), (0.5, 0.93)):  # Disc vs Square (its argmin partner); best lambda 0.5
        rows.append(dict(kind="adversarial", attribute="Disc", partner="Square", **{"lambda": lam}, val_acc=acc))
    rows.append(dict(kind="adversarial", attribute="Square", partner="Triangle", **{"lambda": 0.1}, val_acc=0.96))
    rows.append(
        dict(kind=ADVERSARIAL_MULTIPLE, attribute="Disc", partner="Square,Triangle", **{"lambda": 0.1}, val_acc=0.87)
    )
    rows.append(
        dict(kind=ADVERSARIAL_MULTIPLE, attribute="Square", partner="Triangle", **{"lambda": 0.1}, val_acc=0.94)
    )
    df = pd.DataFrame(rows)
    df["status"], df["seed"] = "ok", 0
    df["test_acc"] = df["val_acc"] - 0.01
    return df


def _partners():
    from aal_sweep.analysis.matrix import pair_matrix
    from aal_sweep.analysis.partners import derive_partners

    return derive_partners(pair_matrix(_rows(), list(ATTRS)))


def test_table_means_per_variant():
    t = variants_table(_rows(), ATTRS, _partners()).set_index("variant")
    assert list(t.reset_index().columns) == COLUMNS
    approx = pytest.approx
    assert t.loc["single", "val_mean"] == approx((0.90 + 0.93 + 0.80) / 3)
    # pair: the partner's cell; Triangle (no partner, complete row) counts with its single accuracy
    assert t.loc["pair", "val_mean"] == approx((0.88 + 0.92 + 0.80) / 3)
    assert t.loc["multitask_all", "val_mean"] == approx(0.6) and t.loc["multitask_all", "n_attributes"] == 3
    assert t.loc["adversarial", "val_mean"] == approx((0.93 + 0.96 + 0.80) / 3)
    assert t.loc["adversarial", "test_mean"] == approx((0.92 + 0.95 + 0.79) / 3)  # the lambda chosen on val
    assert t.loc["adversarial_multiple", "val_mean"] == approx((0.87 + 0.94 + 0.80) / 3)
    assert t.loc["adversarial_shared", "n_attributes"] == 0 and np.isnan(t.loc["adversarial_shared", "val_mean"])


def test_table_partial_store_counts_what_it_covers():
    rows = _rows()
    rows = rows[~((rows["kind"] == "adversarial") & (rows["attribute"] == "Square"))]
    t = variants_table(rows, ATTRS, _partners()).set_index("variant")
    assert t.loc["adversarial", "n_attributes"] == 2  # Disc, and Triangle with its single classifier
    assert t.loc["adversarial", "val_mean"] == pytest.approx((0.93 + 0.80) / 2)


def test_table_formats_show_not_run_never_zero():
    t = variants_table(_rows(), ATTRS, _partners())
    csv = render_table(t, "csv").splitlines()
    assert csv[0] == "variant,n_attributes,val_mean,test_mean"
    assert csv[-1] == "adversarial_shared,,,"
    assert csv[1].startswith("single,3,0.87666")
    records = json.loads(render_table(t, "json"))["variants"]
    shared = [r for r in records if r["variant"] == "adversarial_shared"][0]
    assert shared == {
        "variant": "adversarial_shared",
        "run": False,
        "n_attributes": None,
        "val_mean": None,
        "test_mean": None,
    }
    text = render_table(t, "table")
    assert "not run" in text and "adversarial (grl)" in text and "87.67" in text
    assert "| adversarial_shared | not run |" in render_table(t, "markdown")


def test_table_compare_with_the_paper():
    t = with_paper(variants_table(_rows(), ATTRS, _partners()), "paper-celeba", "gan")
    paper = t.set_index("variant")
    assert paper.loc["single", "paper_val_mean"] == pytest.approx(0.9233)
    assert paper.loc["single", "paper_test_mean"] == pytest.approx(0.9173)
    assert paper.loc["adversarial", "paper_val_mean"] == pytest.approx(0.9240)  # the GAN-loss row
    assert paper.loc["adversarial_multiple", "paper_val_mean"] == pytest.approx(0.9231)
    assert paper.loc["multitask_all", "paper_n_attributes"] == 40
    header = render_table(t, "csv").splitlines()[0]
    assert header == "variant,n_attributes,val_mean,test_mean,paper_n_attributes,paper_val_mean,paper_test_mean"
    duke = with_paper(variants_table(_rows(), ATTRS, _partners()), "paper-duke", "grl").set_index("variant")
    assert duke.loc["adversarial", "paper_val_mean"] == pytest.approx(0.9132)
    assert np.isnan(duke.loc["multitask_all", "paper_val_mean"])  # Table 6 has no such row


def test_table_imports_neither_torch_nor_ray():
    code = (
        "import sys; from aal_sweep.cli import build_parser, _cmd_table; import aal_sweep.analysis.variants, "
        "aal_sweep.report.tables, aal_sweep.orchestration.status;"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_partners_table_gains_a_column_per_variant_present():
    from aal_sweep.analysis.summary import partners_table
    from aal_sweep.report.formats import render_partners

    t = partners_table(_rows(), list(ATTRS), partners=_partners())
    assert list(t.columns[:7]) == [
        "attribute",
        "partner",
        "single",
        "multi",
        "adversarial",
        "multitask_all",
        "adversarial_multiple",
    ]
    assert t["multitask_all"].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.6])  # the mean row last
    assert t["adversarial_multiple"].tolist() == pytest.approx([0.87, 0.94, 0.80, (0.87 + 0.94 + 0.80) / 3])
    assert "multitask_all %" in render_partners(t, "table")
    plain = _rows()
    plain = plain[plain["kind"].isin(["single", "pair", "adversarial"])]
    assert "multitask_all" not in partners_table(plain, list(ATTRS), partners=_partners()).columns


def test_multitask_all_weights_round_trip_through_s3(s3_uri):
    """What adversarial_shared starts from lives in the results storage: on S3 as on a local folder."""
    from aal_sweep.errors import AalError
    from aal_sweep.orchestration.trainable import _save_weights, _start_weights
    from aal_sweep.store import Store

    cfg = _cfg(ALL)
    store = Store(s3_uri)
    store.write_config(cfg, ATTRS)
    trial = plan_adversarial_shared(cfg, pd.DataFrame({"attribute": ["Disc"], "partner": ["Square"]}))[0]
    with pytest.raises(AalError, match=r"artifacts/mta-3attrs-.*\.pt: missing, and advs-grl-Disc-vs-Square"):
        with _start_weights(store, trial, cfg):
            pass
    state = _multitask_state()
    _save_weights(store, multitask_all_of(cfg, ATTRS, 0), state)
    with _start_weights(store, trial, cfg) as path:
        task = make_task(ADVERSARIAL_SHARED, SmallCNN(), 128, 2, lam=0.1, init_weights=path)
    for k, v in task.backbone.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"])
    with _start_weights(store, Trial("x", MULTITASK_ALL, ATTRS), cfg) as path:
        assert path is None  # other kinds start from nothing
