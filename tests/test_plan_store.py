"""The plan (ids, counts), partner derivation and the store's round trip: pure pieces, no Ray."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.dataset as ds
import pytest

from aal_sweep.analysis.matrix import pair_matrix
from aal_sweep.analysis.partners import derive_partners, select_adversarial
from aal_sweep.config import parse_config
from aal_sweep.orchestration.trials import plan_adversarial, plan_initial, trial_id
from aal_sweep.store import Store


def cfg(tiny_root, **train):
    return parse_config(
        {
            "dataset": {"root": str(tiny_root), "image_size": [16, 16]},
            "model": {"backbone": "small_cnn"},
            "train": {"epochs": 2, **train},
            "adversarial": {"lambdas": [0.1, 1.0]},
        }
    )


def test_plan_counts_and_stable_ids(tiny_root):
    c = cfg(tiny_root)
    attrs = ("A", "B", "C", "D", "E")
    trials = plan_initial(c, attrs)
    assert sum(t.kind == "single" for t in trials) == 5 and sum(t.kind == "pair" for t in trials) == 10
    assert [t.trial_id for t in trials] == [t.trial_id for t in plan_initial(cfg(tiny_root), attrs)]
    assert len({t.trial_id for t in trials}) == 15
    assert trials[5].trial_id == f"pair-A-B-s0-{c.training_hash()}"
    assert {t.trial_id for t in plan_initial(cfg(tiny_root, epochs=3), attrs)}.isdisjoint(t.trial_id for t in trials)


def test_ids_are_filename_safe_and_distinct():
    a = trial_id("pair", ["Wearing Hat", "x/y"], 0, "h")
    assert "/" not in a and " " not in a
    assert trial_id("single", ["a b"], 0, "h") != trial_id("single", ["a_b"], 0, "h")


def _rows(kind, a, b, acc, tid=None, lam=None):
    return {
        "trial_id": tid or f"{kind}-{a}-{b}-{lam}",
        "kind": kind,
        "attribute": a,
        "partner": b,
        "lambda": lam,
        "status": "ok",
        "val_acc": acc,
        "test_acc": acc - 0.01,
        "seed": 0,
    }


def write_trial(results, rows):
    Store(results).write_trial(rows)


def read_trials(results):
    return Store(results).trials()


@pytest.fixture
def store(tmp_path):
    accs = {
        ("A", "A"): 0.90,
        ("B", "B"): 0.80,
        ("C", "C"): 0.70,
        ("A", "B"): 0.88,
        ("B", "A"): 0.81,
        ("A", "C"): 0.88,
        ("C", "A"): 0.69,
        ("B", "C"): 0.82,
        ("C", "B"): 0.71,
    }
    for a in "ABC":
        write_trial(tmp_path, [_rows("single", a, None, accs[a, a], f"single-{a}")])
    for a, b in (("A", "B"), ("A", "C"), ("B", "C")):
        write_trial(
            tmp_path,
            [_rows("pair", a, b, accs[a, b], f"pair-{a}-{b}"), _rows("pair", b, a, accs[b, a], f"pair-{a}-{b}")],
        )
    return tmp_path


def test_store_round_trip_and_outside_readers(store):
    df = read_trials(store)
    assert len(df) == 9 and set(df["status"]) == {"ok"}
    assert len(pd.read_parquet(store / "trials")) == 9
    assert ds.dataset(store / "trials", format="parquet").count_rows() == 9
    assert not list((store / "trials").glob(".*"))  # no temporary files left


def test_store_rejects_mixed_trials(tmp_path):
    with pytest.raises(ValueError):
        write_trial(tmp_path, [_rows("single", "A", None, 0.9, "x"), _rows("single", "B", None, 0.9, "y")])


def test_matrix_and_partner_rule(store):
    m = pair_matrix(read_trials(store), ["A", "B", "C"])
    assert m.loc["A", "A"] == 0.90 and m.loc["B", "A"] == 0.81 and m.loc["A", "B"] == 0.88
    p = derive_partners(m).set_index("attribute")
    assert p.loc["A", "partner"] == "B"  # tie (.88, .88): first in the sweep's order
    assert pd.isna(p.loc["B", "partner"])  # nothing lowers B
    assert p.loc["C", "partner"] == "A" and math.isclose(p.loc["C", "drop"], -0.01)


def test_partners_only_from_complete_rows_unless_allowed(store):
    (store / "trials" / "pair-A-B.parquet").unlink()
    (store / "trials" / "single-C.parquet").unlink()
    m = pair_matrix(read_trials(store), ["A", "B", "C"])
    assert pd.isna(m.loc["A", "B"]) and pd.isna(m.loc["C", "C"])
    p = derive_partners(m).set_index("attribute")
    assert p["partner"].isna().all()  # A lacks A-B, B lacks B-A, C lacks its single task: none is complete
    assert p.loc["A", "missing"] == "B" and p.loc["B", "missing"] == "A" and p.loc["C", "missing"] == "C"
    partial = derive_partners(m, allow_partial=True).set_index("attribute")
    assert partial.loc["A", "partner"] == "C" and partial.loc["A", "missing"] == "B"
    assert pd.isna(partial.loc["C", "partner"])  # no single-task accuracy: never a partner


def test_adversarial_plan_and_lambda_selection(store, tiny_root):
    c = cfg(tiny_root)
    partners = derive_partners(pair_matrix(read_trials(store), ["A", "B", "C"]))
    adv = plan_adversarial(c, partners)
    assert [(t.attributes, t.lam) for t in adv] == [
        (("A", "B"), 0.1),
        (("A", "B"), 1.0),
        (("C", "A"), 0.1),
        (("C", "A"), 1.0),
    ]
    for t, acc in zip(adv, (0.91, 0.92, 0.72, 0.70)):
        write_trial(store, [_rows("adversarial", *t.attributes, acc, t.trial_id, t.lam)])
    trials = read_trials(store)
    per = select_adversarial(trials, partners, "per_attribute").set_index("attribute")
    assert per.loc["A", "lambda"] == 1.0 and per.loc["C", "lambda"] == 0.1
    glob = select_adversarial(trials, partners, "global")
    assert set(glob["lambda"]) == {0.1}  # mean (.91 + .72) / 2 beats (.92 + .70) / 2


def test_changed_training_settings_refused_with_the_keys(tiny_root, tmp_path):
    from aal_sweep.errors import AalError

    store = Store(tmp_path / "r")
    store.write_config(cfg(tiny_root), ("A", "B"))
    store.write_trial([_rows("single", "A", None, 0.9, "single-A") | {"config_hash": cfg(tiny_root).training_hash()}])
    store.check_settings(cfg(tiny_root))  # same training settings (more attributes would be fine too)
    with pytest.raises(AalError, match=r"\(changed: train.lr, train.seed\).*--restart"):
        store.check_settings(cfg(tiny_root, lr=0.01, seed=3))
    (tmp_path / "r" / "sweep.yaml").unlink()  # the trials' own config_hash still refuses
    with pytest.raises(AalError, match=r"holds results of other training settings \(changed: unknown\)"):
        Store(tmp_path / "r").check_settings(cfg(tiny_root, lr=0.01))
    (tmp_path / "r" / "sweep.yaml").write_text("{{{ not yaml")
    with pytest.raises(AalError, match=r"other training settings"):
        Store(tmp_path / "r").check_settings(cfg(tiny_root, lr=0.01))
    Store(tmp_path / "r").check_settings(cfg(tiny_root))
    assert (tmp_path / "r" / "trials" / "single-A.parquet").is_file()
