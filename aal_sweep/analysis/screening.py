"""A screened pair phase: estimates of every ordered pair's effect, candidates to confirm, agreement with exhaustive.

    est = label_correlation(index.labels["train"], attributes)          # or lookahead / short_scores
    cand = candidates(est, attributes, k=2, rule="adaptive")             # per attribute, most negative first
    pairs = confirmation_pairs(cand, attributes)                         # the full pair trials to train
    agreement(screened_partners, exhaustive_partners, trained, est, matrix_drops(P), (n_s, n_e), (t_s, t_e))

Every estimator returns the same long table (ESTIMATE_COLUMNS, one row per ordered pair and seed): `score` is
the estimated effect of `partner` b on `attribute` a, negative = b hurts a, in the direction of the pair
matrix's drop P[a][b] - P[a][a] (its scale is the estimator's own: only ranks are compared). `cost` is
the seconds of compute behind the row: an estimator's rows of one seed sum to its cost (0 for
label_correlation). Pure numpy / pandas / scipy; no torch, no Ray. docs/screening.md says what each measures.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from aal_sweep.config import CONFIRM_RULES
from aal_sweep.errors import AalError

ESTIMATE_COLUMNS = ["estimator", "attribute", "partner", "score", "seed", "cost"]
ESTIMATE_SCHEMA = pa.schema(
    [
        ("estimator", pa.string()),  # one of config.PAIR_ESTIMATORS
        ("attribute", pa.string()),  # a: the attribute whose accuracy the partner affects
        ("partner", pa.string()),  # b
        ("score", pa.float64()),  # estimated effect of b on a; negative = b hurts a
        ("seed", pa.int64()),  # the training seed behind the estimate; null where none (label_correlation)
        ("cost", pa.float64()),  # seconds of compute behind this row; a seed's rows sum to the estimator's cost
    ]
)
CANDIDATE_COLUMNS = ["attribute", "partner", "score", "rank"]
# adaptive: a candidate after the best is confirmed while its score is within this many robust standard
# deviations of the attribute's scores (1.4826 MAD) of the best one. Chosen a priori, not on benchmark data.
ADAPTIVE_GAP = 1.0


def estimates_frame(
    estimator: str, attributes: list[str], scores: np.ndarray, seed: int | None = None, cost: float = 0.0
) -> pd.DataFrame:
    """The estimates table of an M x M `scores` matrix (row a, column b; the diagonal is left out); `cost`
    (the estimator's seconds) is shared evenly by its M (M - 1) rows."""
    cells = off_diagonal(attributes, scores, "score")
    return pd.DataFrame(
        {
            "estimator": estimator,
            "attribute": cells["attribute"],
            "partner": cells["partner"],
            "score": cells["score"],
            "seed": pd.array([seed] * len(cells), dtype="Int64"),
            "cost": cost / max(len(cells), 1),
        }
    )


def off_diagonal(attributes: list[str], values: np.ndarray, name: str) -> pd.DataFrame:
    """attribute, partner, `name`: the cells (a, b), a != b, of an M x M matrix, row by row in `attributes` order."""
    m = len(attributes)
    if values.shape != (m, m):
        raise ValueError(f"the matrix must be {m} x {m} (one row and column per attribute), got {values.shape}")
    i, j = np.nonzero(~np.eye(m, dtype=bool))
    names = np.asarray(attributes, dtype=object)
    return pd.DataFrame({"attribute": names[i], "partner": names[j], name: values[i, j].astype(float)})


def estimates_table(estimates: pd.DataFrame) -> pa.Table:
    """`estimates` as an Arrow table of ESTIMATE_SCHEMA (what the results folder stores as Parquet)."""
    return pa.Table.from_pandas(estimates[ESTIMATE_COLUMNS], schema=ESTIMATE_SCHEMA, preserve_index=False)


def label_correlation(labels: np.ndarray, attributes: list[str]) -> pd.DataFrame:
    """The no-training baseline: score(a, b) = U(a | b) - 1, U = I(a; b) / H(a), Theil's uncertainty coefficient.

    U is the share of a's label entropy that b's labels explain (0: independent, 1: b determines a). The
    score says "the less b's labels tell about a, the more b competes for the trunk without helping": it is
    in [-1, 0], most negative for an unrelated partner. A signed correlation is not used: b = not a is the
    same task (phi = -1) and the paper finds Pearson's r unrelated to the drop (Fig. 3). NaN where a is
    constant (H(a) = 0). `labels`: 0/1 [N, M], the training split's; -1 (unknown) leaves the image out of
    every pair with that attribute (each pair is scored on the images labelled for both)."""
    from scipy import special  # here: the queries that import this module need no scipy

    y = np.asarray(labels, dtype=np.float64)
    _, m = y.shape
    if m != len(attributes):
        raise ValueError(f"labels have {m} columns but {len(attributes)} attributes are named")
    known = (y >= 0).astype(np.float64)  # an unknown label (-1, dataset.missing: ignore) counts for no pair
    pos = np.where(known > 0, y, 0.0)
    n = known.T @ known  # [a, b]: images labelled for both
    n11 = pos.T @ pos  # both positive
    pa_n, pb_n = pos.T @ known, known.T @ pos  # a positive (b labelled), b positive (a labelled)
    with np.errstate(divide="ignore", invalid="ignore"):
        joint = np.stack([n - pa_n - pb_n + n11, pb_n - n11, pa_n - n11, n11]) / n  # (00, 01, 10, 11)
        p_a, p_b = pa_n / n, pb_n / n
        pa_ = np.stack([1 - p_a, 1 - p_a, p_a, p_a])  # p(a) of each joint cell
        pb = np.stack([1 - p_b, p_b, 1 - p_b, p_b])
        mutual = special.xlogy(joint, joint).sum(0) - special.xlogy(joint, pa_ * pb).sum(0)
        h = -special.xlogy(p_a, p_a) - special.xlogy(1 - p_a, 1 - p_a)  # a's entropy on the pair's images
        u = np.where((h > 0) & (n > 0), mutual / h, np.nan)
    return estimates_frame("label_correlation", list(attributes), np.clip(u, 0.0, 1.0) - 1.0)


def mean_scores(estimates: pd.DataFrame) -> pd.DataFrame:
    """attribute, partner, score (mean over seeds), n_seeds: the estimates of one estimator per cell."""
    names = estimates["estimator"].dropna().unique()
    if len(names) > 1:
        raise AalError(
            f"estimates of several estimators ({', '.join(map(str, names))}) cannot be ranked "
            f"together; pass the rows of one"
        )
    return (
        estimates.dropna(subset=["score"])
        .groupby(["attribute", "partner"], as_index=False, sort=False)
        .agg(score=("score", "mean"), n_seeds=("score", "size"))
    )


def candidates(
    estimates: pd.DataFrame, attributes: list[str], k: int, rule: str = "top_k", gap: float = ADAPTIVE_GAP
) -> pd.DataFrame:
    """Per attribute, the partners to confirm by full pair trials, most negative estimate first (rank 1).

    top_k: the k lowest scores, whatever their sign (estimators are not calibrated: only ranks count).
    adaptive: at most k; after the best, each next one only while it is within `gap` robust standard
    deviations of the attribute's scores of the best: one stands out -> 1, no separation -> k. Ties go to
    the partner first in `attributes`. A partner without an estimate is never a candidate, except that
    k >= M - 1 is the exhaustive protocol: every partner of every attribute, by either rule."""
    if rule not in CONFIRM_RULES:
        raise AalError(f"confirmation rule {rule!r} is not one of {', '.join(CONFIRM_RULES)}")
    if k < 1:
        raise AalError(f"confirm: K must be at least 1, got {k} (K >= M - 1 trains every pair)")
    order = {a: i for i, a in enumerate(attributes)}
    scores = mean_scores(estimates)
    lookup = {(a, b): s for a, b, s in zip(scores["attribute"], scores["partner"], scores["score"])}
    exhaustive = k >= len(attributes) - 1
    rows = []
    for a in attributes:
        row = sorted(
            ((lookup.get((a, b), np.nan), order[b], b) for b in attributes if b != a),
            key=lambda t: (np.isnan(t[0]), t[0] if not np.isnan(t[0]) else 0.0, t[1]),
        )
        if not exhaustive:
            row = [t for t in row if not np.isnan(t[0])]
            n = adaptive_count(np.array([t[0] for t in row]), k, gap) if rule == "adaptive" else min(k, len(row))
            row = row[:n]
        rows += [(a, b, s, r) for r, (s, _, b) in enumerate(row, 1)]
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS).astype({"score": float, "rank": int})


