"""Measured screening strategies (analysis/strategies) on small matrices whose answer is known, and `simulate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aal_sweep.analysis.simulate import read_matrix, simulate_matrix
from aal_sweep.analysis.strategies import Settings, get, next_round, simulate, total_pairs
from aal_sweep.analysis.strategies.active import design
from aal_sweep.analysis.strategies.base import (
    BUDGET,
    COMPLETE,
    CONFIDENT,
    Cells,
    decided_rows,
    expected_mask,
    requested,
    round_of,
    round_table,
)
from aal_sweep.cli import main
from aal_sweep.config import PairsConfig
from aal_sweep.errors import AalError

DEFAULTS = PairsConfig(mode="screened")


def settings(**kw) -> Settings:
    return Settings.of(PairsConfig(mode="screened", **kw))


def dominant(m: int, partner: int, seed: int, harm: float = 0.04, noise: float = 0.003) -> np.ndarray:
    """Drops where `partner` hurts every attribute by about `harm`, the rest small noise (fractions)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, noise, (m, m)) - rng.uniform(0, noise, m)[None, :]
    d[:, partner] -= harm * rng.uniform(0.7, 1.3, m)
    np.fill_diagonal(d, 0.0)
    return d


def truth(d: np.ndarray) -> np.ndarray:
    """Each row's exhaustive partner: argmin over the off-diagonal cells (all negative here)."""
    return np.where(np.eye(len(d), dtype=bool), np.inf, d).argmin(axis=1)


