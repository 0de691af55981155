"""The pair matrix, the partners and the adversarial selection: pure functions on the store's DataFrame.

Missing cells are NaN, never zero. Several seeds of the same cell are averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("val_acc", "test_acc")


def _ok(trials: pd.DataFrame, kind: str) -> pd.DataFrame:
    return trials[(trials["kind"] == kind) & (trials["status"] == "ok")]


def pair_matrix(trials: pd.DataFrame, attributes: list[str], metric: str = "val_acc") -> pd.DataFrame:
    """P[a][b]: accuracy of a when trained with b; P[a][a]: a's single-task accuracy. NaN where missing."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    m = pd.DataFrame(np.nan, index=pd.Index(attributes, name="attribute"), columns=list(attributes))
    single = _ok(trials, "single").groupby("attribute")[metric].mean()
    for a, v in single.items():
        if a in m.index:
            m.loc[a, a] = v
    pair = _ok(trials, "pair").groupby(["attribute", "partner"])[metric].mean()
    for (a, b), v in pair.items():
        if a in m.index and b in m.columns:
            m.loc[a, b] = v
    return m


def derive_partners(matrix: pd.DataFrame) -> pd.DataFrame:
    """Each attribute's most negative partner: argmin over b of P[a][b] - P[a][a], only where negative.

    Ties go to the partner that comes first in the sweep's attribute order. Missing cells are skipped and
    listed in `missing`; an attribute whose single-task accuracy is missing gets no partner."""
    rows = []
    for a in matrix.index:
        single = matrix.loc[a, a]
        others = matrix.loc[a].drop(a)
        missing = [b for b, v in others.items() if pd.isna(v)]
        if pd.isna(single):
            missing = [a] + missing
        drops = (others - single).dropna()
        partner, multi, drop = None, np.nan, np.nan
        if not pd.isna(single) and len(drops) and drops.min() < 0:
            partner = drops.idxmin()  # first minimum in column order
            multi, drop = others[partner], drops[partner]
        rows.append({"attribute": a, "partner": partner, "single": single, "multi": multi, "drop": drop,
                     "missing": ",".join(missing) or None})
    return pd.DataFrame(rows)


def select_adversarial(trials: pd.DataFrame, partners: pd.DataFrame, selection: str = "per_attribute") -> pd.DataFrame:
    """Per attribute with a partner, the adversarial run chosen on validation accuracy.

    per_attribute: each attribute's best lambda (the smaller lambda on ties); global: the one lambda with the
    best mean validation accuracy over attributes that have every lambda."""
    adv = _ok(trials, "adversarial")
    wanted = partners.dropna(subset=["partner"])[["attribute", "partner"]]
    adv = adv.merge(wanted, on=["attribute", "partner"])
    cols = ["attribute", "partner", "lambda", "val_acc", "test_acc", "trial_id"]
    if adv.empty:
        return pd.DataFrame(columns=cols)
    per_cell = adv.groupby(["attribute", "partner", "lambda"], as_index=False)[["val_acc", "test_acc"]].mean()
    ids = adv.groupby(["attribute", "partner", "lambda"])["trial_id"].first().reset_index()
    per_cell = per_cell.merge(ids, on=["attribute", "partner", "lambda"])
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
