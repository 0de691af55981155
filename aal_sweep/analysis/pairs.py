"""Paired statistics of every pair cell and adversarial gain: the store's rows -> tables (drop, interval, p-values).

Pure pandas on top of `aal_sweep.analysis.stats`; imports neither torch nor Ray. Choosing partners from
these tables is aal_sweep.analysis.partners.

    pairs_table(trials, attributes)                one row per ordered pair (a, b): drop of a with b
    baseline_table(trials, attributes)             per attribute: majority-class rate, single above it?
    adversarial_gains(trials, chosen)              does the adversarial run beat single / pair (test split)

The drop of a cell is measured on the validation images, where the protocol measures it. Seed s of the
pair trial is paired with seed s of a's single trial; a cell uses the seeds both have (`n_seeds`).
Statistics need the rows' `val_correct` / `test_correct` vectors: where a cell lacks one (results written
before they were stored) its drop is still the accuracy difference but `test` says "unavailable" and
ci_low, ci_high, p_value, p_adjusted and significant are empty.

Every statistic is computed for all cells at once, from counts: popcounts of the packed bits
(analysis.bits), never one Python step per cell, so a 1,000-attribute matrix (999,000 cells) takes seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.analysis import stats
from aal_sweep.analysis.bits import Packed

PAIR_COLUMNS = [
    "attribute",
    "partner",
    "single",
    "multi",
    "drop",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "n_seeds",
    "single_sd",
    "multi_sd",
    "drop_sd",
    "drop_se",
    "test",
    "majority",
    "at_baseline",
]
GAIN_COLUMNS = [
    "attribute",
    "partner",
    "lambda",
    "versus",
    "split",
    "adversarial",
    "reference",
    "gain",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "holds",
    "n_seeds",
    "test",
]
UNAVAILABLE = "unavailable"
BIT_COLUMNS = ["val_correct", "test_correct"]  # the wide columns: never copied by a filter here


def pairs_table(
    trials: pd.DataFrame, attributes: list[str], alpha: float = 0.05, correction: str = "holm"
) -> pd.DataFrame:
    """One row per ordered pair (a, b), a != b, in the sweep's order, with every statistic (PAIR_COLUMNS).

    p_adjusted is adjusted within each attribute's row over the candidates that have a p-value; the
    interval's level is 1 - alpha. A missing cell (no single or no pair result) has NaN everywhere."""
    attributes = list(attributes)
    rows = _narrow(trials)
    m = len(attributes)
    ok = (rows["status"] == "ok").to_numpy()
    kind = rows["kind"].to_numpy(dtype=object)
    a_code = _codes(rows["attribute"], attributes)
    b_code = _codes(rows["partner"], attributes)
    seeds, s_code = _seed_codes(rows["seed"])
    # dense (attribute[, partner], seed) -> row position tables: a 1,000-attribute sweep is 8 MB per seed
    single_at = np.full((m, len(seeds)), -1, dtype=np.int64)
    pair_at = np.full((m, m, len(seeds)), -1, dtype=np.int64)
    pos = np.arange(len(rows))
    sel = ok & (kind == "single") & (a_code >= 0)
    single_at[a_code[sel], s_code[sel]] = pos[sel]  # a repeated key keeps its last row, as before
    sel = ok & (kind == "pair") & (a_code >= 0) & (b_code >= 0)
    pair_at[a_code[sel], b_code[sel], s_code[sel]] = pos[sel]
    ia, ib = np.nonzero(~np.eye(m, dtype=bool))  # the ordered pairs in the sweep's (row-major) order
    out = compare(trials, "val", single_at[ia], pair_at[ia, ib], 1 - alpha)
    names = np.array(attributes, dtype=object)
    out.insert(0, "attribute", names[ia])
    out.insert(1, "partner", names[ib])
    out = out.rename(
        columns={
            "base": "single",
            "other": "multi",
            "difference": "drop",
            "base_sd": "single_sd",
            "other_sd": "multi_sd",
            "se": "drop_se",
        }
    )
    out["p_adjusted"] = _adjust_within(out["p_value"].to_numpy(), ia, correction)
    out["significant"] = _below(out["p_adjusted"], alpha)
    base = baseline_table(rows, attributes, alpha)
    # per-attribute values spread by position (ia), not by name: no hashing of a million strings
    out["majority"] = base["majority"].to_numpy(dtype=np.float64)[ia]
    n_val = _attribute_sizes(rows[ok], attributes, "val")[ia]
    multi_above = _above(out["multi"], out["n_seeds"], n_val, out["majority"], alpha)
    single_above = pd.Series(base["single_above_majority"].array[ia], index=out.index, dtype="boolean")
    out["at_baseline"] = (~single_above | ~multi_above).where(out["majority"].notna() & out["multi"].notna())
    return out[PAIR_COLUMNS]


