"""The HTML report on real stores: real matplotlib PNGs, a real synthetic dataset, the paper comparison."""

from __future__ import annotations

import itertools
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml

from aal_sweep import open_results
from aal_sweep.cli import main
from aal_sweep.config import parse_config
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.errors import AalError
from aal_sweep.report.figures import label_points
from aal_sweep.report.html import write_report
from aal_sweep.report.tables import comparison, load_reference
from aal_sweep.store import Store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CELEBA = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Big_Lips", "Male"]


def write_store(results, attributes, root, seed=0, skip=()):
    """A complete store with random accuracies (except the `skip`ped trial ids) and its sweep.yaml."""
    cfg = parse_config(
        {
            "name": "report-test",
            "results": str(results),
            "model": {"backbone": "small_cnn"},
            "dataset": {"root": str(root), "attributes": list(attributes)},
        },
        check_files=False,
    )
    results.mkdir(parents=True)
    (results / "sweep.yaml").write_text(
        yaml.safe_dump({"training_hash": cfg.training_hash(), "attributes": list(attributes), "config": cfg.to_dict()})
    )
    rng = np.random.default_rng(seed)
    single = {a: float(rng.uniform(0.8, 0.95)) for a in attributes}

    def put(tid, rows):
        if tid not in skip:
            Store(results).write_trial(
                [
                    {
                        "trial_id": tid,
                        "seed": 0,
                        "status": "ok",
                        "train_seconds": 12.5,
                        "test_acc": r["val_acc"] - 0.01,
                        "n_val": 500,
                        **r,
                    }
                    for r in rows
                ]
            )

    for a in attributes:
        put(f"single-{a}", [{"kind": "single", "attribute": a, "val_acc": single[a]}])
    for a, b in itertools.combinations(attributes, 2):
        put(
            f"pair-{a}-{b}",
            [
                {"kind": "pair", "attribute": x, "partner": y, "val_acc": single[x] - 0.003 * (k + 1)}
                for k, (x, y) in enumerate(((a, b), (b, a)))
            ],
        )
    for a in attributes:  # every pairing lowers a here, the first partner in order most of all
        b = next(x for x in attributes if x != a)
        for lam in (0.1, 1.0):
            put(
                f"adv-{a}-{lam}",
                [
                    {
                        "kind": "adversarial",
                        "attribute": a,
                        "partner": b,
                        "lambda": lam,
                        "method": "grl",
                        "val_acc": single[a] + 0.002 * lam,
                    }
                ],
            )
    return results


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "syn", n_attributes=4, n_images=60, size=(16, 16))


@pytest.fixture(scope="module")
def report(tmp_path_factory, synthetic_root):
    """One report of a complete 4-attribute store whose config points at a real (synthetic) dataset."""
    base = tmp_path_factory.mktemp("report")
    results = write_store(base / "res", ["Disc", "Square", "Triangle", "Cross"], synthetic_root)
    return results, write_report(open_results(results), base / "out")


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_report_writes_valid_pngs_and_one_html(report):
    _, index = report
    assert index.name == "index.html"
    for name in ("drop_matrix.png", "accuracy_bars.png", "label_correlation.png"):
        _assert_png(index.parent / name)
    html = index.read_text()
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"src=['\"](?!data:)", html)  # self-contained: nothing fetched from elsewhere


def test_report_html_holds_the_tables_config_and_run_times(report):
    results, index = report
    html = index.read_text()
    t = open_results(results).partners()
    for heading in ("Partners (Table 3)", "Pair matrix (Table 4)", "Run times", "Config", "Means"):
        assert heading in html
    assert f"{100 * t['single'][0]:.2f}" in html and f"{100 * t['adversarial'].iloc[-1]:.2f}" in html
    assert "<td>mean</td>" in html and "report-test" in html and "lambda_selection" in html
    assert "1m 15s" in html  # 6 pair trials of 12.5 s: one trial counted once, not per row


def test_label_points_use_training_labels_and_relative_change(report, synthetic_root):
    from aal_sweep.data.celeba import load_index

    results, _ = report
    res = open_results(results)
    m = res.matrix()
    labels = load_index(synthetic_root, res.attributes, check_images=False).labels["train"]
    pts = label_points(m, labels)
    assert len(pts) == 12  # every ordered pair
    r = pts.iloc[0]
    a, b = r["attribute"], r["partner"]
    i, j = res.attributes.index(a), res.attributes.index(b)
    assert r["label_corr"] == pytest.approx(np.corrcoef(labels[:, i], labels[:, j])[0, 1])
    assert r["relative_change"] == pytest.approx(100 * (m.loc[a, b] - m.loc[a, a]) / m.loc[a, a])