def adaptive_count(sorted_scores: np.ndarray, k: int, gap: float = ADAPTIVE_GAP) -> int:
    """How many of one attribute's ascending scores the adaptive rule confirms (see `candidates`)."""
    if len(sorted_scores) == 0:
        return 0
    s = np.asarray(sorted_scores, dtype=float)
    spread = 1.4826 * float(np.median(np.abs(s - np.median(s))))
    if spread == 0:  # more than half the scores equal: fall back on the standard deviation
        spread = float(np.std(s))
    if spread == 0:  # every score equal: nothing separates them
        return min(k, len(s))
    return min(k, int(np.sum(s - s[0] <= gap * spread)))


def confirmation_pairs(candidates: pd.DataFrame, attributes: list[str]) -> list[tuple[str, str]]:
    """The unordered pairs the candidates need, each once (one pair trial serves both its attributes), as
    (a, b) with a before b in `attributes`, in that order (as the exhaustive plan lists its pairs)."""
    order = {a: i for i, a in enumerate(attributes)}
    pairs = {
        tuple(sorted((a, b), key=order.__getitem__)) for a, b in zip(candidates["attribute"], candidates["partner"])
    }
    return sorted(pairs, key=lambda p: (order[p[0]], order[p[1]]))


def short_scores(trial_rows: pd.DataFrame, attributes: list[str], epochs: int) -> pd.DataFrame:
    """The `short` estimator: score(a, b) = val acc of a in the pair with b at epoch `epochs` (1-based) minus
    a's single-task val acc at that epoch, per seed (seed s of the pair against seed s of the single).

    From the store's rows (kind, attribute, partner, seed, status, val_acc_by_epoch; train_seconds and
    epochs_run for the cost): ok rows that ran at least `epochs` epochs; pairs trained in full count too.
    A row's cost is its pair trial's training seconds pro rata to `epochs`, halved (the trial's two rows
    share it); the singles' epochs are not counted: the screened protocol trains every single in full."""
    if epochs < 1:
        raise AalError(f"short: epochs must be at least 1, got {epochs}")
    rows = trial_rows[(trial_rows["status"] == "ok") & trial_rows["kind"].isin(("single", "pair"))]
    rows = rows[rows["attribute"].isin(attributes)]
    ran = rows["val_acc_by_epoch"].map(lambda v: v is not None and len(v) >= epochs)
    rows = rows[ran.astype(bool)].copy()
    rows["acc"] = rows["val_acc_by_epoch"].map(lambda v: float(v[epochs - 1]))
    single = rows[rows["kind"] == "single"].groupby(["attribute", "seed"])["acc"].mean()
    pair = rows[(rows["kind"] == "pair") & rows["partner"].isin(attributes)].copy()
    if "train_seconds" in pair and "epochs_run" in pair:
        pair["cost"] = pair["train_seconds"].astype(float) * epochs / pair["epochs_run"].astype(float) / 2
    else:
        pair["cost"] = np.nan
    pair = pair.groupby(["attribute", "partner", "seed"], as_index=False).agg(acc=("acc", "mean"), cost=("cost", "sum"))
    base = single.reindex(pd.MultiIndex.from_frame(pair[["attribute", "seed"]])).to_numpy(float)
    out = pd.DataFrame(
        {
            "estimator": "short",
            "attribute": pair["attribute"].astype(object),
            "partner": pair["partner"].astype(object),
            "score": pair["acc"].to_numpy(float) - base,
            "seed": pd.array(pair["seed"], dtype="Int64"),
            "cost": pair["cost"].to_numpy(float),
        }
    )
    out = out[~np.isnan(base)]
    order = {a: i for i, a in enumerate(attributes)}
    key = out["attribute"].map(order) * len(order) + out["partner"].map(order)
    return out.assign(_k=key).sort_values(["_k", "seed"]).drop(columns="_k").reset_index(drop=True)


