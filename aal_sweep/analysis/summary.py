"""The paper's Table 3: per attribute its partner and single / multi / adversarial accuracy, a mean row.

Built on the pair matrix (analysis.matrix), the partners (analysis.partners) and the other variants'
accuracies (analysis.variants); fractions, not percent (aal_sweep.report renders them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.analysis.matrix import pair_matrix
from aal_sweep.analysis.partners import PARTNER_STAT_COLUMNS, derive_partners, select_adversarial
from aal_sweep.analysis.variants import variant_columns
from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL

PARTNER_COLUMNS = [
    "attribute",
    "partner",
    "single",
    "multi",
    "adversarial",
    "lambda",
    "multi_minus_single",
    "adv_minus_single",
    "adv_minus_multi",
]


def partners_table(
    trials: pd.DataFrame,
    attributes: list[str],
    metric: str = "val_acc",
    selection: str = "per_attribute",
    allow_partial: bool = False,
    partners: pd.DataFrame | None = None,
) -> pd.DataFrame:
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
    `partners`: the chosen partners (results.chosen_partners: the config's partner rule); default the argmin.
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
    return _with_variants(
        pd.concat([t, mean], ignore_index=True), trials, attributes, partners, metric, selection, allow_partial
    )


def _with_variants(
    table: pd.DataFrame,
    trials: pd.DataFrame,
    attributes,
    partners: pd.DataFrame,
    metric: str,
    selection: str,
    allow_partial: bool,
) -> pd.DataFrame:
    """The partners table plus a column per other variant the store holds (multitask_all,
    adversarial_multiple, adversarial_shared: variants.variant_columns), after `adversarial`; the mean row
    averages each as Table 1 does. A store without them gets the table unchanged."""
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


def with_statistics(table: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """A partners table (partners_table) with the chosen partners' PARTNER_STAT_COLUMNS appended;
    the mean row finds none and keeps them empty."""
    return table.join(chosen.set_index("attribute")[PARTNER_STAT_COLUMNS], on="attribute")
