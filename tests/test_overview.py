"""The report at large M: a clustered overview and the strongest negative pairs instead of a labelled grid."""

from __future__ import annotations

import itertools

import matplotlib.image
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aal_sweep import open_results
from aal_sweep.analysis.matrix import strongest_negative_pairs
from aal_sweep.analysis.partners import derive_partners
from aal_sweep.config import parse_config
from aal_sweep.report.figures import LARGE_M, cluster_order, drop_heatmap, drops
from aal_sweep.report.html import write_report
from aal_sweep.store import SCHEMA, Store


def random_matrix(m: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    single = rng.uniform(0.8, 0.95, m)
    p = single[:, None] + rng.normal(0, 0.01, (m, m))
    np.fill_diagonal(p, single)
    names = [f"A{i:03d}" for i in range(m)]
    return pd.DataFrame(p, index=names, columns=names)


def test_strongest_negative_pairs_are_the_most_negative_cells():
    m = random_matrix(30)
    m.iloc[3, 7] = np.nan
    top = strongest_negative_pairs(m, 10)
    d = drops(m) / 100
    brute = sorted((d[i, j], i, j) for i in range(30) for j in range(30) if np.isfinite(d[i, j]) and d[i, j] < 0)[:10]
    assert list(zip(top["attribute"], top["partner"])) == [(m.index[i], m.columns[j]) for _, i, j in brute]
    assert np.allclose(top["drop"], [v for v, _, _ in brute])
    assert (top["multi"] - top["single"]).round(12).tolist() == top["drop"].round(12).tolist()


def test_cluster_order_is_a_permutation_that_groups_alike_rows():
    blocks = np.zeros((6, 6))
    blocks[np.ix_([0, 2, 4], [0, 2, 4])] = -5  # 0, 2, 4 hurt each other
    np.fill_diagonal(blocks, np.nan)
    order = list(cluster_order(blocks))
    assert sorted(order) == list(range(6))
    first = {order.index(k) for k in (0, 2, 4)}
    assert first in ({0, 1, 2}, {3, 4, 5})


def test_small_matrices_keep_the_labelled_grid():
    m = random_matrix(5)
    fig = drop_heatmap(m, derive_partners(m))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(m.columns)


def test_report_above_the_threshold_has_an_overview_and_the_top_pairs(tmp_path):
    m = LARGE_M + 10
    names = [f"A{i:03d}" for i in range(m)]
    cfg = parse_config(
        {"name": "big", "dataset": {"root": "/nonexistent", "attributes": names}, "model": {"backbone": "small_cnn"}},
        check_files=False,
    )
    store = Store(tmp_path / "res")
    store.write_config(cfg, names)
    p = random_matrix(m).to_numpy()
    ids, attrs, partners, vals, kinds = [], [], [], [], []
    for a in range(m):
        ids.append(f"single-{a}"), attrs.append(names[a]), partners.append(None), vals.append(p[a, a])
        kinds.append("single")
    for a, b in itertools.combinations(range(m), 2):
        for x, y in ((a, b), (b, a)):
            ids.append(f"pair-{a}-{b}"), attrs.append(names[x]), partners.append(names[y]), vals.append(p[x, y])
            kinds.append("pair")
    n = len(ids)
    cols = {
        "trial_id": ids,
        "kind": kinds,
        "attribute": attrs,
        "partner": partners,
        "val_acc": vals,
        "test_acc": vals,
        "status": ["ok"] * n,
        "seed": [0] * n,
        "config_hash": [cfg.training_hash()] * n,
    }
    store.import_rows(
        pa.table({f.name: pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in SCHEMA})
    )
    page = write_report(open_results(tmp_path / "res"), tmp_path / "report")
    text = page.read_text()
    assert "Strongest negative pairs" in text and "pair_matrix.csv" in text
    lines = (tmp_path / "report" / "pair_matrix.csv").read_text().splitlines()
    assert len(lines) == m + 1 and lines[0].startswith("attribute,A000,A001")
    image = matplotlib.image.imread(tmp_path / "report" / "drop_matrix.png")
    assert image.shape[1] <= 1200  # fixed size, not 0.32 in per attribute
    top = strongest_negative_pairs(open_results(tmp_path / "res").matrix(), 3)
    assert all(f"<td>{a}</td>" in text for a in top["attribute"])


@pytest.mark.parametrize("m", [LARGE_M, LARGE_M + 1])
def test_threshold(m):
    fig = drop_heatmap(random_matrix(m), derive_partners(random_matrix(m)))
    assert bool(fig.axes[0].get_xticklabels()) == (m <= LARGE_M)
