"""The pair matrix, the partners and the adversarial selection: pure functions on the store's DataFrame.

Missing cells are NaN, never zero. Several seeds of the same cell are averaged. `aal_sweep.store.Store`
answers the same questions from a results folder. Everything here is vectorised: a 1,000-attribute store
has a million rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.errors import AalError

METRICS = ("val_acc", "test_acc")


def _ok(trials: pd.DataFrame, kind: str) -> pd.DataFrame:
    return trials[(trials["kind"] == kind) & (trials["status"] == "ok")]


def pair_matrix(trials: pd.DataFrame, attributes: list[str], metric: str = "val_acc") -> pd.DataFrame:
    """P[a][b]: accuracy of a when trained with b; P[a][a]: a's single-task accuracy. NaN where missing."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    names = pd.Index(list(attributes))
    ok = trials[(trials["status"] == "ok") & trials["kind"].isin(("single", "pair")) & trials[metric].notna()]
    i = _positions(ok["attribute"], names)
    j = np.where((ok["kind"] == "single").to_numpy(), i, _positions(ok["partner"], names))
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
    return pd.DataFrame(means.reshape(m, m), index=pd.Index(list(attributes), name="attribute"),
                        columns=list(attributes))


def _positions(column: pd.Series, names: pd.Index) -> np.ndarray:
    """Each value's position in `names` (-1 where absent or null); fast on categorical columns."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        lookup = np.append(names.get_indexer(column.cat.categories), -1)
        return lookup[column.cat.codes.to_numpy()]  # code -1 (null) picks the appended -1
    return names.get_indexer(column.astype(object))


def derive_partners(matrix: pd.DataFrame, allow_partial: bool = False) -> pd.DataFrame:
    """Each attribute's most negative partner: argmin over b of P[a][b] - P[a][a], only where negative.

    Only a complete row decides (a's single task and every pair with a present), unless `allow_partial`:
    then the missing cells of a row are skipped. Ties go to the partner that comes first in the sweep's
    attribute order. `missing` lists a row's missing cells (its own name first when its single task is
    missing); an attribute whose single-task accuracy is missing never gets a partner."""
    names = list(matrix.index)
    m = len(names)
    p = matrix.to_numpy(float)
    single = np.diag(p).copy() if m else np.zeros(0)
    off = ~np.eye(m, dtype=bool)
    absent = np.isnan(p) & off
    drops = np.where(off, p - single[:, None], np.nan)
    complete = ~np.isnan(single) & ~absent.any(axis=1)
    decides = complete | (allow_partial & ~np.isnan(single))
    filled = np.where(np.isnan(drops), np.inf, drops)
    best = filled.argmin(axis=1) if m else np.zeros(0, dtype=int)  # first minimum in column order
    best_drop = filled[np.arange(m), best] if m else np.zeros(0)
    chosen = decides & (best_drop < 0)
    rows = np.arange(m)
    partner = [names[best[k]] if chosen[k] else None for k in rows]
    missing = []
    for k in rows:
        cells = ([names[k]] if np.isnan(single[k]) else []) + [names[c] for c in np.flatnonzero(absent[k])]
        missing.append(",".join(cells) or None)
    out = pd.DataFrame({"attribute": names,
                        "single": single,
                        "multi": np.where(chosen, p[rows, best] if m else 0.0, np.nan),
                        "drop": np.where(chosen, best_drop, np.nan)})
    # keep None as None: pandas 3's string dtype would make it a truthy NaN
    out.insert(1, "partner", pd.Series(partner, dtype=object))
    out["missing"] = pd.Series(missing, dtype=object)
    return out[["attribute", "partner", "single", "multi", "drop", "missing"]]


def negative_partners(matrix: pd.DataFrame, allow_partial: bool = False) -> pd.DataFrame:
    """Per attribute, every partner that lowers it (P[a][b] < P[a][a]), in the sweep's order: the partner
    set of adversarial_multiple (eq. 10-11). Rows decide as in `derive_partners` (complete rows only unless
    `allow_partial`); `partner` holds the set comma-joined (kinds.PARTNER_SEPARATOR, as the store's rows of
    adversarial_multiple do), None where no partner lowers a or the row is undecided; `partners` the tuple."""
    from aal_sweep.kinds import PARTNER_SEPARATOR

    derived = derive_partners(matrix, allow_partial)
    p = matrix.to_numpy(float)
    names = list(matrix.index)
    sets = []
    for k, (single, missing) in enumerate(zip(derived["single"], derived["missing"])):
        decides = not np.isnan(single) and (missing is None or allow_partial)
        sets.append(tuple(names[j] for j in range(len(names)) if decides and j != k and p[k, j] - single < 0))
    out = pd.DataFrame({"attribute": names, "single": derived["single"]})
    out.insert(1, "partner", pd.Series([PARTNER_SEPARATOR.join(s) or None for s in sets], dtype=object))
    out["partners"] = pd.Series(sets, dtype=object)
    out["missing"] = derived["missing"]
    return out


def incomplete_rows(partners: pd.DataFrame) -> dict[str, list[str]]:
    """{attribute: its missing cells} for the rows `derive_partners` could not decide."""
    return {a: miss.split(",") for a, miss in zip(partners["attribute"], partners["missing"]) if miss}


def select_adversarial(trials: pd.DataFrame, partners: pd.DataFrame, selection: str = "per_attribute",
                       kind: str = "adversarial") -> pd.DataFrame:
    """Per attribute with a partner, the adversarial run chosen on validation accuracy.

    per_attribute: each attribute's best lambda (the smaller lambda on ties); global: the one lambda with the
    best mean validation accuracy over attributes that have every lambda. `kind`: the adversarial variant
    (adversarial, adversarial_shared; adversarial_multiple with `partners` from `negative_partners`)."""
    adv = _ok(trials, kind)
    wanted = partners.dropna(subset=["partner"])[["attribute", "partner"]]
    adv = adv.astype({"attribute": object, "partner": object}).merge(wanted, on=["attribute", "partner"])
    cols = ["attribute", "partner", "lambda", "val_acc", "test_acc", "trial_id"]
    if adv.empty:
        return pd.DataFrame(columns=cols)
    per_cell = adv.groupby(["attribute", "partner", "lambda"], as_index=False, observed=True)[["val_acc", "test_acc"]].mean()
    if "trial_id" in adv:  # the narrow query rows leave it out
        ids = adv.groupby(["attribute", "partner", "lambda"], observed=True)["trial_id"].first().reset_index()
        per_cell = per_cell.merge(ids, on=["attribute", "partner", "lambda"])
    else:
        per_cell["trial_id"] = None
    if selection == "global":
        n_lambdas = per_cell["lambda"].nunique()
        complete = per_cell.groupby("attribute")["lambda"].transform("nunique") == n_lambdas
        means = per_cell[complete].groupby("lambda")["val_acc"].mean()
        best = means.sort_index().idxmax() if len(means) else per_cell["lambda"].min()
        chosen = per_cell[per_cell["lambda"] == best]
    elif selection == "per_attribute":
        chosen = (per_cell.sort_values(["attribute", "val_acc", "lambda"], ascending=[True, False, True])
                  .groupby("attribute", as_index=False).head(1))
    else:
        raise ValueError(f"lambda selection {selection!r} is not one of per_attribute, global")
    order = {a: i for i, a in enumerate(partners["attribute"])}
    return chosen.sort_values("attribute", key=lambda s: s.map(order))[cols].reset_index(drop=True)


# ---- the paper's Table 3 ----------------------------------------------------------------------

PARTNER_COLUMNS = ["attribute", "partner", "single", "multi", "adversarial", "lambda",
                   "multi_minus_single", "adv_minus_single", "adv_minus_multi"]


def partners_table(trials: pd.DataFrame, attributes: list[str], metric: str = "val_acc",
                   selection: str = "per_attribute", allow_partial: bool = False,
                   partners: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per attribute: its most negative partner and single / multi / adversarial accuracy, like Table 3.

    Fractions, not percent. Partners and lambdas are always chosen on validation accuracy; `metric` only
    picks the number shown (test_acc gives the test accuracy of the same models, as the paper's Table 2).
    Where no partner lowers the attribute, partner is None and multi, adversarial, lambda and the
    differences are NaN; a missing adversarial run (partial store) leaves adversarial and lambda NaN.

    The last row, attribute "mean", averages each column over the rows that have a value, with one
    exception taken from the paper (Table 6 mean row, DukeMTMC attribute 14): an attribute whose row of the
    matrix is complete and has no negative partner keeps its single-task classifier, so it counts with its
    single accuracy in the multi and adversarial means and with 0 in the difference means. On a complete
    store the mean row is then the mean accuracy of each final system over all attributes, and its
    differences are the differences of those means. Rows still undecided (missing cells) are skipped.
    The mean row's lambda is NaN: an average lambda means nothing.
    `partners`: the chosen partners (Store.chosen_partners: the config's partner rule); default the argmin.
    """
    if partners is None:
        partners = derive_partners(pair_matrix(trials, attributes, "val_acc"), allow_partial)  # chosen on validation
    chosen = select_adversarial(trials, partners, selection).set_index("attribute")
    t = partners[["attribute", "partner", "single", "multi"]].copy()
    # the shown accuracies: of `metric`, of the chosen partner (whichever rule chose it), mean over seeds
    shown = pair_matrix(trials, attributes, metric).to_numpy(float)
    k = np.arange(len(t))
    col = pd.Index(list(attributes)).get_indexer(t["partner"].astype(object))
    t["single"] = np.diag(shown) if len(t) else []
    t["multi"] = np.where(col >= 0, shown[k, np.maximum(col, 0)] if len(t) else 0.0, np.nan)
    t["adversarial"] = t["attribute"].map(chosen[metric]).astype(float)
    t["lambda"] = t["attribute"].map(chosen["lambda"]).astype(float)
    t["multi_minus_single"] = t["multi"] - t["single"]
    t["adv_minus_single"] = t["adversarial"] - t["single"]
    t["adv_minus_multi"] = t["adversarial"] - t["multi"]
    settled = t["partner"].isna() & t["single"].notna() & partners["missing"].isna()
    mean = pd.DataFrame([mean_row(t, settled)], columns=PARTNER_COLUMNS)
    t = t[PARTNER_COLUMNS]
    t["partner"] = t["partner"].astype(object).where(t["partner"].notna(), None)
    return _with_variants(pd.concat([t, mean], ignore_index=True), trials, attributes, partners, metric, selection,
                          allow_partial)


