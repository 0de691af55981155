"""The pair matrix, the partners and the adversarial selection: pure functions on the store's DataFrame.

Missing cells are NaN, never zero. Several seeds of the same cell are averaged. `Results` opens a results
folder (RESULTS/sweep.yaml + RESULTS/trials/) and answers the same questions from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from aal_sweep.errors import AalError
from aal_sweep.store import SWEEP_FILE, read_trials

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
    out = pd.DataFrame(rows, columns=["attribute", "partner", "single", "multi", "drop", "missing"])
    for col in ("partner", "missing"):  # keep None as None: pandas 3's string dtype would make it a truthy NaN
        out[col] = pd.Series([r[col] for r in rows], dtype=object)
    return out


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


# ---- the paper's Table 3 ----------------------------------------------------------------------

PARTNER_COLUMNS = ["attribute", "partner", "single", "multi", "adversarial", "lambda",
                   "multi_minus_single", "adv_minus_single", "adv_minus_multi"]


def partners_table(trials: pd.DataFrame, attributes: list[str], metric: str = "val_acc",
                   selection: str = "per_attribute") -> pd.DataFrame:
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
    """
    matrix = pair_matrix(trials, attributes, metric)
    partners = derive_partners(matrix)
    chosen = select_adversarial(trials, partners, selection).set_index("attribute")
    t = partners[["attribute", "partner", "single", "multi"]].copy()
    t["adversarial"] = t["attribute"].map(chosen[metric]).astype(float)
    t["lambda"] = t["attribute"].map(chosen["lambda"]).astype(float)
    t["multi_minus_single"] = t["multi"] - t["single"]
    t["adv_minus_single"] = t["adversarial"] - t["single"]
    t["adv_minus_multi"] = t["adversarial"] - t["multi"]
    settled = t["partner"].isna() & t["single"].notna() & partners["missing"].isna()
    mean = pd.DataFrame([mean_row(t, settled)], columns=PARTNER_COLUMNS)
    t = t[PARTNER_COLUMNS]
    t["partner"] = t["partner"].astype(object).where(t["partner"].notna(), None)
    return pd.concat([t, mean], ignore_index=True)


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


# ---- a results folder -------------------------------------------------------------------------


class Results:
    """A results folder, opened for queries; every call re-reads the store, so it follows a running sweep.

        res = Results.open("results/demo")      # or aal_sweep.open_results(...)
        res.matrix("val_acc")                   # M x M, row = measured, column = partner, NaN = missing
        res.partners()                          # the paper's Table 3, fractions, plus a mean row
    """

    def __init__(self, path: Path, attributes: list[str], config, training_hash: str | None):
        self.path = path
        self.attributes = attributes
        self.config = config
        self.training_hash = training_hash

    @classmethod
    def open(cls, path: str | Path) -> "Results":
        from aal_sweep.config import parse_config

        path = Path(path)
        meta = _read_sweep_yaml(path)
        config = parse_config(meta["config"], source=str(path / SWEEP_FILE), check_files=False)
        attributes = meta.get("attributes") or config.dataset.attributes
        if not attributes or not all(isinstance(a, str) for a in attributes):
            raise AalError(f"{path / SWEEP_FILE}: no attribute list (expected `attributes: [A, B, ...]`; "
                           f"rerun `aal-sweep run CONFIG` to rewrite it)")
        return cls(path, list(attributes), config, meta.get("training_hash"))

    def trials(self) -> pd.DataFrame:
        """Every stored row, long format (see aal_sweep.store.SCHEMA)."""
        return read_trials(self.path)

    def matrix(self, metric: str = "val_acc") -> pd.DataFrame:
        """The pair matrix in the sweep's attribute order; `.attrs["metric"]` names the metric."""
        _check_metric(metric)
        m = pair_matrix(self.trials(), self.attributes, metric)
        m.attrs["metric"] = metric
        return m

    def partners(self, metric: str = "val_acc") -> pd.DataFrame:
        """The partners table (see `partners_table`), lambda chosen as the config's lambda_selection says."""
        _check_metric(metric)
        t = partners_table(self.trials(), self.attributes, metric, self.config.adversarial.lambda_selection)
        t.attrs["metric"] = metric
        return t

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}, {len(self.attributes)} attributes)"


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise AalError(f"metric {metric!r} is not one of {', '.join(METRICS)}")


def _read_sweep_yaml(path: Path) -> dict:
    """RESULTS/sweep.yaml as a mapping with a `config` mapping, or an AalError naming the fix."""
    if not path.is_dir():
        raise AalError(f"{path}: no such results folder (run `aal-sweep run CONFIG` first, or pass the "
                       f"folder named by the config's `results`)")
    file = path / SWEEP_FILE
    if not file.is_file():
        raise AalError(f"{path}: no {SWEEP_FILE}, so not a results folder (run `aal-sweep run CONFIG` "
                       f"first, or pass the folder named by the config's `results`)")
    try:
        meta = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise AalError(f"{file}: not valid YAML: {str(e).splitlines()[0]} (restore it or rerun "
                       f"`aal-sweep run CONFIG`)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise AalError(f"{file}: expected keys training_hash, attributes and config (a mapping); "
                       f"rerun `aal-sweep run CONFIG` to rewrite it")
    return meta
