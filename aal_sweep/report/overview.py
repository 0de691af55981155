"""The pair matrix at large M, where a labelled cell grid stops being readable (and a figure 0.32 in per
attribute grows to 7,500 px at 200 attributes): an overview in clustered order, without labels, and the
strongest negative pairs as a table. Used by the report above LARGE_M attributes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

LARGE_M = 60  # above this many attributes: overview + top pairs instead of the labelled grid
TOP_K = 30
_MISSING_CELL = "#e0e0e0"


def drops(matrix: pd.DataFrame) -> np.ndarray:
    """P[a][b] - P[a][a] in percentage points, NaN on the diagonal and where missing."""
    p = matrix.to_numpy(float)
    d = (p - np.diag(p)[:, None]) * 100
    np.fill_diagonal(d, np.nan)
    return d


def cluster_order(d: np.ndarray) -> np.ndarray:
    """Attributes ordered so that those hurt alike and hurting alike sit together (average-linkage
    clustering of each attribute's row and column of drops; missing cells count as no change)."""
    m = len(d)
    if m < 3:
        return np.arange(m)
    from scipy.cluster.hierarchy import leaves_list, linkage

    x = np.nan_to_num(d, nan=0.0)
    return leaves_list(linkage(np.hstack([x, x.T]), method="average"))


def overview_figure(matrix: pd.DataFrame, partners: pd.DataFrame) -> Figure:
    """The drop matrix in clustered order, fixed size, no per-cell labels; chosen partners dotted."""
    d = drops(matrix)
    order = cluster_order(d)
    shown = d[np.ix_(order, order)]
    finite = shown[np.isfinite(shown)]
    span = max(float(np.abs(finite).max()), 0.01) if finite.size else 1.0
    fig = Figure(figsize=(9.5, 8.0), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap=colormaps["RdBu"].with_extremes(bad=_MISSING_CELL), norm=TwoSlopeNorm(0.0, -span, span),
                   interpolation="nearest", aspect="auto")
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))
    names = pd.Index(list(matrix.index))
    chosen = partners[partners["attribute"].isin(names) & partners["partner"].notna()]
    rows, cols = names.get_indexer(chosen["attribute"]), names.get_indexer(chosen["partner"])
    keep = (rows >= 0) & (cols >= 0)
    ax.scatter(position[cols[keep]], position[rows[keep]], s=6, c="black", marker="s", linewidths=0,
               label="chosen partner")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"partner (trained with), {len(order)} attributes in clustered order")
    ax.set_ylabel("attribute (measured), same order")
    ax.set_title("Accuracy change when trained with a partner (validation): overview")
    ax.legend(loc="upper right", fontsize=8, frameon=True)
    fig.colorbar(im, ax=ax, shrink=0.8, label="P[a][b] − P[a][a] (percentage points); grey: missing")
    return fig


def strongest_negative_pairs(matrix: pd.DataFrame, k: int = TOP_K) -> pd.DataFrame:
    """The k most negative cells (attribute, partner, single, multi, drop), most negative first; fractions."""
    d = drops(matrix) / 100
    flat = np.where(np.isfinite(d) & (d < 0), d, np.inf).ravel()
    k = int(min(k, np.isfinite(flat).sum()))
    if k == 0:
        return pd.DataFrame(columns=["attribute", "partner", "single", "multi", "drop"])
    top = np.argpartition(flat, k - 1)[:k]
    top = top[np.lexsort((top, flat[top]))]  # most negative first; ties in matrix order
    i, j = np.divmod(top, len(d))
    p = matrix.to_numpy(float)
    names = np.array(list(matrix.index), dtype=object)
    return pd.DataFrame({"attribute": names[i], "partner": names[j], "single": p[i, i], "multi": p[i, j],
                         "drop": flat[top]})
