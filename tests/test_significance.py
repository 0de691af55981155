"""Significance end to end: the CLI and open_results on a real Parquet store of constructed rows (fast), and
real sweeps on a local Ray (slow): two seeds without shared signal, and a constructed negative partner."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_config

import aal_sweep
from aal_sweep.analysis import stats
from aal_sweep.analysis.pairs import PAIR_COLUMNS
from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config
from aal_sweep.orchestration.trials import plan_initial
from aal_sweep.store import Store

CONTRACT_PAIRS = [
    "attribute",
    "partner",
    "drop",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "n_seeds",
]
CONTRACT_PARTNERS = ["drop", "ci_low", "ci_high", "p_value", "p_adjusted", "significant", "n_seeds", "rule"]
N = 1500


@pytest.fixture
def constructed(tmp_path):
    """A results folder whose rows are built here: A, B, C, one seed; pair (A, B) loses 6% of A's images."""
    cfg = parse_config(
        {"name": "c", "results": str(tmp_path / "r"), "dataset": {"root": str(tmp_path)}, "phases": ["single", "pair"]},
        check_files=False,
    )
    store = Store(tmp_path / "r")
    store.write_config(cfg, ["A", "B", "C"])
    rng = np.random.default_rng(0)
    single = {a: rng.random(N) < 0.85 for a in "ABC"}
    for t in plan_initial(cfg, ("A", "B", "C")):
        rows = []
        for a in t.attributes:
            v = single[a] if t.kind == "single" else np.where(rng.random(N) < 0.01, rng.random(N) < 0.85, single[a])
            if t.kind == "pair" and a == "A" and "B" in t.attributes:
                v = v & ~(rng.random(N) < 0.06)
            rows.append(
                {
                    "trial_id": t.trial_id,
                    "kind": t.kind,
                    "attribute": a,
                    "partner": next((b for b in t.attributes if b != a), None),
                    "seed": t.seed,
                    "status": "ok",
                    "val_acc": v.mean(),
                    "test_acc": v.mean(),
                    "n_val": N,
                    "n_test": N,
                    "val_correct": stats.pack(v),
                    "test_correct": stats.pack(v),
                    "val_majority": 0.7,
                    "config_hash": cfg.training_hash(),
                }
            )
        store.write_trial(rows)
    return tmp_path / "r"


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_pairs_cli_and_open_results(constructed, capsys):
    assert main(["pairs", str(constructed), "--format", "csv"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert list(rows[0]) == PAIR_COLUMNS and set(CONTRACT_PAIRS) <= set(rows[0]) and len(rows) == 6
    ab = next(r for r in rows if r["attribute"] == "A" and r["partner"] == "B")
    assert ab["significant"] == "true" and float(ab["drop"]) < -0.03 and ab["n_seeds"] == "1"
    assert float(ab["ci_low"]) < float(ab["drop"]) < float(ab["ci_high"]) < 0
    table = aal_sweep.open_results(constructed).pairs()
    assert list(table.columns) == PAIR_COLUMNS and table["p_value"].notna().all()


def test_partners_cli_carries_the_statistics(constructed, capsys):
    assert main(["partners", str(constructed), "--format", "csv"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert set(CONTRACT_PARTNERS) <= set(rows[0])
    a = next(r for r in rows if r["attribute"] == "A")
    assert a["partner"] == "B" and a["significant"] == "true" and a["rule"] == "argmin"
    assert main(["partners", str(constructed)]) == 0  # the human table has the columns too
    out = capsys.readouterr().out
    assert "p adj" in out and "ci" in out and "seeds" in out


def test_drop_matrix_with_intervals_and_json(constructed, capsys):
    assert main(["matrix", str(constructed), "--metric", "drop", "--ci"]) == 0
    out = capsys.readouterr().out
    assert "[" in out and "*" in out  # intervals, and the one significant cell marked
    assert main(["matrix", str(constructed), "--metric", "drop", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cell = doc["cells"]["A"]["B"]
    assert doc["metric"] == "drop" and cell["significant"] is True and cell["ci_low"] < cell["ci_high"]
    assert doc["matrix"]["A"]["A"] is None
    assert main(["matrix", str(constructed), "--metric", "drop", "--ci", "--format", "csv"]) == 0
    rows = _csv(capsys.readouterr().out)
    a = next(r for r in rows if r["attribute"] == "A")
    assert float(a["B.ci_low"]) < float(a["B"]) < float(a["B.ci_high"]) and a["A"] == ""
    assert main(["matrix", str(constructed), "--ci"]) == 2
    assert "--ci applies to --metric drop" in capsys.readouterr().err


def test_old_results_without_vectors_say_unavailable(constructed, capsys):
    for f in (constructed / "trials").glob("*.parquet"):  # as results written before the vectors existed
        t = pd.read_parquet(f).drop(columns=["val_correct", "test_correct", "val_majority"])
        t.to_parquet(f)
    table = aal_sweep.open_results(constructed).pairs()
    assert (table["test"] == "unavailable").all() and table["p_value"].isna().all()
    assert table["drop"].notna().all()
    assert main(["partners", str(constructed), "--format", "csv"]) == 0
    a = next(r for r in _csv(capsys.readouterr().out) if r["attribute"] == "A")
    assert a["p_value"] == "" and a["significant"] == "" and a["partner"] == "B"


# ---- real sweeps ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_seeds_without_shared_signal(ray_local, tiny_root, tmp_path):
    """4 shapes in their own image regions: no pair shares signal, so no partner should be significant,
    while the paper's argmin still names a partner wherever any drop is negative."""
    from conftest import run_sweep

    from aal_sweep.analysis.matrix import pair_matrix
    from aal_sweep.analysis.pairs import baseline_table
    from aal_sweep.analysis.partners import choose_partners, derive_partners

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            tiny_root,
            phases=["single", "pair"],
            train={"epochs": 2, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seeds": [0, 1]},
            partners={"rule": "significant"},
        )
    )
    assert run_sweep(cfg) == 0
    store = aal_sweep.open_results(cfg.results)
    rows = store.trials()
    assert rows["val_correct"].notna().all() and rows["val_majority"].between(0.5, 1).all()
    n = rows["n_val"].iloc[0]
    assert all(len(b) == (n + 7) // 8 for b in rows["val_correct"])
    pairs = store.pairs()
    assert (pairs["n_seeds"] == 2).all() and (pairs["test"] == "seeds-t").all()
    attrs = store.attributes
    derived = derive_partners(pair_matrix(rows, attrs))
    base = baseline_table(rows, attrs)
    argmin = choose_partners(derived, pairs, base, "argmin")
    significant = choose_partners(derived, pairs, base, "significant")
    saved = pd.read_parquet(f"{cfg.results}/partners.parquet")
    assert set(saved["rule"]) == {"significant"} and set(CONTRACT_PARTNERS) <= set(saved.columns)
    named_argmin, named_sig = int(argmin["partner"].notna().sum()), int(significant["partner"].notna().sum())
    negative = pairs.groupby("attribute")["drop"].min() < 0
    assert named_argmin == int(negative.sum())  # argmin names one wherever a drop is negative
    assert named_sig <= 1 and named_sig < max(named_argmin, 1)
    print(
        f"no shared signal, 2 seeds: argmin names {named_argmin} of {len(attrs)}, significant names {named_sig}; "
        f"smallest adjusted p {pairs['p_adjusted'].min():.3f}"
    )


@pytest.mark.slow
def test_a_constructed_negative_partner_is_found(ray_local, tmp_path):
    """Xor = Disc XOR Square is a real negative partner of Square on a short budget (one epoch): its
    gradient pushes the shared Square feature up where there is no Disc and down where there is one.
    With two seeds the `significant` rule must name it for Square, and the adversarial phase train
    against it."""
    from conftest import run_sweep

    from aal_sweep.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "data", n_attributes=2, n_images=3000, size=(16, 16), seed=5, xor=True)
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            root,
            phases=["single", "pair", "adversarial"],
            train={"epochs": 1, "batch_size": 64, "lr": 1e-3, "lr_milestones": [1], "seeds": [0, 1]},
            adversarial={"method": "grl", "lambdas": [0.5]},
            partners={"rule": "significant"},
        )
    )
    assert run_sweep(cfg) == 0
    store = aal_sweep.open_results(cfg.results)
    pairs = store.pairs().set_index(["attribute", "partner"])
    cell = pairs.loc[("Square", "Xor")]
    print(
        f"Square with Xor: drop {100 * cell['drop']:+.2f} points [{100 * cell['ci_low']:+.2f}, "
        f"{100 * cell['ci_high']:+.2f}], p {cell['p_value']:.2g}, adjusted {cell['p_adjusted']:.2g}, "
        f"seeds {cell['n_seeds']}, per-seed sd {100 * cell['drop_sd']:.2f}"
    )
    assert cell["significant"] and cell["drop"] < 0 and cell["ci_high"] < 0
    partners = pd.read_parquet(f"{cfg.results}/partners.parquet").set_index("attribute")
    assert partners.loc["Square", "partner"] == "Xor" and partners.loc["Square", "significant"]
    trials = store.trials()
    adv = trials[trials["kind"] == "adversarial"]
    assert set(zip(adv["attribute"], adv["partner"])) >= {("Square", "Xor")}  # the plan used the rule's partner
    assert set(adv["seed"]) == {0, 1}
    gains = store.adversarial_gains()
    assert set(gains["versus"]) == {"single", "multi"} and gains["p_value"].notna().all()


def test_report_shows_significance(constructed, tmp_path):
    from aal_sweep.report.figures import accuracy_bars, drop_heatmap
    from aal_sweep.report.html import significance, write_report

    store = aal_sweep.open_results(constructed)
    index = write_report(store, tmp_path / "report")
    page = index.read_text()
    assert "<h2>Significance" in page and "partners named by the significant rule" in page
    trials = store.trials()
    from aal_sweep.analysis.matrix import pair_matrix

    matrix = pair_matrix(trials, store.attributes)
    sig = significance(store, trials, matrix)
    assert sig["available"] and sig["significant"].sum() == 1 and sig["significant"][0, 1]  # only (A, B)
    summary = sig["summary"].set_index("what")
    assert summary.loc["partners named by the significant rule", "count"] == 1
    fig = drop_heatmap(matrix, sig["chosen"], sig["significant"])
    faded = [p for p in fig.axes[0].patches if p.get_facecolor()[:3] == (1.0, 1.0, 1.0) and p.get_alpha()]
    assert len(faded) == 5  # every finite off-diagonal cell but the significant one
    from aal_sweep.analysis.summary import partners_table, with_statistics

    table = with_statistics(partners_table(trials, store.attributes, partners=sig["chosen"]), sig["chosen"])
    bars = accuracy_bars(table, matrix, sig["val_gains"])
    whiskers = [c for c in bars.axes[1].containers if getattr(c, "errorbar", None) is not None]
    assert whiskers  # the drop bars carry their intervals


def test_report_of_old_results_says_unavailable(constructed, tmp_path):
    from aal_sweep.report.html import write_report

    for f in (constructed / "trials").glob("*.parquet"):
        pd.read_parquet(f).drop(columns=["val_correct", "test_correct"]).to_parquet(f)
    page = write_report(aal_sweep.open_results(constructed), tmp_path / "report").read_text()
    assert "Unavailable: the store" in page


def test_the_correction_setting_reaches_the_tables(constructed):
    from statsmodels.stats.multitest import multipletests

    store = Store(constructed)
    cfg = parse_config(
        store.meta["config"] | {"partners": {"correction": "bh", "rule": "significant"}}, check_files=False
    )
    store.write_config(cfg, store.attributes)
    table = aal_sweep.open_results(constructed).pairs()
    for _, row in table.groupby("attribute"):
        np.testing.assert_allclose(row["p_adjusted"], multipletests(row["p_value"], method="fdr_bh")[1])
    partners = aal_sweep.open_results(constructed).partners().set_index("attribute")
    assert partners.loc["A", "partner"] == "B" and partners.loc["A", "rule"] == "significant"
    assert partners.loc["B", "partner"] is None  # nothing significant: no partner under this rule
