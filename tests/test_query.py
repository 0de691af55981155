"""The query layer on real Parquet stores: Results, the pair matrix, partners_table, the formats, the CLI."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml

from aal_sweep import open_results
from aal_sweep.analysis.partners import PARTNER_STAT_COLUMNS, derive_partners
from aal_sweep.analysis.summary import PARTNER_COLUMNS
from aal_sweep.cli import main
from aal_sweep.config import parse_config
from aal_sweep.errors import AalError
from aal_sweep.report.formats import render_matrix, render_partners
from aal_sweep.store import Store

ATTRS = ["Disc", "Square", "Triangle", "Cross"]


# ---- building real stores -----------------------------------------------------------------------


def write_sweep_yaml(results, attributes, root="/nonexistent/dataset", **adversarial) -> None:
    cfg = parse_config(
        {
            "name": "t",
            "results": str(results),
            "model": {"backbone": "small_cnn"},
            "dataset": {"root": str(root), "attributes": list(attributes)},
            "adversarial": adversarial,
        },
        check_files=False,
    )
    results.mkdir(parents=True, exist_ok=True)
    (results / "sweep.yaml").write_text(
        yaml.safe_dump({"training_hash": cfg.training_hash(), "attributes": list(attributes), "config": cfg.to_dict()})
    )


def write_trial(results, rows) -> None:
    Store(results).write_trial(rows)


def row(trial_id, kind, attribute, partner=None, lam=None, val=None, status="ok", seconds=10.0) -> dict:
    return {
        "trial_id": trial_id,
        "kind": kind,
        "attribute": attribute,
        "partner": partner,
        "lambda": lam,
        "method": "grl" if kind == "adversarial" else None,
        "seed": 0,
        "status": status,
        "val_acc": val,
        "test_acc": None if val is None else val - 0.01,
        "train_seconds": seconds,
        "n_val": 1000,
    }


def write_store(results, attributes, single, pairs, adversarial=(), **adversarial_config):
    """single: {a: acc}; pairs: {(a, b): (acc of a, acc of b)}; adversarial: {(a, b, lam): acc}."""
    write_sweep_yaml(results, attributes, **adversarial_config)
    for a, v in single.items():
        write_trial(results, [row(f"single-{a}", "single", a, val=v)])
    for (a, b), (va, vb) in pairs.items():
        tid = f"pair-{a}-{b}"
        write_trial(results, [row(tid, "pair", a, b, val=va), row(tid, "pair", b, a, val=vb)])
    for (a, b, lam), v in dict(adversarial).items():
        write_trial(results, [row(f"adv-{a}-{b}-{lam}", "adversarial", a, b, lam, val=v)])
    return results


def random_store(results, attributes=ATTRS, seed=0):
    """Every cell present, values with full float precision; adversarial runs for the real partners."""
    rng = np.random.default_rng(seed)
    single = {a: float(rng.uniform(0.8, 0.95)) for a in attributes}
    pairs = {
        (a, b): (single[a] + float(rng.normal(0, 0.003)), single[b] + float(rng.normal(0, 0.003)))
        for a, b in itertools.combinations(attributes, 2)
    }
    p = _cells(single, pairs)
    adversarial = {}
    for a in attributes:
        drops = {b: p[a, b] - single[a] for b in attributes if b != a}
        b = min(drops, key=drops.get)
        if drops[b] < 0:
            adversarial |= {(a, b, lam): single[a] + float(rng.normal(0.002, 0.002)) for lam in (0.1, 0.5)}
    write_store(results, attributes, single, pairs, adversarial)
    return single, p, adversarial


def _cells(single, pairs) -> dict:
    p = {(a, a): v for a, v in single.items()}
    for (a, b), (va, vb) in pairs.items():
        p[a, b], p[b, a] = va, vb
    return p


@pytest.fixture
def full(tmp_path):
    results = tmp_path / "res"
    single, cells, adversarial = random_store(results)
    return results, single, cells, adversarial


# ---- the matrix ---------------------------------------------------------------------------------


def test_matrix_cells_equal_the_stored_values(full):
    results, _, cells, _ = full
    m = open_results(results).matrix()
    assert list(m.index) == ATTRS and list(m.columns) == ATTRS
    for (a, b), v in cells.items():
        assert m.loc[a, b] == v  # exactly: no rounding on the way through Parquet


def test_matrix_test_metric_and_bad_metric(full):
    results, _, cells, _ = full
    res = open_results(results)
    assert res.matrix("test_acc").loc["Disc", "Square"] == pytest.approx(cells["Disc", "Square"] - 0.01)
    with pytest.raises(AalError, match="val_acc, test_acc"):
        res.matrix("loss")


def test_failed_trials_are_not_cells(tmp_path):
    results = write_store(tmp_path / "res", ["A", "B"], {"A": 0.9}, {})
    write_trial(results, [row("single-B", "single", "B", val=0.5, status="failed")])
    m = open_results(results).matrix()
    assert m.loc["A", "A"] == 0.9 and math.isnan(m.loc["B", "B"])


# ---- partners -----------------------------------------------------------------------------------


def test_partners_agree_with_the_matrix(full):
    results, single, cells, adversarial = full
    res = open_results(results)
    m, t = res.matrix(), res.partners()
    assert list(t.columns) == PARTNER_COLUMNS + PARTNER_STAT_COLUMNS  # Table 3, then the partner's statistics
    assert list(t["attribute"]) == ATTRS + ["mean"]
    for a in ATTRS:
        r = t.set_index("attribute").loc[a]
        drops = m.loc[a].drop(a) - m.loc[a, a]
        if drops.min() < 0:
            assert r["partner"] == drops.idxmin()
            assert r["multi"] == m.loc[a, r["partner"]]
            best = max((v, -lam) for (x, b, lam), v in adversarial.items() if x == a)
            assert r["adversarial"] == best[0] and r["lambda"] == -best[1]
            assert r["adv_minus_multi"] == pytest.approx(r["adversarial"] - r["multi"])
        else:
            assert r["partner"] is None and math.isnan(r["multi"])
        assert r["single"] == single[a]


def test_no_partner_where_nothing_lowers_the_attribute(tmp_path):
    single = {"A": 0.90, "B": 0.80, "C": 0.70}
    pairs = {("A", "B"): (0.91, 0.81), ("A", "C"): (0.92, 0.71), ("B", "C"): (0.79, 0.69)}
    results = write_store(tmp_path / "res", list(single), single, pairs, {("B", "C", 0.1): 0.82})
    t = open_results(results).partners().set_index("attribute")
    assert t.loc["A", "partner"] is None
    assert (
        t.loc["A", ["multi", "adversarial", "lambda", "multi_minus_single", "adv_minus_single", "adv_minus_multi"]]
        .isna()
        .all()
    )
    assert t.loc["B", "partner"] == "C" and t.loc["B", "lambda"] == 0.1
    assert t.loc["C", "partner"] == "B" and math.isnan(t.loc["C", "adversarial"])  # run not there yet


def test_partial_store_gives_missing_cells_and_a_partial_partner_table(tmp_path):
    single = {"A": 0.90, "B": 0.80, "C": 0.70}  # B-C never trained, C's single-task run missing
    results = write_store(
        tmp_path / "res",
        list(single),
        {k: v for k, v in single.items() if k != "C"},
        {("A", "B"): (0.89, 0.81), ("A", "C"): (0.91, 0.69)},
        {("A", "B", 0.3): 0.905},
    )
    res = open_results(results)
    m = res.matrix()
    assert m.isna().to_numpy().sum() == 3  # B-C, C-B and C-C
    assert math.isnan(m.loc["B", "C"]) and math.isnan(m.loc["C", "C"])
    t = res.partners().set_index("attribute")
    assert t.loc["A", "partner"] == "B" and t.loc["A", "adversarial"] == 0.905
    assert t.loc["B", "partner"] is None  # undecided: B-C is missing
    assert t.loc["C", "partner"] is None and math.isnan(t.loc["C", "single"])
    # the mean row skips what is missing, and B (row incomplete) does not count as "no partner"
    assert t.loc["mean", "single"] == pytest.approx(0.85)
    assert t.loc["mean", "multi"] == pytest.approx(0.89)
    assert t.loc["mean", "adversarial"] == pytest.approx(0.905)
    csv = render_matrix(m, "csv").splitlines()
    assert csv[2] == "B,0.81,0.8,"  # blank, never 0
    assert csv[3].startswith("C,0.69,,")
    assert "—" in render_matrix(m, "table") and " 0.00" not in render_matrix(m, "table")


def test_mean_row_reproduces_the_papers_duke_table(tmp_path):
    """A store holding Table 6's numbers gives back its partners and its mean row (91.19 / 90.64 / 91.32):
    attribute 14 has no partner and counts with its single-task accuracy, as in the paper."""
    ref = pd.read_csv(
        io.StringIO(resources.files("aal_sweep.report").joinpath("reference", "duke_table6_val.csv").read_text())
    )
    names = list(ref["att_name"])
    single = {n: s / 100 for n, s in zip(names, ref["single"])}
    partner = {n: (names[int(k) - 1] if pd.notna(k) else None) for n, k in zip(ref["att_name"], ref["neg_att"])}
    multi = dict(zip(names, ref["multi"] / 100))

    def acc(a, b):  # the partner's cell holds Table 6's multi; every other pairing helps a little
        return multi[a] if partner[a] == b else single[a] + 0.0001

    pairs = {(a, b): (acc(a, b), acc(b, a)) for a, b in itertools.combinations(names, 2)}
    adversarial = {(a, partner[a], 0.1): v / 100 for a, v in zip(names, ref["adversarial"]) if partner[a]}
    t = open_results(write_store(tmp_path / "duke", names, single, pairs, adversarial)).partners()
    assert list(t["partner"][:-1]) == [partner[n] for n in names]
    mean = t.iloc[-1]
    assert round(100 * mean["single"], 2) == 91.19
    assert round(100 * mean["multi"], 2) == 90.64
    assert round(100 * mean["adversarial"], 2) == 91.32
    assert round(100 * mean["adv_minus_single"], 2) == 0.13


def test_lambda_selection_comes_from_the_config(tmp_path):
    single = {"A": 0.90, "B": 0.80}
    adv = {("A", "B", 0.1): 0.95, ("A", "B", 1.0): 0.91, ("B", "A", 0.1): 0.70, ("B", "A", 1.0): 0.84}

    def chosen(selection):
        results = write_store(
            tmp_path / selection, ["A", "B"], single, {("A", "B"): (0.89, 0.79)}, adv, lambda_selection=selection
        )
        return list(open_results(results).partners()["lambda"][:2])

    assert chosen("per_attribute") == [0.1, 1.0]
    assert chosen("global") == [1.0, 1.0]  # mean 0.875 beats 0.825


def test_derive_partners_ties_go_to_the_first_partner():
    m = pd.DataFrame(
        [[0.9, 0.8, 0.8], [0.7, 0.7, 0.7], [0.6, 0.6, 0.6]], index=["A", "B", "C"], columns=["A", "B", "C"]
    )
    p = derive_partners(m)
    assert p["partner"].tolist() == ["B", None, None]  # None, not NaN: callers test `if row.missing`
    assert p["missing"].tolist() == [None, None, None]


def test_derive_partners_on_a_partial_matrix_keeps_none():
    m = pd.DataFrame(
        [[0.9, np.nan, 0.8], [0.7, 0.7, 0.8], [0.6, 0.6, 0.6]], index=["A", "B", "C"], columns=["A", "B", "C"]
    )
    p = derive_partners(m)
    assert p["missing"].tolist() == ["B", None, None] and p["partner"].tolist() == [None, None, None]
    p = derive_partners(m, allow_partial=True)  # A's row decided without its missing cell
    assert p["missing"].tolist() == ["B", None, None] and p["partner"].tolist() == ["C", None, None]


# ---- opening a results folder -------------------------------------------------------------------


def test_open_reports_a_missing_folder_and_a_missing_sweep_yaml(tmp_path):
    with pytest.raises(AalError, match=r"no such results folder.*aal-sweep run CONFIG"):
        Store.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AalError, match=r"empty: no sweep.yaml.*aal-sweep run CONFIG"):
        Store.open(tmp_path / "empty")
    (tmp_path / "empty" / "sweep.yaml").write_text("attributes: [A, B]\n")
    with pytest.raises(AalError, match="config"):
        Store.open(tmp_path / "empty")


def test_an_empty_store_is_all_missing(tmp_path):
    write_sweep_yaml(tmp_path / "res", ATTRS)
    res = open_results(tmp_path / "res")
    assert res.trials().empty and res.matrix().isna().all().all()
    t = res.partners()
    assert len(t) == 5 and t["partner"].isna().all()
    assert res.config.adversarial.lambda_selection == "per_attribute" and res.attributes == ATTRS


# ---- formats ------------------------------------------------------------------------------------


def test_matrix_csv_has_the_header_and_full_precision(full):
    results, _, cells, _ = full
    lines = render_matrix(open_results(results).matrix(), "csv").splitlines()
    assert lines[0] == "attribute,Disc,Square,Triangle,Cross"
    assert len(lines) == 1 + len(ATTRS)  # no mean row in csv
    for line, a in zip(lines[1:], ATTRS):
        fields = line.split(",")
        assert fields[0] == a
        assert fields[1:] == [repr(cells[a, b]) for b in ATTRS]


def test_matrix_json_table_and_markdown(full):
    results, _, cells, _ = full
    m = open_results(results).matrix()
    doc = json.loads(render_matrix(m, "json"))
    assert doc["metric"] == "val_acc" and doc["attributes"] == ATTRS
    assert doc["matrix"]["Square"]["Cross"] == cells["Square", "Cross"]
    table = render_matrix(m, "table").splitlines()
    assert table[1].split()[:3] == ["1", "Disc", f"{100 * cells['Disc', 'Disc']:.2f}"]
    assert table[-1].split()[0] == "mean"
    md = render_matrix(m, "markdown").splitlines()
    assert md[0].startswith("| # | attribute | 1 |") and md[-1].startswith("|  | mean |")


def test_partners_formats(full):
    results, *_ = full
    t = open_results(results).partners()
    lines = render_partners(t, "csv").splitlines()
    assert lines[0] == ",".join(PARTNER_COLUMNS + PARTNER_STAT_COLUMNS)
    assert lines[-1].startswith("mean,,") and len(lines) == len(ATTRS) + 2
    assert float(lines[1].split(",")[2]) == t["single"][0]
    records = json.loads(render_partners(t, "json"))
    assert [r["attribute"] for r in records] == ATTRS + ["mean"]
    assert records[-1]["partner"] is None and records[-1]["lambda"] is None
    table = render_partners(t, "table")
    assert f"{100 * t['single'][0]:.2f}" in table and table.splitlines()[-1].startswith("mean")
    assert render_partners(t, "markdown").splitlines()[1].startswith("|:---|:---|---:|")


def test_missing_is_never_rendered_as_zero(tmp_path):
    results = write_store(tmp_path / "res", ["A", "B"], {"A": 0.9}, {})
    res = open_results(results)
    m, t = res.matrix(), res.partners()
    assert render_matrix(m, "csv").splitlines()[1:] == ["A,0.9,", "B,,"]
    assert json.loads(render_matrix(m, "json"))["matrix"]["B"] == {"A": None, "B": None}
    for fmt in ("table", "markdown"):
        for text in (render_matrix(m, fmt), render_partners(t, fmt)):
            assert not re.search(r"(?<![\d.])0\.00", text) and "nan" not in text.lower()
    assert "nan" not in render_partners(t, "csv").lower() and "NaN" not in render_partners(t, "json")
    with pytest.raises(AalError, match="table, csv, json, markdown"):
        render_matrix(m, "xlsx")


# ---- the CLI ------------------------------------------------------------------------------------


def test_cli_matrix_csv(full, capsys):
    results, _, cells, _ = full
    assert main(["matrix", str(results), "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "attribute," + ",".join(ATTRS)
    assert out[1].split(",")[2] == repr(cells["Disc", "Square"])


def test_cli_partners_json(full, capsys):
    results, *_ = full
    assert main(["partners", str(results), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["attribute"] == "mean"


def test_cli_missing_results_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["matrix", str(tmp_path / "nope"), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "aal-sweep run" in err


def test_queries_and_status_import_neither_torch_nor_ray(full):
    """Light edges: `status`, `matrix`, `partners` and open_results load no torch and no Ray."""
    results, *_ = full
    code = (
        f"import sys, io, contextlib\nfrom aal_sweep.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    for cmd in ('status', 'matrix', 'partners'):\n"
        f"        assert main([cmd, {str(results)!r}]) == 0\n"
        f"import aal_sweep\naal_sweep.open_results({str(results)!r}).trials()\n"
        f"heavy = ('torch', 'ray', 'aal_sweep.train', 'aal_sweep.orchestration.driver')\n"
        f"print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