def found(d: np.ndarray, rounds) -> float:
    trained = requested(rounds)
    best = truth(d)
    return float(np.mean([(min(a, b), max(a, b)) in trained for a, b in enumerate(best)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_dominant_partner_is_found_for_every_row_at_a_fraction_of_the_pairs(seed):
    m = 20
    d = dominant(m, partner=7, seed=seed)
    rounds = simulate(get("active"), d, np.full((m, m), 0.003), settings(budget=0.5, seed=seed))
    assert found(d, rounds) == 1.0
    # every row decided on its evidence before the budget was spent (and far below every pair)
    assert rounds[-1].final and rounds[-1].reason == "decided"
    assert len(requested(rounds)) < settings(budget=0.5).cap(m) and len(requested(rounds)) < 0.4 * total_pairs(m)
    how = {d_[0] for d_ in decided_rows(rounds).values()}
    assert how <= {CONFIDENT, COMPLETE}


def test_a_planted_partner_per_group_is_found():
    """Two groups of attributes, each hurt by its own partner (a low-rank shape, no single dominant one)."""
    m, rng = 16, np.random.default_rng(5)
    d = rng.normal(0, 0.002, (m, m))
    group = np.arange(m) % 2
    d[group == 0, 3] -= 0.05
    d[group == 1, 10] -= 0.05
    np.fill_diagonal(d, 0.0)
    rounds = simulate(get("active"), d, np.full((m, m), 0.002), settings(budget=0.6, seed=1))
    assert found(d, rounds) == 1.0
    assert len(requested(rounds)) < 0.6 * total_pairs(m)


@pytest.mark.parametrize("budget", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("strategy", ["active", "uniform"])
def test_the_budget_is_never_exceeded_and_every_row_is_decided_once(budget, strategy):
    m = 15
    for seed in range(3):
        d = np.random.default_rng(seed).normal(0, 0.01, (m, m))  # pure noise: nothing to learn
        rounds = simulate(get(strategy), d, None, settings(budget=budget, seed=seed))
        pairs = [p for r in rounds for p in r.pairs]
        assert len(pairs) == len(set(pairs)) <= Settings.of(PairsConfig(budget=budget)).cap(m)
        assert all(i < j for i, j in pairs)
        rows = [row for r in rounds for row, *_ in r.decided]
        assert sorted(rows) == list(range(m))  # each row decided exactly once
        assert rounds[-1].final and not any(r.final for r in rounds[:-1])


def test_the_same_seed_makes_the_same_decisions_and_another_seed_another_first_round():
    m = 24
    d = dominant(m, partner=2, seed=3)
    a = simulate(get("active"), d, None, settings(budget=0.4, seed=4))
    b = simulate(get("active"), d, None, settings(budget=0.4, seed=4))
    assert [(r.pairs, r.decided, r.final) for r in a] == [(r.pairs, r.decided, r.final) for r in b]
    assert simulate(get("active"), d, None, settings(budget=0.4, seed=5))[0].pairs != a[0].pairs


def test_pure_noise_spends_the_budget_and_says_it_found_no_structure():
    from aal_sweep.analysis.strategies.base import summary

    m = 30
    d = np.random.default_rng(0).normal(0, 0.01, (m, m))
    s = settings(budget=0.3, seed=0)
    rounds = simulate(get("active"), d, np.full((m, m), 0.01), s)
    assert rounds[-1].reason == "budget" and len(requested(rounds)) == s.cap(m)
    decided = decided_rows(rounds)
    assert sum(1 for x in decided.values() if x[0] == BUDGET) > m // 2  # not confident: left to the budget
    assert rounds[-1].structure < 0.1
    assert "WARNING" in summary("active", rounds, m, s) and "little structure" in summary("active", rounds, m, s)


def test_the_first_round_is_balanced_and_connected():
    for m, degree in [(40, 2), (40, 3), (41, 3), (7, 4)]:
        pairs = design(m, degree, seed=0)
        meets = np.bincount(np.array(pairs).ravel(), minlength=m)
        assert meets.min() >= degree and meets.max() <= degree + 1
        seen, todo = {0}, [0]  # connected: every attribute reached from the first
        while todo:
            x = todo.pop()
            for i, j in pairs:
                for a, b in ((i, j), (j, i)):
                    if a == x and b not in seen:
                        seen.add(b)
                        todo.append(b)
        assert len(seen) == m
    assert len(design(5, 4, 0)) == 10  # degree >= M - 1: every pair


def test_a_decided_row_is_chosen_from_the_pairs_up_to_its_round():
    m = 20
    d = dominant(m, partner=0, seed=1)
    rounds = simulate(get("active"), d, None, settings(budget=1.0, seed=0))
    mask = expected_mask(m, rounds)
    for row, (_, _, through, _) in decided_rows(rounds).items():
        allowed = {p for r in rounds if r.number <= through for p in r.pairs if row in p}
        assert {(min(row, b), max(row, b)) for b in np.flatnonzero(mask[row])} == allowed


def test_a_round_round_trips_through_its_stored_table():
    names = ["A", "B", "C", "D"]
    m = 4
    d = dominant(m, partner=1, seed=0)
    rounds = simulate(get("active"), d, None, settings(budget=1.0, seed=0))
    for r in rounds:
        back = round_of(round_table(r, names), names)
        assert (back.number, back.pairs, back.decided, back.final, back.reason) == (
            r.number,
            r.pairs,
            r.decided,
            r.final,
            r.reason,
        )
        assert back.structure == pytest.approx(r.structure) if r.structure is not None else back.structure is None
    with pytest.raises(ValueError, match="not a round of these attributes"):
        round_of(round_table(rounds[0], names), ["A", "B"])


def test_next_round_refuses_to_plan_after_the_last():
    m = 6
    cells = Cells.empty(m)
    r = next_round(get("uniform"), [], cells, settings(budget=0.2, seed=0))
    assert r.final
    with pytest.raises(ValueError, match="ended"):
        next_round(get("uniform"), [r], cells, settings(budget=0.2, seed=0))


# ---- aal-sweep simulate ------------------------------------------------------------------------------------


def write_matrix(path, d: np.ndarray, single: float = 0.9, scale: float = 1.0):
    m = len(d)
    names = [f"attr{i}" for i in range(m)]
    p = (single + d) * scale
    np.fill_diagonal(p, single * scale)
    pd.DataFrame(p, index=pd.Index(names, name="attribute"), columns=names).to_csv(path)
    return names


def test_simulate_json_names_the_pairs_the_cost_the_partners_and_the_rounds(tmp_path, capsys):
    m = 12
    d = dominant(m, partner=4, seed=0)
    names = write_matrix(tmp_path / "m.csv", d)
    assert main(["simulate", str(tmp_path / "m.csv"), "--budget", "0.5", "--seed", "3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pairs = [tuple(p) for p in out["pairs_trained"]]
    assert len(pairs) == len({frozenset(p) for p in pairs}) and out["cost"] == len(pairs) / total_pairs(m)
    assert out["partners"] == {a: names[b] for a, b in zip(names, truth(d))}
    assert len(out["rounds"]) >= 2 and out["ended"] == "decided" and out["rounds"][-1]["final"]
    assert [tuple(p) for r in out["rounds"] for p in r["pairs"]] == pairs
    assert sorted(a for r in out["rounds"] for a in r["decided"]) == sorted(names)
    # the sweep's own code: the same rounds as the strategy run directly (percent scale gives the same too)
    rounds = simulate(get("active"), d, None, settings(budget=0.5, seed=3))
    assert pairs == [(names[i], names[j]) for r in rounds for i, j in r.pairs]
    write_matrix(tmp_path / "pct.csv", d, scale=100.0)
    assert main(["simulate", str(tmp_path / "pct.csv"), "--budget", "0.5", "--seed", "3", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["partners"] == out["partners"]
    # table output: the summary line and one line per attribute
    assert main(["simulate", str(tmp_path / "m.csv"), "--budget", "0.5", "--set", "pairs.strategy=uniform"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("screened pairs (uniform, budget 0.5") and all(a in shown for a in names)


def test_simulate_reads_standard_errors_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    m = 6
    d = dominant(m, partner=2, seed=0)
    names = write_matrix(tmp_path / "m.csv", d)
    se = pd.DataFrame(np.full((m, m), 0.003), index=pd.Index(names, name="attribute"), columns=names)
    se.to_csv(tmp_path / "se.csv")
    assert main(["simulate", str(tmp_path / "m.csv"), "--budget", "0.6", "--se", str(tmp_path / "se.csv")]) == 0
    capsys.readouterr()
    incomplete = pd.read_csv(tmp_path / "m.csv", index_col=0)
    incomplete.iloc[1, 3] = np.nan
    incomplete.to_csv(tmp_path / "hole.csv")
    se.loc[names[::-1], names[::-1]].to_csv(tmp_path / "other.csv")
    (tmp_path / "text.csv").write_text("attribute,a,b\na,0.9,x\nb,0.8,0.9\n")
    cases = [
        (["simulate", str(tmp_path / "hole.csv"), "--budget", "0.3"], "not complete"),
        (["simulate", str(tmp_path / "nope.csv"), "--budget", "0.3"], "no such file"),
        (["simulate", str(tmp_path / "text.csv"), "--budget", "0.3"], "is not a number"),
        (["simulate", str(tmp_path / "m.csv"), "--se", str(tmp_path / "other.csv")], "not the matrix's"),
        (["simulate", str(tmp_path / "m.csv"), "--budget", "0"], "pairs.budget"),
        (["simulate", str(tmp_path / "m.csv"), "--set", "pairs.strategy=static"], "measured strategy"),
        (["simulate", str(tmp_path / "m.csv"), "--set", "train.lr=1"], "pairs settings only"),
        (["simulate", str(tmp_path / "m.csv"), "--set", "pairs.colour=red"], "pairs.colour: unknown key"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_read_matrix_wants_the_matrix_csv_shape(tmp_path):
    (tmp_path / "t.csv").write_text("name,a,b\na,0.9,0.8\nb,0.8,0.9\n")
    with pytest.raises(AalError, match="first column must be `attribute`"):
        read_matrix(str(tmp_path / "t.csv"))
    m = read_matrix(str(write_csv(tmp_path / "ok.csv")))
    assert list(m.index) == ["a", "b"] and m.loc["a", "b"] == 0.8


def write_csv(path):
    path.write_text("attribute,a,b\na,0.9,0.8\nb,0.85,0.9\n")
    return path


def test_simulate_matrix_partners_come_from_requested_cells_only():
    m = 8
    d = dominant(m, partner=5, seed=2)
    names = [f"x{i}" for i in range(m)]
    p = 0.9 + d
    np.fill_diagonal(p, 0.9)
    out = simulate_matrix(pd.DataFrame(p, index=names, columns=names), None, DEFAULTS.__class__(budget=0.2))
    asked = {frozenset(x) for x in out["pairs_trained"]}
    for a, b in out["partners"].items():
        assert b is None or frozenset((a, b)) in asked


def test_a_budget_the_first_round_uses_up_says_nothing_was_learned():
    from aal_sweep.analysis.strategies.base import summary

    m = 10  # budget 0.3: 13 pairs, the balanced first round takes 10 of them
    d = np.random.default_rng(1).normal(0, 0.01, (m, m))
    s = settings(budget=0.3, seed=0)
    rounds = simulate(get("active"), d, None, s)
    assert rounds[-1].structure is None and rounds[-1].reason == "budget"
    assert "before any round could test the model" in summary("active", rounds, m, s)