def test_report_without_the_dataset_skips_the_scatter_with_a_note(tmp_path):
    results = write_store(tmp_path / "res", ["A", "B", "C"], tmp_path / "absent")
    index = write_report(open_results(results), tmp_path / "out")
    assert not (tmp_path / "out" / "label_correlation.png").exists()
    _assert_png(tmp_path / "out" / "drop_matrix.png")
    assert "label-correlation figure (Fig. 3) is left out" in index.read_text()


def test_report_on_a_partial_store(tmp_path):
    skip = {"single-C", "pair-A-B", "adv-A-0.1", "adv-A-1.0"}
    results = write_store(tmp_path / "res", ["A", "B", "C"], tmp_path / "absent", skip=skip)
    html = write_report(open_results(results), tmp_path / "out").read_text()
    assert "The store is partial" in html and "pair cells 4 of 6" in html
    _assert_png(tmp_path / "out" / "accuracy_bars.png")


def test_compare_paper_celeba_lines_rows_up_by_name(tmp_path):
    results = write_store(tmp_path / "res", CELEBA + ["Not_In_The_Paper"], tmp_path / "absent")
    res = open_results(results)
    cmp = comparison(res.partners(), res.matrix(), load_reference("paper-celeba"))
    assert list(cmp["attribute"]) == CELEBA + ["mean"]
    male = cmp.set_index("attribute").loc["Male"]
    assert male["single (paper)"] == "99.09" and male["partner (paper)"] == "Wavy_Hair"  # neg_att 34
    assert male["single (ours)"] == f"{100 * res.partners().set_index('attribute').loc['Male', 'single']:.2f}"
    html = write_report(res, tmp_path / "out", compare="paper-celeba").read_text()
    assert (
        "4 of this sweep&#x27;s 5 attributes matched the 40 rows" in html
        or "4 of this sweep's 5 attributes matched the 40 rows" in html
    )


def test_compare_paper_duke_matches_spellings_and_keeps_the_papers_no_partner_row(tmp_path):
    names = ["Green_lower_body_clothes", "light-color shoes", "Gender"]
    results = write_store(tmp_path / "res", names, tmp_path / "absent")
    res = open_results(results)
    cmp = comparison(res.partners(), res.matrix(), load_reference("paper-duke")).set_index("attribute")
    assert list(cmp.index) == names + ["mean"]
    assert cmp.loc["Green_lower_body_clothes", "partner (paper)"] == ""
    assert cmp.loc["Green_lower_body_clothes", "multi (paper)"] == "—"
    assert cmp.loc["light-color shoes", "single (paper)"] == "91.81"
    # the paper's side of the mean row counts attribute 14 with its single accuracy
    assert cmp.loc["mean", "multi (paper)"] == f"{(99.64 + 91.23 + 84.28) / 3:.2f}"


def test_bad_compare_name(tmp_path):
    results = write_store(tmp_path / "res", ["A", "B"], tmp_path / "absent")
    with pytest.raises(AalError, match="paper-celeba, paper-duke"):
        write_report(open_results(results), tmp_path / "out", compare="paper-imagenet")