def drop_se_matrix(pairs: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """M x M: each drop's standard error (`pairs_table`'s drop_se), row = attribute, column = partner, NaN
    on the diagonal and where unknown: what `matrix --metric drop_se` prints and a measured screening reads."""
    se = pairs.pivot(index="attribute", columns="partner", values="drop_se").reindex(
        index=attributes, columns=attributes
    )
    se.index.name = "attribute"
    return se


def baseline_table(trials: pd.DataFrame, attributes: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per attribute (index): majority (its validation split's majority-class rate, from the rows'
    `val_majority`), single (mean single-task accuracy over seeds), n_seeds, p_above (one-sided exact
    binomial: single accuracy above the majority rate, seeds pooled) and single_above_majority (p_above
    < alpha). NaN / NA where the store lacks the rate (results written before it was recorded)."""
    trials = _narrow(trials)
    ok = trials[trials["status"] == "ok"]
    rates = (
        ok.groupby("attribute", observed=True)["val_majority"].first()
        if "val_majority" in ok
        else pd.Series(dtype=float)
    )
    single = ok[ok["kind"] == "single"].groupby("attribute", observed=True)["val_acc"].agg(["mean", "count"])
    out = pd.DataFrame(index=pd.Index(list(attributes), name="attribute"))
    out["majority"] = rates.reindex(out.index).astype(float)
    out["single"] = single["mean"].reindex(out.index).astype(float)
    out["n_seeds"] = single["count"].reindex(out.index).astype("Int64")
    n_val = _attribute_sizes(ok, attributes, "val")
    out["p_above"] = stats.above_rate(
        np.round(out["single"] * out["n_seeds"].astype(float) * n_val),
        out["n_seeds"].astype(float) * n_val,
        out["majority"],
    )
    out["single_above_majority"] = _below(out["p_above"], alpha)
    return out


def adversarial_gains(
    trials: pd.DataFrame, chosen: pd.DataFrame, alpha: float = 0.05, correction: str = "holm", split: str = "test"
) -> pd.DataFrame:
    """Does each chosen adversarial run beat a's single-task model, and the pair model it replaces?

    `chosen`: partners.select_adversarial (attribute, partner, lambda). Two rows per attribute (versus
    single | multi) with GAIN_COLUMNS; gain = adversarial - reference. Measured on the test split by
    default: lambda was chosen on validation accuracy, so the validation gain of the chosen lambda is
    biased upwards. p-values are adjusted across attributes (one family per `versus`); `holds` is a
    positive gain whose adjusted p-value is below alpha."""
    if not len(chosen):
        return pd.DataFrame(columns=GAIN_COLUMNS)
    rows = _narrow(trials)
    ok = rows["status"].to_numpy() == "ok"
    seeds, s_code = _seed_codes(rows["seed"])
    a, b, lam = (chosen[c].tolist() for c in ("attribute", "partner", "lambda"))
    single = _lookup(rows, ok, "single", ["attribute"], s_code, len(seeds), [(x,) for x in a])
    pair = _lookup(rows, ok, "pair", ["attribute", "partner"], s_code, len(seeds), list(zip(a, b)))
    adv = _lookup(rows, ok, "adversarial", ["attribute", "partner", "lambda"], s_code, len(seeds), list(zip(a, b, lam)))
    k = len(a)
    table = pd.DataFrame(
        {
            "attribute": a * 2,
            "partner": b * 2,
            "lambda": lam * 2,
            "versus": ["single"] * k + ["multi"] * k,
            "split": split,
        }
    )
    stat = compare(trials, split, np.vstack([single, pair]), np.vstack([adv, adv]), 1 - alpha)
    out = pd.concat([table, stat], axis=1)
    out = out.rename(columns={"base": "reference", "other": "adversarial", "difference": "gain"})
    out["p_adjusted"] = _adjust_within(out["p_value"].to_numpy(), np.repeat([0, 1], k), correction)
    out["holds"] = (_below(out["p_adjusted"], alpha) & (out["gain"] > 0)).astype("boolean")
    return out[GAIN_COLUMNS]


def compare(
    trials: pd.DataFrame, split: str, base_at: np.ndarray, other_at: np.ndarray, level: float = 0.95
) -> pd.DataFrame:
    """Per cell k: the rows base_at[k, s] and other_at[k, s] of `trials` (positions; -1: none) are the
    base and the other model of seed s. Returns base, other (mean accuracy over the seeds both have),
    difference other - base, ci_low, ci_high, p_value, n_seeds, base_sd, other_sd, drop_sd (spreads
    across seeds, NaN with one), se (the difference's standard error: images and seeds, as the test uses)
    and test, from `<split>_correct` where every row of the cell has a vector
    of its row's n (the images labelled for its attribute), else from `<split>_acc` (test "unavailable": no
    interval, no p-value)."""
    k = len(base_at)
    res = {
        c: np.full(k, np.nan)
        for c in ("base", "other", "difference", "ci_low", "ci_high", "p_value", "base_sd", "other_sd", "drop_sd", "se")
    }
    test = np.full(k, None, dtype=object)
    both = (base_at >= 0) & (other_at >= 0)
    n_seeds = both.sum(axis=1)
    # the seeds both have, moved to the front in seed order: cell k uses columns [0, n_seeds[k])
    order = np.argsort(~both, axis=1, kind="stable")
    base_at, other_at = np.take_along_axis(base_at, order, 1), np.take_along_axis(other_at, order, 1)
    rows = _narrow(trials)
    acc = rows[f"{split}_acc"].to_numpy(dtype=np.float64)
    # a row's n is the images labelled for its attribute: the split's size, unless labels are missing (the
    # table format), when each attribute has its own; a cell's two models measure one attribute, one n
    sizes = rows[f"n_{split}"].to_numpy(dtype=np.float64) if f"n_{split}" in rows else np.full(len(rows), np.nan)
    col = f"{split}_correct"
    packed = {}
    if col in trials:
        for n in np.unique(sizes[np.isfinite(sizes) & (sizes > 0)]):
            bits = Packed.of(trials[col], int(n))
            packed[n] = (bits, bits.has & (sizes == n))
    for s in np.unique(n_seeds[n_seeds > 0]):
        cells = np.flatnonzero(n_seeds == s)
        bp, op = base_at[cells, :s], other_at[cells, :s]
        cell_n = sizes[bp[:, 0]]
        with_bits = np.zeros(len(cells), dtype=bool)
        for n, (bits, has) in packed.items():
            sel = (cell_n == n) & has[bp].all(axis=1) & has[op].all(axis=1)
            if sel.any():
                _from_bits(cells[sel], bits, bp[sel], op[sel], int(n), level, res)
                test[cells[sel]] = "mcnemar" if s == 1 else "seeds-t"
                with_bits |= sel
        _from_accuracies(cells[~with_bits], acc[bp[~with_bits]], acc[op[~with_bits]], res)
        test[cells[~with_bits]] = UNAVAILABLE
    out = pd.DataFrame(res)
    out["n_seeds"] = pd.array(np.where(n_seeds > 0, n_seeds, 0), dtype="Int64")
    out["n_seeds"] = out["n_seeds"].where(n_seeds > 0)
    out["test"] = test
    return out


def _from_accuracies(cells: np.ndarray, acc_b: np.ndarray, acc_o: np.ndarray, res: dict) -> None:
    """Cells without vectors: the accuracies still give the difference, but nothing to test it with."""
    if not len(cells):
        return
    res["base"][cells], res["other"][cells] = acc_b.mean(axis=1), acc_o.mean(axis=1)
    res["difference"][cells] = (acc_o - acc_b).mean(axis=1)
    if acc_b.shape[1] > 1:  # the spread across seeds of each accuracy and of the drop
        res["base_sd"][cells], res["other_sd"][cells] = acc_b.std(axis=1, ddof=1), acc_o.std(axis=1, ddof=1)
        res["drop_sd"][cells] = (acc_o - acc_b).std(axis=1, ddof=1)


def _from_bits(
    cells: np.ndarray, bits: Packed, bp: np.ndarray, op: np.ndarray, n: int, level: float, res: dict
) -> None:
    """Cells whose every seed has vectors; bp, op: (K, S) row positions, seeds paired by column."""
    s = bp.shape[1]
    ones_b = _ones(bits, bp)
    if s == 1 and 4 * len(op) > len(bits.has) and np.bincount(op[:, 0], minlength=1).max() == 1:
        # a whole matrix: each pair row is the other side of one cell; count it in one pass over the bits
        partner = np.full(len(bits.has), -1, dtype=np.int64)
        partner[op[:, 0]] = bp[:, 0]
        ones_all, both_all = bits.scan(partner)
        ones_o, right_both = ones_all[op], both_all[op[:, 0]]
    else:
        ones_o, right_both = _ones(bits, op), None
    acc_base, acc_other = ones_b / n, ones_o / n  # (K, S): each seed's accuracy
    per_seed = acc_other - acc_base
    res["base"][cells], res["other"][cells] = acc_base.mean(axis=1), acc_other.mean(axis=1)
    if s == 1:
        right_both = bits.both(bp[:, 0], op[:, 0]) if right_both is None else right_both
        b = ones_b[:, 0] - right_both  # only the base is right
        c = ones_o[:, 0] - right_both  # only the other is right
        res["difference"][cells] = per_seed[:, 0]
        res["ci_low"][cells], res["ci_high"][cells] = stats.bootstrap_interval(b, c, n, level)
        res["p_value"][cells] = stats.mcnemar_counts(b, c)
        # per-image differences are +1 (c images), -1 (b) or 0: their sum is c - b, their squares' sum b + c
        res["se"][cells] = np.sqrt(stats.image_variance_of_sums(c - b, b + c, n))
        return
    # D_i = sum over seeds of (other right - base right) on image i; sum_i D_i and sum_i D_i^2 from
    # popcounts: sum_i x_s x_t for x = other - base expands into four ANDs of two rows
    total = (ones_o - ones_b).sum(axis=1)
    squares = np.zeros(len(cells), dtype=np.int64)
    for i in range(s):
        squares += ones_o[:, i] + ones_b[:, i] - 2 * bits.both(op[:, i], bp[:, i])
        for j in range(i + 1, s):
            cross = (
                bits.both(op[:, i], op[:, j])
                - bits.both(op[:, i], bp[:, j])
                - bits.both(bp[:, i], op[:, j])
                + bits.both(bp[:, i], bp[:, j])
            )
            squares += 2 * cross
    image_var = stats.image_variance_of_sums(total, squares, n) / s**2
    mean, lo, hi, p, _ = stats.seed_test(per_seed, image_var, level)
    res["se"][cells] = np.sqrt(image_var + per_seed.var(axis=1, ddof=1) / s)  # seed_test's variance
    res["difference"][cells], res["ci_low"][cells], res["ci_high"][cells], res["p_value"][cells] = mean, lo, hi, p
    res["drop_sd"][cells] = per_seed.std(axis=1, ddof=1)
    res["base_sd"][cells] = acc_base.std(axis=1, ddof=1)
    res["other_sd"][cells] = acc_other.std(axis=1, ddof=1)


def _ones(bits: Packed, at: np.ndarray) -> np.ndarray:
    """Images right per row of `at` (K, S), each distinct row counted once (a single row serves M - 1 cells)."""
    unique, inverse = np.unique(at, return_inverse=True)
    return bits.ones(unique)[inverse].reshape(at.shape)


def _narrow(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` without the bit columns: filtering it then never copies the bits (copy-on-write)."""
    return trials.drop(columns=[c for c in BIT_COLUMNS if c in trials])


def _codes(values: pd.Series, names: list[str]) -> np.ndarray:
    """Each value's position in `names`; -1 for anything else (None, a name of another sweep)."""
    return pd.Index(names).get_indexer(values.astype(object).where(values.notna(), None))


def _seed_codes(seeds: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct seeds, sorted; each row's position among them)."""
    values = seeds.to_numpy(dtype=np.int64)
    distinct, code = np.unique(values, return_inverse=True)
    return distinct, code.reshape(-1)


def _lookup(
    rows: pd.DataFrame,
    ok: np.ndarray,
    kind: str,
    keys: list[str],
    s_code: np.ndarray,
    n_seeds: int,
    wanted: list[tuple],
) -> np.ndarray:
    """(len(wanted), n_seeds) row positions of the ok `kind` rows with key `wanted[k]` and seed s; -1: none.

    Each key column becomes codes into the values `wanted` holds, combined into one integer per row: no
    Python object per row (a 1,000-attribute store has a million pair rows)."""
    out = np.full((len(wanted), n_seeds), -1, dtype=np.int64)
    sel = np.flatnonzero(ok & (rows["kind"] == kind).to_numpy(dtype=bool, na_value=False))
    if not len(sel) or not len(wanted):
        return out
    row_key, want_key = np.zeros(len(sel), np.int64), np.zeros(len(wanted), np.int64)
    for j, k in enumerate(keys):
        asked = pd.Series([w[j] for w in wanted], dtype=object)
        values = pd.Index(asked.unique())
        codes = _codes_in(rows[k].iloc[sel], values)
        row_key = np.where((row_key < 0) | (codes < 0), -1, row_key * len(values) + codes)
        want_key = want_key * len(values) + values.get_indexer(asked)
    found = row_key >= 0
    row_key, sel = row_key[found] * n_seeds + s_code[sel[found]], sel[found]
    # a repeated key keeps its last row, as before: the first of each key in reversed order
    keys_seen, first = np.unique(row_key[::-1], return_index=True)
    at = sel[::-1][first]
    for s in range(n_seeds):
        probe = want_key * n_seeds + s
        pos = np.minimum(np.searchsorted(keys_seen, probe), max(len(keys_seen) - 1, 0))
        hit = (keys_seen[pos] == probe) if len(keys_seen) else np.zeros(len(probe), bool)
        out[:, s] = np.where(hit, at[pos] if len(at) else -1, -1)
    return out


def _codes_in(column: pd.Series, values: pd.Index) -> np.ndarray:
    """Each value's position in `values`, -1 for any other (and missing): on a categorical column, through
    its categories (a few thousand) instead of its million rows."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        lut = values.get_indexer(column.cat.categories.astype(object))
        codes = column.cat.codes.to_numpy()
        return np.where(codes >= 0, lut[codes], -1)
    codes = values.get_indexer(column.astype(object))
    return np.where(column.notna().to_numpy(), codes, -1)


def _adjust_within(p: np.ndarray, family: np.ndarray, correction: str) -> np.ndarray:
    """p adjusted within each family (`family[i]`: the code of p[i]'s family, e.g. its attribute)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(len(p), np.nan)
    order = np.argsort(family, kind="stable")
    bounds = np.flatnonzero(np.diff(family[order])) + 1
    for idx in np.split(order, bounds) if len(p) else []:
        out[idx] = stats.adjust(p[idx], correction)
    return out


def _below(p: pd.Series, alpha: float) -> pd.Series:
    """p < alpha as a nullable bool: NA where p is unknown."""
    p = pd.Series(p, dtype=float)
    return pd.Series(p.to_numpy() < alpha, index=p.index, dtype="boolean").where(p.notna())


def _above(acc: pd.Series, n_seeds: pd.Series, n: float | np.ndarray, rate: pd.Series, alpha: float) -> pd.Series:
    """Is a model's accuracy (mean over n_seeds seeds of n images) significantly above `rate`? NA: unknown."""
    total = pd.Series(n_seeds, dtype=float).to_numpy() * n
    p = stats.above_rate(
        np.round(pd.Series(acc, dtype=float).to_numpy() * total), total, pd.Series(rate, dtype=float).to_numpy()
    )
    return _below(pd.Series(p, index=acc.index), alpha)


def _attribute_sizes(ok: pd.DataFrame, attributes: list[str], split: str) -> np.ndarray:
    """Per attribute: its labelled images of the split (every row of an attribute has the same; the split's
    size unless labels are missing); the split's size where no row of it says."""
    col = f"n_{split}"
    if col not in ok:
        return np.full(len(attributes), np.nan)
    per = ok.dropna(subset=[col]).groupby("attribute", observed=True)[col].first()
    return per.reindex(list(attributes)).astype(float).fillna(_split_size(ok, split)).to_numpy()


def _split_size(rows: pd.DataFrame, split: str) -> float:
    """The number of images of a split (every row of a sweep has the same); NaN when no row says."""
    n = rows[f"n_{split}"].dropna() if f"n_{split}" in rows else pd.Series(dtype=float)
    return float(n.iloc[0]) if len(n) else np.nan