def matrix_drops(matrix: pd.DataFrame) -> pd.DataFrame:
    """attribute, partner, drop = P[a][b] - P[a][a] for every off-diagonal cell of a pair matrix (NaN kept)."""
    p = matrix.to_numpy(float)
    return off_diagonal(list(matrix.index), p - np.diag(p)[:, None], "drop")


def agreement(
    screened: pd.DataFrame,
    exhaustive: pd.DataFrame,
    trained: Iterable[tuple[str, str]],
    estimates: pd.DataFrame,
    drops: pd.DataFrame,
    pair_trials: tuple[int, int],
    train_seconds: tuple[float, float],
) -> dict:
    """How far a screened run's partners agree with an exhaustive run's (`aal-sweep agreement`'s JSON).

    `screened`, `exhaustive`: partner tables (attribute, partner or None, significant); `trained`: the pairs
    the screened run trained in full (either order); `estimates`: the screened run's (one estimator);
    `drops`: the exhaustive run's attribute, partner, drop (`matrix_drops`); `pair_trials`, `train_seconds`:
    (screened, exhaustive) pair-phase totals. Shares over an empty set are None (JSON null).

    top1_agreement: share of the exhaustive table's attributes whose screened partner (None = none) is the
    exhaustive one; recall: share of the attributes with an exhaustive partner whose pair with it the screened
    run trained; recall_significant: the same over the attributes whose exhaustive partner is significant;
    spearman: rank correlation of the estimates (mean over seeds) with the measured drops, over the cells
    that have both; cost: screened / exhaustive pair-phase training seconds."""
    from scipy import stats

    pairs = {frozenset(p) for p in trained}
    theirs = dict(zip(screened["attribute"], screened["partner"]))
    ex = exhaustive.reset_index(drop=True)
    mine = [_none(theirs.get(a)) for a in ex["attribute"]]
    truth = [_none(p) for p in ex["partner"]]
    has = [p is not None for p in truth]
    found = [p is not None and frozenset((a, p)) in pairs for a, p in zip(ex["attribute"], truth)]
    significant = [h and _none(s) is not None and bool(s) for h, s in zip(has, ex["significant"])]
    cells = mean_scores(estimates).merge(drops.dropna(subset=["drop"]), on=["attribute", "partner"])
    rho = None
    if len(cells) >= 2 and cells["score"].nunique() > 1 and cells["drop"].nunique() > 1:
        rho = float(stats.spearmanr(cells["score"], cells["drop"]).statistic)
    return {
        "top1_agreement": _share([x == y for x, y in zip(mine, truth)]),
        "recall": _share([f for f, h in zip(found, has) if h]),
        "recall_significant": _share([f for f, s in zip(found, significant) if s]),
        "spearman": rho,
        "pair_trials": {"screened": int(pair_trials[0]), "exhaustive": int(pair_trials[1])},
        "train_seconds": {"screened": float(train_seconds[0]), "exhaustive": float(train_seconds[1])},
        "cost": float(train_seconds[0]) / float(train_seconds[1]) if train_seconds[1] else None,
        "attributes": len(truth),
        "with_partner": int(sum(has)),
        "with_significant_partner": int(sum(significant)),
        "spearman_cells": int(len(cells)),
    }


