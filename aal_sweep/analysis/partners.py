"""Who partners whom: the argmin and significant rules, their statistics, and the adversarial run chosen per attribute.

Pure pandas on the store's rows and the pair matrix (aal_sweep.analysis.matrix); the statistics of each
candidate cell come from aal_sweep.analysis.pairs.

    derive_partners(matrix)                        the argmin partners (the paper's rule)
    partner_statistics(derived, rows, attrs, rule) the rule's partners with every statistic (partners.parquet)
    select_adversarial(rows, partners)             per attribute the adversarial run chosen on validation
    significance_summary(...)                      the report's counts under both rules
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aal_sweep.analysis.pairs import BIT_COLUMNS, GAIN_COLUMNS, UNAVAILABLE, baseline_table, pairs_table
from aal_sweep.config import PARTNER_RULES
from aal_sweep.kinds import PARTNER_SEPARATOR

# what partners.parquet and `aal-sweep partners` add to their columns
PARTNER_STAT_COLUMNS = [
    "drop",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "n_seeds",
    "rule",
    "candidate",
    "test",
    "majority",
    "single_above_majority",
]


def derive_partners(
    matrix: pd.DataFrame, allow_partial: bool = False, expected: np.ndarray | None = None
) -> pd.DataFrame:
    """Each attribute's most negative partner: argmin over b of P[a][b] - P[a][a], only where negative.

    Only a complete row decides (a's single task and every pair with a present), unless `allow_partial`:
    then the missing cells of a row are skipped. Ties go to the partner that comes first in the sweep's
    attribute order. `missing` lists a row's missing cells (its own name first when its single task is
    missing); an attribute whose single-task accuracy is missing never gets a partner. `expected` (M x M
    bool): the cells a complete row has; a screened pair phase expects only its confirmed pairs
    (analysis/screening.py), the others are neither candidates nor missing. Default: every cell."""
    names = list(matrix.index)
    m = len(names)
    p = matrix.to_numpy(float)
    single = np.diag(p).copy() if m else np.zeros(0)
    off = ~np.eye(m, dtype=bool)
    if expected is not None:
        p = np.where(expected | ~off, p, np.nan)  # an unconfirmed cell is no candidate, whatever is stored
    absent = np.isnan(p) & off & (True if expected is None else expected)
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
    out = pd.DataFrame(
        {
            "attribute": names,
            "single": single,
            "multi": np.where(chosen, p[rows, best] if m else 0.0, np.nan),
            "drop": np.where(chosen, best_drop, np.nan),
        }
    )
    # keep None as None: pandas 3's string dtype would make it a truthy NaN
    out.insert(1, "partner", pd.Series(partner, dtype=object))
    out["missing"] = pd.Series(missing, dtype=object)
    return out[["attribute", "partner", "single", "multi", "drop", "missing"]]


def negative_partners(
    matrix: pd.DataFrame, allow_partial: bool = False, expected: np.ndarray | None = None
) -> pd.DataFrame:
    """Per attribute, every partner that lowers it (P[a][b] < P[a][a]), in the sweep's order: the partner
    set of adversarial_multiple (eq. 10-11). Rows decide as in `derive_partners` (complete rows only unless
    `allow_partial`); `partner` holds the set comma-joined (kinds.PARTNER_SEPARATOR, as the store's rows of
    adversarial_multiple do), None where no partner lowers a or the row is undecided; `partners` the tuple."""
    derived = derive_partners(matrix, allow_partial, expected)
    p = matrix.to_numpy(float)
    if expected is not None:
        p = np.where(expected | np.eye(len(p), dtype=bool), p, np.nan)
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


def _ok(trials: pd.DataFrame, kind: str) -> pd.DataFrame:
    trials = trials.drop(columns=[c for c in BIT_COLUMNS if c in trials])  # a filter would copy GBs of bits
    return trials[(trials["kind"] == kind) & (trials["status"] == "ok")]


def select_adversarial(
    trials: pd.DataFrame, partners: pd.DataFrame, selection: str = "per_attribute", kind: str = "adversarial"
) -> pd.DataFrame:
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
    per_cell = adv.groupby(["attribute", "partner", "lambda"], as_index=False, observed=True)[
        ["val_acc", "test_acc"]
    ].mean()
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
        chosen = (
            per_cell.sort_values(["attribute", "val_acc", "lambda"], ascending=[True, False, True])
            .groupby("attribute", as_index=False)
            .head(1)
        )
    else:
        raise ValueError(f"lambda selection {selection!r} is not one of per_attribute, global")
    order = {a: i for i, a in enumerate(partners["attribute"])}
    return chosen.sort_values("attribute", key=lambda s: s.map(order))[cols].reset_index(drop=True)


@dataclass(frozen=True)
class PartnerStatistics:
    """What choosing partners by a rule computes: the argmin partners (`derived`), every ordered pair's
    statistics (`pairs`, pairs.pairs_table), each attribute's majority baseline (`baseline`) and the rule's
    partners with their statistics (`chosen`, choose_partners)."""

    derived: pd.DataFrame
    pairs: pd.DataFrame
    baseline: pd.DataFrame
    chosen: pd.DataFrame


def partner_statistics(
    derived: pd.DataFrame, rows: pd.DataFrame, attributes: list[str], rule, allow_partial: bool = False
) -> PartnerStatistics:
    """The partners of `rule` (a config.PartnersConfig: rule, alpha, correction) with their statistics,
    from the argmin partners `derived` and the rows with per-image bits (Store.stats_rows)."""
    attributes = list(attributes)
    pairs = pairs_table(rows, attributes, rule.alpha, rule.correction)
    baseline = baseline_table(rows, attributes, rule.alpha)
    chosen = choose_partners(derived, pairs, baseline, rule.rule, rule.alpha, allow_partial=allow_partial)
    return PartnerStatistics(derived, pairs, baseline, chosen)


def choose_partners(
    derived: pd.DataFrame,
    pairs: pd.DataFrame,
    baseline: pd.DataFrame,
    rule: str = "argmin",
    alpha: float = 0.05,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """The partners of `rule` with their statistics (PARTNER_STAT_COLUMNS appended to `derived`'s columns).

    `derived`: the argmin partners (derive_partners: attribute, partner, single, multi, drop, missing);
    `pairs`: pairs_table; `baseline`: baseline_table. argmin keeps the derived partners; significant picks,
    per attribute, the most negative drop among the cells whose adjusted p-value is below `alpha` and
    where neither model sits at the majority baseline (a "drop" onto a one-class model is no finding), or
    none. The statistics describe `candidate`: the chosen partner or, where the rule chose none, the
    argmin cell, so a reader sees how close the paper's partner came. As with argmin, only a complete row
    (no `missing` cell) decides, unless `allow_partial`."""
    if rule not in PARTNER_RULES:
        raise ValueError(f"partner rule {rule!r} is not one of {', '.join(PARTNER_RULES)}")
    out = derived.copy()
    argmin = [p if isinstance(p, str) else None for p in out["partner"]]
    if rule == "significant":
        out["partner"] = _most_negative_significant(out, pairs, allow_partial)
    chosen = [p if isinstance(p, str) else None for p in out["partner"]]
    candidate = [p if p is not None else q for p, q in zip(chosen, argmin)]
    stat = pairs.set_index(["attribute", "partner"])
    found = stat.reindex(pd.MultiIndex.from_arrays([out["attribute"], pd.Series(candidate, dtype=object)]))
    has = np.array([p is not None for p in chosen], dtype=bool)
    out["partner"] = pd.Series(chosen, index=out.index, dtype=object)
    out["multi"] = np.where(has, found["multi"].to_numpy(dtype=float), np.nan)
    for col in ("drop", "ci_low", "ci_high", "p_value", "p_adjusted"):
        out[col] = found[col].to_numpy(dtype=float)
    available = found["test"].to_numpy(dtype=object)
    sig = found["significant"].fillna(False).astype(bool).to_numpy()
    # no chosen partner is not a significant one; unknown only where the statistics are unavailable
    out["significant"] = pd.array(
        [None if t == UNAVAILABLE else bool(h and s) for t, h, s in zip(available, has, sig)], dtype="boolean"
    )
    out["n_seeds"] = pd.array(found["n_seeds"].to_numpy(), dtype="Int64")
    out["rule"] = rule
    out["candidate"] = pd.Series(candidate, index=out.index, dtype=object)
    out["test"] = pd.Series([t if isinstance(t, str) else None for t in available], index=out.index, dtype=object)
    out["majority"] = baseline["majority"].reindex(out["attribute"]).to_numpy(dtype=float)
    out["single_above_majority"] = pd.array(
        baseline["single_above_majority"].reindex(out["attribute"]), dtype="boolean"
    )
    return out


def _most_negative_significant(derived: pd.DataFrame, pairs: pd.DataFrame, allow_partial: bool) -> pd.Series:
    """Per attribute of `derived`: the most negative significant drop not at the baseline, or None; ties to
    the partner first in the sweep's order; rows with missing cells undecided unless `allow_partial`."""
    eligible = pairs[
        pairs["significant"].fillna(False).astype(bool)
        & (pairs["drop"] < 0)
        & ~pairs["at_baseline"].fillna(False).astype(bool)
    ]
    order = {a: i for i, a in enumerate(derived["attribute"])}
    best = (
        eligible.assign(_col=eligible["partner"].map(order))
        .sort_values(["attribute", "drop", "_col"])
        .groupby("attribute")
        .head(1)
        .set_index("attribute")["partner"]
    )
    decided = derived["missing"].isna() | (allow_partial & derived["single"].notna())
    return pd.Series(
        [best.get(a) if d else None for a, d in zip(derived["attribute"], decided)], index=derived.index, dtype=object
    )


def significance_summary(
    derived: pd.DataFrame, pairs: pd.DataFrame, baseline: pd.DataFrame, gains: pd.DataFrame | None, alpha: float = 0.05
) -> pd.DataFrame:
    """The report's short table: how many partners each rule names and how many of them are significant,
    how many attributes sit at their majority baseline, how many adversarial gains hold. Columns:
    what, count, of (the number it is out of)."""
    m = len(derived)
    rows = []
    for rule in PARTNER_RULES:
        chosen = choose_partners(derived, pairs, baseline, rule, alpha)
        named = int(chosen["partner"].notna().sum())
        rows.append({"what": f"partners named by the {rule} rule", "count": named, "of": m})
        rows.append(
            {
                "what": "... of which significant after adjustment",
                "count": int(chosen["significant"].fillna(False).astype(bool).sum()),
                "of": named,
            }
        )
    rows.append(
        {
            "what": f"significant cells (p adjusted < {alpha:g}), negative",
            "count": int((pairs["significant"].fillna(False).astype(bool) & (pairs["drop"] < 0)).sum()),
            "of": int(pairs["p_value"].notna().sum()),
        }
    )
    known = baseline["single_above_majority"].notna()
    rows.append(
        {
            "what": "attributes whose single task is not above its majority baseline",
            "count": int((~baseline["single_above_majority"][known].astype(bool)).sum()),
            "of": int(known.sum()),
        }
    )
    for versus in ("single", "multi"):
        g = gains[gains["versus"] == versus] if gains is not None and len(gains) else pd.DataFrame(columns=GAIN_COLUMNS)
        rows.append(
            {
                "what": f"adversarial gains over {versus} that hold (test split)",
                "count": int(g["holds"].fillna(False).astype(bool).sum()),
                "of": int(g["p_value"].notna().sum()),
            }
        )
    return pd.DataFrame(rows, columns=["what", "count", "of"])
