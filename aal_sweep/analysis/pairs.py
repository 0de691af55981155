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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.analysis import stats

PAIR_COLUMNS = ["attribute", "partner", "single", "multi", "drop", "ci_low", "ci_high", "p_value", "p_adjusted",
                "significant", "n_seeds", "single_sd", "multi_sd", "drop_sd", "test", "majority", "at_baseline"]
GAIN_COLUMNS = ["attribute", "partner", "lambda", "versus", "split", "adversarial", "reference", "gain", "ci_low",
                "ci_high", "p_value", "p_adjusted", "holds", "n_seeds", "test"]
UNAVAILABLE = "unavailable"
_CELLS_PER_BLOCK = 512  # cells compared at once: bounds memory at 512 x seeds x n bools per side
Vectors = dict[int, tuple[np.ndarray | None, float]]  # seed -> (bool correctness vector or None, accuracy)


def pairs_table(trials: pd.DataFrame, attributes: list[str], alpha: float = 0.05, correction: str = "holm",
                n_boot: int = stats.N_BOOT, intervals: bool = True) -> pd.DataFrame:
    """One row per ordered pair (a, b), a != b, in the sweep's order, with every statistic (PAIR_COLUMNS).

    p_adjusted is adjusted within each attribute's row over the candidates that have a p-value; the
    interval's level is 1 - alpha. A missing cell (no single or no pair result) has NaN everywhere.
    intervals=False skips the one-seed bootstrap (ci_low / ci_high NaN there): choosing partners needs only
    the p-values, and planning should not pay for resampling."""
    ok = trials[trials["status"] == "ok"]
    single = _vectors(ok[ok["kind"] == "single"], "val", ["attribute"])
    pair = _vectors(ok[ok["kind"] == "pair"], "val", ["attribute", "partner"])
    cells = [(a, b) for a in attributes for b in attributes if a != b]
    comparisons = [(single.get((a,)), pair.get((a, b))) for a, b in cells]
    out = compare(comparisons, 1 - alpha, n_boot if intervals else 0)
    out.insert(0, "attribute", [a for a, _ in cells])
    out.insert(1, "partner", [b for _, b in cells])
    out = out.rename(columns={"base": "single", "other": "multi", "difference": "drop", "base_sd": "single_sd",
                              "other_sd": "multi_sd"})
    out["p_adjusted"] = _adjust_within(out, "attribute", correction)
    out["significant"] = _below(out["p_adjusted"], alpha)
    base = baseline_table(trials, attributes, alpha)
    out["majority"] = out["attribute"].map(base["majority"]).astype(float)
    multi_above = _above(out["multi"], out["n_seeds"], _split_size(ok, "val"), out["majority"], alpha)
    single_above = out["attribute"].map(base["single_above_majority"]).astype("boolean")
    out["at_baseline"] = (~single_above | ~multi_above).where(out["majority"].notna() & out["multi"].notna())
    return out[PAIR_COLUMNS]