def _none(value):
    """A cell as its value or None (NaN, pandas' NA and None all mean "none")."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def estimates_key(cfg, attributes) -> str:
    """The name a screened sweep's estimates are stored under (RESULTS/estimates/<key>.parquet): the
    estimator, its setting, the first seed, the attributes and the training hash; any change, new estimates."""
    import hashlib

    p = cfg.pairs
    setting = {"lookahead": f"-every{p.every}", "short": f"-e{min(p.short_epochs, cfg.train.epochs)}"}.get(
        p.estimator, ""
    )
    names = hashlib.sha1("\x1f".join(attributes).encode()).hexdigest()[:6]
    return f"{p.estimator}{setting}-{len(attributes)}attrs-{names}-s{cfg.seeds[0]}-{cfg.training_hash()}"


def confirmed_pairs(estimates: pd.DataFrame, attributes: list[str], k: int, rule: str) -> list[tuple[str, str]]:
    """The pairs a screened sweep trains in full: every attribute's candidates (`candidates`), each pair once."""
    return confirmation_pairs(candidates(estimates, list(attributes), k, rule), list(attributes))


def expected_cells(attributes: list[str], pairs) -> np.ndarray:
    """The M x M mask of the cells the confirmed `pairs` fill (both orders), for partners.derive_partners."""
    index = {a: i for i, a in enumerate(attributes)}
    mask = np.zeros((len(attributes), len(attributes)), dtype=bool)
    for a, b in pairs:
        mask[index[a], index[b]] = mask[index[b], index[a]] = True
    return mask