def _with_variants(table: pd.DataFrame, trials: pd.DataFrame, attributes, partners: pd.DataFrame, metric: str,
                   selection: str, allow_partial: bool) -> pd.DataFrame:
    """The partners table plus a column per other variant the store holds (multitask_all,
    adversarial_multiple, adversarial_shared: table1.variant_columns), after `adversarial`; the mean row
    averages each as Table 1 does. A store without them gets the table unchanged."""
    from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL
    from aal_sweep.analysis.variants import variant_columns

    if not trials["kind"].isin([MULTITASK_ALL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED]).any():
        return table  # the common case costs one scan of a column
    extra = variant_columns(trials, attributes, partners, metric, selection, allow_partial)
    if extra.empty or not len(extra.columns):
        return table
    at = table.columns.get_loc("adversarial") + 1
    for k, col in enumerate(extra.columns):
        values = extra[col].reindex(table["attribute"].iloc[:-1]).to_list() + [extra[col].mean()]
        table.insert(at + k, col, values)
    return table


def mean_row(t: pd.DataFrame, settled: pd.Series) -> dict:
    """The mean row of a partners table (see `partners_table`).

    `settled` (bool, aligned with `t`) marks the attributes without a partner whose final classifier is
    their single-task one; they count with their single accuracy (differences 0)."""
    filled = t.copy()
    for col in ("multi", "adversarial"):
        filled[col] = filled[col].where(~settled, filled["single"])
    for col in ("multi_minus_single", "adv_minus_single", "adv_minus_multi"):
        filled[col] = filled[col].where(~settled, 0.0)
    row = {c: float(filled[c].mean()) for c in PARTNER_COLUMNS[2:]}
    return {"attribute": "mean", "partner": None, **row, "lambda": np.nan}


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise AalError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
