"""The screening estimates' schema, the label-correlation baseline, candidate rules, the `short` scores and the
agreement metrics, on hand-built tables whose answers are worked out here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aal_sweep.analysis.screening import (
    ESTIMATE_COLUMNS,
    ESTIMATE_SCHEMA,
    adaptive_count,
    agreement,
    candidates,
    confirmation_pairs,
    estimates_frame,
    estimates_table,
    label_correlation,
    matrix_drops,
    short_scores,
)
from aal_sweep.errors import AalError

NAMES = ["A", "B", "C", "D", "E"]


def _scores(cells: dict[tuple[str, str], float], estimator: str = "lookahead", seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "estimator": estimator,
            "attribute": [a for a, _ in cells],
            "partner": [b for _, b in cells],
            "score": list(cells.values()),
            "seed": seed,
            "cost": 1.0,
        }
    )


def test_estimates_round_trip_through_parquet(tmp_path):
    labels = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 0]])
    est = pd.concat(
        [
            label_correlation(labels, ["x", "y", "z"]),
            estimates_frame("lookahead", ["x", "y", "z"], np.arange(9.0).reshape(3, 3), seed=2, cost=12.0),
        ]
    )
    pq.write_table(estimates_table(est), tmp_path / "e.parquet")
    back = pd.read_parquet(tmp_path / "e.parquet")
    assert list(back.columns) == ESTIMATE_COLUMNS == ESTIMATE_SCHEMA.names
    assert pq.read_schema(tmp_path / "e.parquet").equals(ESTIMATE_SCHEMA, check_metadata=False)
    assert len(back) == 12 and back["seed"].isna().sum() == 6  # label_correlation: no training seed
    look = back[back["estimator"] == "lookahead"]
    assert list(zip(look["attribute"], look["partner"], look["score"])) == [
        ("x", "y", 1.0),
        ("x", "z", 2.0),
        ("y", "x", 3.0),
        ("y", "z", 5.0),
        ("z", "x", 6.0),
        ("z", "y", 7.0),
    ]
    assert look["cost"].sum() == pytest.approx(12.0) and (back.loc[back["estimator"] != "lookahead", "cost"] == 0).all()


def test_label_correlation_is_uncertainty_coefficient_minus_one():
    a = [1, 1, 0, 0]
    labels = np.array([a, [1, 0, 1, 0], a, [1, 1, 1, 0]]).T  # A; independent of A; a copy of A; A or B
    est = label_correlation(labels, ["A", "Ind", "Copy", "Or"]).set_index(["attribute", "partner"])["score"]
    assert est[("A", "Ind")] == pytest.approx(-1.0)  # b says nothing about a
    assert est[("A", "Copy")] == pytest.approx(0.0)  # b determines a
    # I(A; Or) by hand: joint (A=1,Or=1) .5, (A=0,Or=1) .25, (A=0,Or=0) .25; p(A=1) .5, p(Or=1) .75
    mutual = (
        0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.25))
    )
    h_or = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert est[("A", "Or")] == pytest.approx(mutual / math.log(2) - 1)  # H(A) = 1 bit
    assert est[("Or", "A")] == pytest.approx(mutual / h_or - 1)  # directed: divided by H(Or)


def test_top_k_takes_the_most_negative_whatever_the_sign():
    cells = {("A", b): s for b, s in zip("BCDE", [0.3, 0.1, 0.2, 0.1])}  # C and E tie: C comes first
    cells |= {("B", "A"): 0.5, ("B", "C"): -2.0}  # B has two estimates only
    cand = candidates(_scores(cells), NAMES, k=2)
    assert list(cand.itertuples(index=False, name=None)) == [
        ("A", "C", 0.1, 1),
        ("A", "E", 0.1, 2),
        ("B", "C", -2.0, 1),
        ("B", "A", 0.5, 2),
    ]
    assert confirmation_pairs(cand, NAMES) == [("A", "B"), ("A", "C"), ("A", "E"), ("B", "C")]


def test_seeds_average_before_ranking():
    est = pd.concat(
        [_scores({("A", "B"): -1.0, ("A", "C"): 0.0}, seed=0), _scores({("A", "B"): 3.0, ("A", "C"): 0.5}, seed=1)]
    )  # means: B 1.0, C 0.25
    cand = candidates(est, ["A", "B", "C"], k=1)
    assert list(zip(cand["partner"], cand["score"])) == [("C", 0.25)]


def test_k_of_m_minus_one_is_exhaustive_even_without_estimates():
    cand = candidates(_scores({("A", "B"): -1.0}), NAMES, k=4, rule="adaptive")
    assert len(cand) == 20 and cand.groupby("attribute")["rank"].max().eq(4).all()
    assert len(confirmation_pairs(cand, NAMES)) == 10  # M (M - 1) / 2


def test_adaptive_confirms_fewer_where_one_stands_out():
    cells = {("A", b): s for b, s in zip("BCDE", [-10.0, -1.0, 0.0, 1.0])}
    cells |= {("B", b): s for b, s in zip("ACDE", [-1.0, -0.9, -0.8, 5.0])}
    cells |= {("C", b): 0.0 for b in "ABDE"}
    # A: median -0.5, MAD 1.0, spread 1.4826: only B (-10) lies within it of the best.
    # B: median -0.85, MAD 0.1, spread 0.148: A (-1.0) and C (-0.9) within 0.148 of -1.0; D (-0.8) is not.
    # C: every score equal: nothing separates them, so k.
    cand = candidates(_scores(cells), NAMES, k=3, rule="adaptive")
    got = cand.groupby("attribute")["partner"].apply(list).to_dict()
    assert got == {"A": ["B"], "B": ["A", "C"], "C": ["A", "B", "D"]}
    assert candidates(_scores(cells), NAMES, k=3)["attribute"].value_counts().to_dict() == {"A": 3, "B": 3, "C": 3}
    assert adaptive_count(np.array([-1.0, -0.9, -0.8, 5.0]), k=1) == 1 and adaptive_count(np.array([]), k=2) == 0


def test_bad_rules_are_refused():
    est = _scores({("A", "B"): -1.0})
    with pytest.raises(AalError, match="not one of top_k, adaptive"):
        candidates(est, NAMES, k=1, rule="best")
    with pytest.raises(AalError, match="at least 1"):
        candidates(est, NAMES, k=0)
    with pytest.raises(AalError, match="several estimators"):
        candidates(pd.concat([est, _scores({("A", "B"): 0.0}, "short")]), NAMES, k=1)


def _row(kind, attribute, partner, seed, accs, status="ok", seconds=10.0):
    return {
        "kind": kind,
        "attribute": attribute,
        "partner": partner,
        "seed": seed,
        "status": status,
        "val_acc_by_epoch": accs,
        "train_seconds": seconds,
        "epochs_run": len(accs),
    }


def test_short_scores_pair_minus_single_at_the_epoch_seed_by_seed():
    rows = pd.DataFrame(
        [
            _row("single", "A", None, 0, [0.80, 0.90]),
            _row("single", "A", None, 1, [0.70, 0.90]),
            _row("single", "B", None, 0, [0.60]),
            _row("pair", "A", "B", 0, [0.75, 0.95], seconds=8.0),
            _row("pair", "B", "A", 0, [0.65, 0.66], seconds=8.0),
            _row("pair", "A", "B", 1, [0.72]),  # seed 1: a short trial (one epoch)
            _row("pair", "B", "A", 1, [0.50]),  # no single of B with seed 1: no estimate
            _row("pair", "A", "C", 0, [0.10], status="failed"),
        ]
    )
    est = short_scores(rows, ["A", "B", "C"], epochs=1)
    got = {
        (a, b, s): (round(v, 10), c)
        for a, b, s, v, c in zip(est["attribute"], est["partner"], est["seed"], est["score"], est["cost"])
    }
    assert got == {
        ("A", "B", 0): (-0.05, 2.0),  # 0.75 - 0.80; 8 s over 2 epochs, 1 of them, shared by 2 rows
        ("A", "B", 1): (0.02, 5.0),  # 0.72 - 0.70
        ("B", "A", 0): (0.05, 2.0),
    }  # 0.65 - 0.60
    two = short_scores(rows, ["A", "B", "C"], epochs=2)  # only trials that ran two epochs
    assert list(zip(two["attribute"], two["score"].round(10))) == [("A", 0.05)]
    assert set(est["estimator"]) == {"short"}
    assert short_scores(rows[rows["kind"] == "single"], ["A", "B"], epochs=1).empty  # no pair yet: no estimate
    with pytest.raises(AalError, match="at least 1"):
        short_scores(rows, ["A", "B"], epochs=0)


def test_agreement_by_hand():
    exhaustive = pd.DataFrame(
        {"attribute": list("ABCD"), "partner": ["B", "C", None, "A"], "significant": [True, False, None, True]}
    )
    screened = pd.DataFrame(
        {"attribute": list("ABCD"), "partner": ["B", None, None, "C"], "significant": [True, None, None, False]}
    )
    trained = [("B", "A"), ("C", "D")]  # screened pair trials: {A,B} and {C,D}
    # exhaustive pair matrix: P[a][a] on the diagonal
    matrix = pd.DataFrame(
        [[0.90, 0.85, 0.92, 0.91], [0.80, 0.80, 0.70, 0.81], [0.50, 0.52, 0.60, 0.55], [0.60, 0.70, 0.75, 0.70]],
        index=list("ABCD"),
        columns=list("ABCD"),
    )
    drops = matrix_drops(matrix)
    assert drops.set_index(["attribute", "partner"]).loc[("B", "C"), "drop"] == pytest.approx(-0.10)
    est = _scores({("A", "B"): -3.0, ("A", "C"): 1.0, ("B", "A"): -1.0, ("D", "A"): 2.0}, seed=0)
    est = pd.concat([est, _scores({("A", "B"): -1.0}, seed=1)])  # A,B mean -2.0
    out = agreement(screened, exhaustive, trained, est, drops, (2, 6), (30.0, 120.0))
    # top1: A (B = B) yes, B (none vs C) no, C (none = none) yes, D (C vs A) no
    assert out["top1_agreement"] == 0.5
    # attributes with an exhaustive partner: A (A,B trained), B (B,C not), D (D,A not) -> 1 of 3
    assert out["recall"] == pytest.approx(1 / 3)
    # significant exhaustive partners: A (trained), D (not) -> 1 of 2
    assert out["recall_significant"] == 0.5
    # cells with both: (A,B) -2 / -.05, (A,C) 1 / .02, (B,A) -1 / 0, (D,A) 2 / -.10
    # ranks of the scores 1, 3, 2, 4; of the drops 2, 4, 3, 1: d = -1, -1, -1, 3; rho = 1 - 6 * 12 / 60
    assert out["spearman"] == pytest.approx(1 - 6 * 12 / (4 * 15))
    assert out["pair_trials"] == {"screened": 2, "exhaustive": 6}
    assert out["train_seconds"] == {"screened": 30.0, "exhaustive": 120.0} and out["cost"] == 0.25
    assert (out["with_partner"], out["with_significant_partner"], out["spearman_cells"]) == (3, 2, 4)


def test_agreement_over_empty_sets_is_null():
    none = pd.DataFrame({"attribute": ["A", "B"], "partner": [None, np.nan], "significant": [None, None]})
    out = agreement(
        none,
        none,
        [],
        _scores({("A", "B"): 1.0}),
        pd.DataFrame(columns=["attribute", "partner", "drop"]),
        (0, 1),
        (0.0, 0.0),
    )
    assert out["top1_agreement"] == 1.0  # "none" equals "none"
    assert out["recall"] is None and out["recall_significant"] is None and out["spearman"] is None
    assert out["cost"] is None


def test_label_correlation_scores_each_pair_on_the_images_labelled_for_both():
    """An unknown label (-1, dataset.missing: ignore) leaves its image out of that attribute's pairs only."""
    from aal_sweep.analysis.screening import label_correlation

    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.4).astype(int)
    y[:, 1] = np.where(rng.random(400) < 0.8, y[:, 0], 1 - y[:, 0])  # 1 follows 0
    unknown = y.copy()
    unknown[:100, 0] = -1  # the first 100 images unlabelled for attribute 0
    names = ["A", "B", "C"]
    got = label_correlation(unknown, names).set_index(["attribute", "partner"])["score"]
    on_labelled = label_correlation(y[100:], names).set_index(["attribute", "partner"])["score"]
    everything = label_correlation(y, names).set_index(["attribute", "partner"])["score"]
    for pair in [("A", "B"), ("B", "A"), ("A", "C"), ("C", "A")]:
        assert got[pair] == pytest.approx(on_labelled[pair])
    for pair in [("B", "C"), ("C", "B")]:  # attribute 0 not in the pair: every image counts
        assert got[pair] == pytest.approx(everything[pair])