def baseline_table(trials: pd.DataFrame, attributes: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per attribute (index): majority (its validation split's majority-class rate, from the rows'
    `val_majority`), single (mean single-task accuracy over seeds), n_seeds, p_above (one-sided exact
    binomial: single accuracy above the majority rate, seeds pooled) and single_above_majority (p_above
    < alpha). NaN / NA where the store lacks the rate (results written before it was recorded)."""
    ok = trials[trials["status"] == "ok"]
    rates = ok.groupby("attribute")["val_majority"].first() if "val_majority" in ok else pd.Series(dtype=float)
    single = ok[ok["kind"] == "single"].groupby("attribute")["val_acc"].agg(["mean", "count"])
    out = pd.DataFrame(index=pd.Index(list(attributes), name="attribute"))
    out["majority"] = rates.reindex(out.index).astype(float)
    out["single"] = single["mean"].reindex(out.index).astype(float)
    out["n_seeds"] = single["count"].reindex(out.index).astype("Int64")
    n_val = _split_size(ok, "val")
    out["p_above"] = stats.above_rate(np.round(out["single"] * out["n_seeds"].astype(float) * n_val),
                                      out["n_seeds"].astype(float) * n_val, out["majority"])
    out["single_above_majority"] = _below(out["p_above"], alpha)
    return out


def adversarial_gains(trials: pd.DataFrame, chosen: pd.DataFrame, alpha: float = 0.05, correction: str = "holm",
                      split: str = "test", n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """Does each chosen adversarial run beat a's single-task model, and the pair model it replaces?

    `chosen`: partners.select_adversarial (attribute, partner, lambda). Two rows per attribute (versus
    single | multi) with GAIN_COLUMNS; gain = adversarial - reference. Measured on the test split by
    default: lambda was chosen on validation accuracy, so the validation gain of the chosen lambda is
    biased upwards. p-values are adjusted across attributes (one family per `versus`); `holds` is a
    positive gain whose adjusted p-value is below alpha."""
    ok = trials[trials["status"] == "ok"]
    single = _vectors(ok[ok["kind"] == "single"], split, ["attribute"])
    pair = _vectors(ok[ok["kind"] == "pair"], split, ["attribute", "partner"])
    adv = _vectors(ok[ok["kind"] == "adversarial"], split, ["attribute", "partner", "lambda"])
    rows, comparisons = [], []
    for versus in ("single", "multi"):
        for a, b, lam in zip(chosen["attribute"], chosen["partner"], chosen["lambda"]):
            reference = single.get((a,)) if versus == "single" else pair.get((a, b))
            comparisons.append((reference, adv.get((a, b, lam))))
            rows.append({"attribute": a, "partner": b, "lambda": lam, "versus": versus, "split": split})
    if not rows:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    out = pd.concat([pd.DataFrame(rows), compare(comparisons, 1 - alpha, n_boot)], axis=1)
    out = out.rename(columns={"base": "reference", "other": "adversarial", "difference": "gain"})
    out["p_adjusted"] = _adjust_within(out, "versus", correction)
    out["holds"] = (_below(out["p_adjusted"], alpha) & (out["gain"] > 0)).astype("boolean")
    return out[GAIN_COLUMNS]


def compare(comparisons: list[tuple[Vectors | None, Vectors | None]], level: float = 0.95,
            n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """Per (base, other) pair of per-seed vectors: base, other (mean accuracy over seeds), difference
    other - base, ci_low, ci_high, p_value, n_seeds, base_sd, other_sd, drop_sd (spreads across seeds, NaN
    with one), test. Seeds are paired by number; cells are batched.
    n_boot=0: no bootstrap, so one-seed cells get no interval."""
    k = len(comparisons)
    res = {c: np.full(k, np.nan) for c in ("base", "other", "difference", "ci_low", "ci_high", "p_value", "base_sd",
                                           "other_sd", "drop_sd")}
    res["n_seeds"] = np.zeros(k, dtype=np.int64)
    test = np.full(k, None, dtype=object)
    groups: dict[int, list[int]] = {}
    for i, (base, other) in enumerate(comparisons):
        if not base or not other:
            continue
        seeds = sorted(set(base) & set(other))
        if not seeds:
            continue
        res["n_seeds"][i] = len(seeds)
        b = [base[s][0] for s in seeds]
        o = [other[s][0] for s in seeds]
        if any(v is None for v in b + o) or len({len(v) for v in b + o}) != 1:
            # no vectors: the accuracies still give the difference, but nothing to test it with
            test[i] = UNAVAILABLE
            acc_b, acc_o = (np.array([m[s][1] for s in seeds], dtype=float) for m in (base, other))
            res["base"][i], res["other"][i], res["difference"][i] = acc_b.mean(), acc_o.mean(), (acc_o - acc_b).mean()
            if len(seeds) > 1:  # the spread across seeds of each accuracy and of the drop
                res["base_sd"][i], res["other_sd"][i] = acc_b.std(ddof=1), acc_o.std(ddof=1)
                res["drop_sd"][i] = (acc_o - acc_b).std(ddof=1)
            continue
        groups.setdefault(len(seeds), []).append(i)
    for s, idx in groups.items():
        for start in range(0, len(idx), _CELLS_PER_BLOCK):
            block = idx[start:start + _CELLS_PER_BLOCK]
            _compare_block(comparisons, block, s, level, n_boot, res)
            test[block] = "mcnemar" if s == 1 else "seeds-t"
    out = pd.DataFrame(res)
    out["test"] = test
    out["n_seeds"] = out["n_seeds"].astype("Int64").where(out["n_seeds"] > 0)
    return out


def _compare_block(comparisons, block: list[int], n_seeds: int, level: float, n_boot: int, res: dict) -> None:
    """Fill `res` at `block`: cells that all have `n_seeds` paired seeds and correctness vectors."""
    def stacked(side: int) -> np.ndarray:  # (K, S, n), seeds paired by number
        return np.stack([np.stack([comparisons[i][side][s][0]
                                   for s in sorted(set(comparisons[i][0]) & set(comparisons[i][1]))])
                         for i in block])

    base, other = stacked(0), stacked(1)
    n = base.shape[2]
    acc_base, acc_other = base.sum(axis=2) / n, other.sum(axis=2) / n  # (K, S): each seed's accuracy
    per_seed = acc_other - acc_base
    res["base"][block], res["other"][block] = acc_base.mean(axis=1), acc_other.mean(axis=1)
    if n_seeds == 1:
        b = (base[:, 0] & ~other[:, 0]).sum(axis=1)  # discordant counts: all the one-seed statistics need
        c = (~base[:, 0] & other[:, 0]).sum(axis=1)
        res["difference"][block] = per_seed[:, 0]
        if n_boot:
            _, res["ci_low"][block], res["ci_high"][block] = stats.bootstrap_ci_counts(b, c, n, level, n_boot)
        res["p_value"][block] = stats.mcnemar_counts(b, c)
        return
    # S x the seed-averaged per-image difference, in small integers: no float copy of (K, S, n)
    diff = other.sum(axis=1, dtype=np.int16) - base.sum(axis=1, dtype=np.int16)
    image_var = stats.image_variance(diff) / n_seeds ** 2
    mean, lo, hi, p, _ = stats.seed_test(per_seed, image_var, level)
    res["difference"][block], res["ci_low"][block], res["ci_high"][block], res["p_value"][block] = mean, lo, hi, p
    res["drop_sd"][block] = per_seed.std(axis=1, ddof=1)
    res["base_sd"][block] = acc_base.std(axis=1, ddof=1)
    res["other_sd"][block] = acc_other.std(axis=1, ddof=1)


def _vectors(rows: pd.DataFrame, split: str, keys: list[str]) -> dict[tuple, Vectors]:
    """{key: {seed: (bool vector or None, accuracy)}} from the rows' packed `<split>_correct` and
    `<split>_acc` (None: no vector recorded)."""
    col, n_col = f"{split}_correct", f"n_{split}"
    out: dict[tuple, Vectors] = {}
    blobs = rows[col] if col in rows else pd.Series([None] * len(rows), index=rows.index)
    for key, seed, blob, n, acc in zip(zip(*(rows[k] for k in keys)), rows["seed"], blobs, rows[n_col],
                                       rows[f"{split}_acc"]):
        vec = stats.unpack(blob, int(n)) if isinstance(blob, (bytes, bytearray)) and not pd.isna(n) else None
        out.setdefault(tuple(key), {})[int(seed)] = (vec, float(acc))
    return out


def _adjust_within(table: pd.DataFrame, family: str, correction: str) -> np.ndarray:
    out = np.full(len(table), np.nan)
    for _, idx in table.groupby(family, sort=False).indices.items():
        out[idx] = stats.adjust(table["p_value"].to_numpy()[idx], correction)
    return out


def _below(p: pd.Series, alpha: float) -> pd.Series:
    """p < alpha as a nullable bool: NA where p is unknown."""
    p = pd.Series(p, dtype=float)
    return pd.Series(p.to_numpy() < alpha, index=p.index, dtype="boolean").where(p.notna())


def _above(acc: pd.Series, n_seeds: pd.Series, n: float, rate: pd.Series, alpha: float) -> pd.Series:
    """Is a model's accuracy (mean over n_seeds seeds of n images) significantly above `rate`? NA: unknown."""
    total = pd.Series(n_seeds, dtype=float).to_numpy() * n
    p = stats.above_rate(np.round(pd.Series(acc, dtype=float).to_numpy() * total), total,
                         pd.Series(rate, dtype=float).to_numpy())
    return _below(pd.Series(p, index=acc.index), alpha)


def _split_size(rows: pd.DataFrame, split: str) -> float:
    """The number of images of a split (every row of a sweep has the same); NaN when no row says."""
    n = rows[f"n_{split}"].dropna() if f"n_{split}" in rows else pd.Series(dtype=float)
    return float(n.iloc[0]) if len(n) else np.nan