def test_cli_report(tmp_path, capsys):
    results = write_store(tmp_path / "res", ["A", "B"], tmp_path / "absent")
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _large_store(results, m, n=200, seed=3):
    """A complete store of m attributes with per-image bits (both splits) and adversarial runs, imported as
    one segment; attribute A007's partner lowers it most, by construction."""
    import pyarrow as pa

    from aal_sweep.analysis.stats import pack
    from aal_sweep.store import SCHEMA

    names = [f"A{i:03d}" for i in range(m)]
    cfg = parse_config(
        {
            "name": "big",
            "results": str(results),
            "model": {"backbone": "small_cnn"},
            "dataset": {"root": "/nonexistent", "attributes": names},
        },
        check_files=False,
    )
    store = Store(results)
    store.write_config(cfg, names)
    rng = np.random.default_rng(seed)
    single = [rng.random(n) < rng.uniform(0.75, 0.95) for _ in names]
    rows = []

    def add(tid, kind, a, b, correct, lam=None):
        rows.append(
            {
                "trial_id": tid,
                "kind": kind,
                "attribute": names[a],
                "partner": None if b is None else names[b],
                "lambda": lam,
                "method": "grl" if lam else None,
                "seed": 0,
                "status": "ok",
                "val_acc": correct.mean(),
                "test_acc": correct.mean(),
                "n_val": n,
                "n_test": n,
                "val_correct": pack(correct),
                "test_correct": pack(correct),
                "val_majority": 0.5,
                "train_seconds": 1.0,
                "config_hash": cfg.training_hash(),
            }
        )

    for a in range(m):
        add(f"single-{a}", "single", a, None, single[a])
    for a, b in itertools.combinations(range(m), 2):
        for x, y in ((a, b), (b, a)):
            hurt = 0.25 if (x, y) == (7, 8) else 0.03
            add(f"pair-{a}-{b}", "pair", x, y, single[x] & ~(rng.random(n) < rng.uniform(0, hurt)))
    for a in range(m):
        for lam in (0.1, 1.0):
            add(f"adv-{a}-{lam}", "adversarial", a, (a + 1) % m, single[a] | (rng.random(n) < 0.02), lam)
    store.import_rows(pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in SCHEMA}))
    return names


def test_fig2_above_the_threshold_shows_the_strongest_effects_and_says_so(tmp_path):
    from aal_sweep.report.figures import LARGE_M, TOP_EFFECTS, accuracy_bars

    m = LARGE_M + 10
    _large_store(tmp_path / "res", m)
    page = write_report(open_results(tmp_path / "res"), tmp_path / "out")
    _assert_png(tmp_path / "out" / "accuracy_bars.png")
    image = matplotlib.image.imread(tmp_path / "out" / "accuracy_bars.png")
    assert image.shape[0] <= 1000 and image.shape[1] <= 1400  # a fixed size, not 0.32 in per attribute
    text = page.read_text()
    assert f"for {m} attributes" in text and f"the {TOP_EFFECTS} attributes whose partner lowers them most" in text
    res = open_results(tmp_path / "res")
    table = res.partners()
    fig = accuracy_bars(table, res.matrix())
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == TOP_EFFECTS and labels[0] == "A007 (with A008)"  # the strongest effect on top
    drops = table[table["attribute"] != "mean"].set_index("attribute")["multi_minus_single"]
    shown = [label.split(" (with ")[0] for label in labels]
    assert list(drops.loc[shown]) == sorted(drops.dropna())[:TOP_EFFECTS]


def test_fig2_at_the_threshold_keeps_three_bars_per_attribute():
    import pandas as pd

    from aal_sweep.report.figures import LARGE_M, accuracy_bars

    names = [f"A{i:03d}" for i in range(LARGE_M)]
    rng = np.random.default_rng(0)
    single = rng.uniform(0.8, 0.9, LARGE_M)
    table = pd.DataFrame(
        {
            "attribute": names + ["mean"],
            "partner": names[1:] + names[:1] + [None],
            "single": [*single, single.mean()],
            "multi": [*(single - 0.01), 0],
            "adversarial": [*(single + 0.005), 0],
            "multi_minus_single": -0.01,
            "adv_minus_single": 0.005,
        }
    )
    matrix = pd.DataFrame(0.85, index=names, columns=names)
    fig = accuracy_bars(table, matrix)
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == names
    assert len(fig.axes[0].patches) == 3 * LARGE_M


def test_label_points_leave_unknown_labels_out_of_each_pair():
    from aal_sweep.report.figures import label_points

    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.5).astype(int)
    y[:, 1] = np.where(rng.random(300) < 0.8, y[:, 0], 1 - y[:, 0])
    unknown = y.copy()
    unknown[:50, 0] = -1
    names = ["A", "B", "C"]
    matrix = pd.DataFrame(np.full((3, 3), 0.9) - 0.01 * (1 - np.eye(3)), index=names, columns=names)
    got = label_points(matrix, unknown).set_index(["attribute", "partner"])["label_corr"]
    assert got[("A", "B")] == pytest.approx(np.corrcoef(y[50:, 0], y[50:, 1])[0, 1])
    assert got[("B", "C")] == pytest.approx(np.corrcoef(y[:, 1], y[:, 2])[0, 1])
