"""Table 1's data: the mean validation and test accuracy of every variant (rendering: aal_sweep.report.tables).

One row per variant, named as the phases, in this order:
    single                each attribute's single-task model
    pair                  each attribute trained with its partner (the pair model of Table 3's "Mul"
                          column; the paper's Table 1 has no such row, Table 3's mean is its reference)
    multitask_all         the heads of the one model with every sweep attribute
    adversarial           pairwise adversarial against the partner (adversarial.method; lambda chosen
                          on validation as adversarial.lambda_selection says)
    adversarial_multiple  against every attribute that lowers it (eq. 10-11), lambda chosen likewise
    adversarial_shared    pairwise adversarial on the multitask_all model's frozen conv layers
Each is a mean over the attributes it covers (`n_attributes`), per attribute the mean over seeds. As in
the paper's mean rows (Table 3, Table 5, Table 6: DukeMTMC attribute 14), an attribute whose row of the
pair matrix is complete and that no partner lowers keeps its single-task classifier: it counts with its
single accuracy in pair and the adversarial variants. A variant with no stored result is "not run" (csv:
empty fields; json: null and "run": false), never 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.analysis.matrix import pair_matrix
from aal_sweep.analysis.partners import negative_partners, select_adversarial
from aal_sweep.kinds import ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL, PAIR, SINGLE

VARIANTS = (SINGLE, PAIR, MULTITASK_ALL, ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)
COLUMNS = ["variant", "n_attributes", "val_mean", "test_mean"]


def variants_table(
    trials: pd.DataFrame,
    attributes,
    partners: pd.DataFrame,
    selection: str = "per_attribute",
    allow_partial: bool = False,
) -> pd.DataFrame:
    """COLUMNS, one row per VARIANTS (fractions; NaN and n_attributes 0 where not run).

    `trials`: the store's rows (kind, attribute, partner, lambda, status, val_acc, test_acc);
    `partners`: the chosen partners (results.chosen_partners: the config's rule), which pair, adversarial
    and adversarial_shared use; adversarial_multiple uses every negative partner (partners.negative_partners)."""
    values, run = per_attribute(trials, attributes, partners, selection, allow_partial)
    rows = []
    for variant in VARIANTS:
        v, t = values[variant]["val"], values[variant]["test"]
        has = v.notna() if variant in run else pd.Series(False, index=v.index)
        both = has & t.notna()
        rows.append(
            {
                "variant": variant,
                "n_attributes": int(has.sum()),
                "val_mean": float(v[has].mean()) if has.any() else np.nan,
                "test_mean": float(t[both].mean()) if both.any() else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def variant_columns(
    trials: pd.DataFrame,
    attributes,
    partners: pd.DataFrame,
    metric: str = "val_acc",
    selection: str = "per_attribute",
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Per attribute (index), the accuracy (`metric`) of each of multitask_all, adversarial_multiple and
    adversarial_shared that the store holds (one column each): what the partners table shows beside
    Table 3's single / multi / adversarial."""
    values, run = per_attribute(trials, attributes, partners, selection, allow_partial)
    m = metric.removesuffix("_acc")
    shown = [v for v in (MULTITASK_ALL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED) if v in run]
    return pd.DataFrame({v: values[v][m] for v in shown}, index=pd.Index(list(attributes), name="attribute"))


def per_attribute(
    trials: pd.DataFrame,
    attributes,
    partners: pd.DataFrame,
    selection: str = "per_attribute",
    allow_partial: bool = False,
) -> tuple[dict[str, dict[str, pd.Series]], set[str]]:
    """({variant: {"val" | "test": accuracy per attribute, NaN where missing}}, the variants with a stored
    result). Settled attributes (no partner lowers them) carry their single accuracy (see the module doc)."""
    attributes = list(attributes)
    ok = trials[trials["status"] == "ok"]
    run = set(ok["kind"].astype(object)) & set(VARIANTS)
    val, test = (pair_matrix(trials, attributes, m) for m in ("val_acc", "test_acc"))
    single = {m: pd.Series(np.diag(p.to_numpy(float)), index=attributes) for m, p in (("val", val), ("test", test))}
    chosen = partners.set_index("attribute").reindex(attributes)

    def settled_of(decided: pd.DataFrame) -> pd.Series:
        """Decided without a partner: complete row (or allow_partial), single known, nothing lowers it."""
        return decided["partner"].isna() & (decided["missing"].isna() | allow_partial) & single["val"].notna()

    def pair_values(p: pd.DataFrame) -> pd.Series:
        col = pd.Index(attributes).get_indexer(chosen["partner"].astype(object))
        cells = p.to_numpy(float)[np.arange(len(attributes)), np.maximum(col, 0)] if attributes else []
        return pd.Series(np.where(col >= 0, cells, np.nan), index=attributes)

    def adversarial_values(kind: str, wanted: pd.DataFrame, settled: pd.Series) -> dict[str, pd.Series]:
        picked = select_adversarial(ok, wanted, selection, kind=kind).set_index("attribute")
        return {
            m: picked[f"{m}_acc"].reindex(attributes).astype(float).where(~settled, single[m]) for m in ("val", "test")
        }

    settled = settled_of(chosen)
    negatives = negative_partners(val, allow_partial)
    multi = ok[ok["kind"] == MULTITASK_ALL].astype({"attribute": object})
    values = {
        SINGLE: single,
        PAIR: {m: pair_values(p).where(~settled, single[m]) for m, p in (("val", val), ("test", test))},
        MULTITASK_ALL: {
            m: multi.groupby("attribute")[f"{m}_acc"].mean().reindex(attributes).astype(float) for m in ("val", "test")
        },
        ADVERSARIAL: adversarial_values(ADVERSARIAL, partners, settled),
        ADVERSARIAL_MULTIPLE: adversarial_values(
            ADVERSARIAL_MULTIPLE, negatives, settled_of(negatives.set_index("attribute"))
        ),
        ADVERSARIAL_SHARED: adversarial_values(ADVERSARIAL_SHARED, partners, settled),
    }
    return values, run
