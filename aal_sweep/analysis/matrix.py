"""The pair matrix P[a][b] from the store's rows: the one implementation (pandas, categorical columns).

Missing cells are NaN, never zero; several seeds of one cell are averaged. Vectorised: a 1,000-attribute
store has a million rows, whose names are categoricals, so a lookup is one small array per column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.errors import AalError

METRICS = ("val_acc", "test_acc")


def check_metric(metric: str) -> None:
    """A user's metric (the CLI's --metric, Results.matrix): AalError naming the valid ones."""
    if metric not in METRICS:
        raise AalError(f"metric {metric!r} is not one of {', '.join(METRICS)}")


def pair_matrix(trials: pd.DataFrame, attributes: list[str], metric: str = "val_acc") -> pd.DataFrame:
    """P[a][b]: accuracy of a when trained with b; P[a][a]: a's single-task accuracy. NaN where missing."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    names = pd.Index(list(attributes))
    ok = trials[(trials["status"] == "ok") & trials["kind"].isin(("single", "pair")) & trials[metric].notna()]
    i = positions(ok["attribute"], names)
    j = np.where((ok["kind"] == "single").to_numpy(), i, positions(ok["partner"], names))
    return cell_means(i, j, ok[metric].to_numpy(float), list(attributes))


def cell_means(i: np.ndarray, j: np.ndarray, values: np.ndarray, attributes: list[str]) -> pd.DataFrame:
    """The M x M matrix of the mean of `values` per cell (i, j) (positions in `attributes`; -1 = not a
    cell of this sweep), NaN where a cell has none. Seeds of one cell average; one run is its own value."""
    m = len(attributes)
    keep = (i >= 0) & (j >= 0)
    cell = i[keep] * m + j[keep]
    sums = np.bincount(cell, weights=values[keep], minlength=m * m)
    counts = np.bincount(cell, minlength=m * m)
    with np.errstate(invalid="ignore"):  # 0 / 0 is a missing cell: NaN
        means = sums / counts
    return pd.DataFrame(
        means.reshape(m, m), index=pd.Index(list(attributes), name="attribute"), columns=list(attributes)
    )


def positions(column: pd.Series, names: pd.Index) -> np.ndarray:
    """Each value's position in `names` (-1 where absent or null); fast on categorical columns."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        lookup = np.append(names.get_indexer(column.cat.categories), -1)
        return lookup[column.cat.codes.to_numpy()]  # code -1 (null) picks the appended -1
    return names.get_indexer(column.astype(object))


def strongest_negative_pairs(matrix: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k most negative cells (attribute, partner, single, multi, drop = P[a][b] - P[a][a]), most
    negative first, ties in matrix order; fractions. What a reader of a large-M matrix looks at first."""
    p = matrix.to_numpy(float)
    d = p - np.diag(p)[:, None]
    np.fill_diagonal(d, np.nan)
    flat = np.where(np.isfinite(d) & (d < 0), d, np.inf).ravel()
    k = int(min(k, np.isfinite(flat).sum()))
    if k == 0:
        return pd.DataFrame(columns=["attribute", "partner", "single", "multi", "drop"])
    top = np.argpartition(flat, k - 1)[:k]
    top = top[np.lexsort((top, flat[top]))]  # most negative first; ties in matrix order
    i, j = np.divmod(top, len(d))
    names = np.array(list(matrix.index), dtype=object)
    return pd.DataFrame(
        {"attribute": names[i], "partner": names[j], "single": p[i, i], "multi": p[i, j], "drop": flat[top]}
    )
