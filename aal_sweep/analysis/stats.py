"""Paired statistics of accuracy differences: pure numpy / scipy, no pandas, no torch.

Every comparison here is between two classifiers evaluated on the same images, as 0/1 "correct" vectors
in the split's order (the store keeps them bit-packed: `unpack`). A difference is
`mean(other) - mean(base)`: negative when `other` (e.g. a with partner b) is worse than `base` (a alone).

One seed (S = 1): the interval is a percentile bootstrap over images (the bootstrap distribution's own
quantiles, not a Monte Carlo estimate of them) and the p-value the exact two-sided McNemar test on the
discordant images. Both say only that *these two trained models* differ on the
image population; they cannot see training noise.

Several seeds (S > 1; seed s of one cell is paired with seed s of the other): the estimate is the mean
over seeds; its variance is the sum of
  - the image-level part: the variance of the mean of the seed-averaged per-image differences,
    var_i(D_i) / n: the variance a bootstrap over images (the same images for every seed) estimates,
    computed exactly rather than by resampling, so the p-value carries no Monte Carlo noise, and
  - the seed-level part: var_s(d_s) / S, the spread of the per-seed differences d_s,
and the test is a t test of the mean against 0 with Welch-Satterthwaite degrees of freedom
(df = v^2 (S-1) / v_seed^2, the image part counted as known). The interval is mean +- t * sqrt(v). The sum
counts the seed-by-image interaction twice, so it errs on the side of wide intervals (as Owen's two-way
"pigeonhole" bootstrap does); with few seeds and little seed spread it approaches the image-level test.

    correct = unpack(blob, n)                                  # bool[n]
    d, lo, hi = bootstrap_ci(base[None], other[None])           # vectorised over many cells
    lo, hi = bootstrap_interval(b, c, n)                        # the same from discordant counts
    p = mcnemar(base, other)                                    # exact, two-sided
    adjust(p_row, "holm")                                        # within one family (one matrix row)
"""

from __future__ import annotations

import numpy as np

from aal_sweep.config import CORRECTIONS  # the setting's choices, written once


def _sp():
    """scipy.stats, imported on first use: half a second that the matrix, status and plan never need."""
    from scipy import stats

    return stats


def unpack(blob: bytes | None, n: int) -> np.ndarray | None:
    """The bool vector numpy.packbits (big bit order) wrote; None when nothing was recorded."""
    if blob is None or (isinstance(blob, float) and np.isnan(blob)):
        return None
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n)
    return bits.astype(bool)


def pack(correct: np.ndarray) -> bytes:
    """The store's encoding of a correctness vector (the inverse of `unpack`)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes()


def bootstrap_ci(base: np.ndarray, other: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (row): difference mean(other) - mean(base) and its paired percentile bootstrap interval.

    `base`, `other`: (K, n) bool, row k of one paired with row k of the other, same images."""
    base, other = np.atleast_2d(base).astype(bool), np.atleast_2d(other).astype(bool)
    b = (base & ~other).sum(axis=1)
    c = (~base & other).sum(axis=1)
    n = base.shape[1]
    diff = (c - b) / n if n else np.full(len(b), np.nan)
    return (diff, *bootstrap_interval(b, c, n, level))


def bootstrap_interval(b: np.ndarray, c: np.ndarray, n: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The paired percentile bootstrap interval of a difference of two 0/1 vectors over n images, from
    its discordant counts b (base right only) and c (other right only): the quantiles of the bootstrap
    distribution itself (infinitely many resamples), so no Monte Carlo noise and no seed.

    A resample's difference is D / n with D = C* - B*, (B*, C*) the counts of a multinomial draw of n
    over (b/n, c/n, rest): a sum of n independent values in {-1, 0, +1}, whose first four cumulants are
    known exactly. Its quantile is the Cornish-Fisher expansion in them, put on D's integer lattice with
    a continuity correction. Against the exact distribution (tests/test_stats.py enumerates it) this is
    the exact lattice quantile in about 98% of cells and one lattice step (1/n) off in the rest; the
    2,000-resample Monte Carlo it replaces moved by about two lattice steps between seeds."""
    b, c = np.atleast_1d(np.asarray(b, dtype=np.float64)), np.atleast_1d(np.asarray(c, dtype=np.float64))
    if n == 0 or len(b) == 0:
        return np.full(len(b), np.nan), np.full(len(b), np.nan)
    p_b, p_c = b / n, c / n
    mu, s = p_c - p_b, p_b + p_c  # one image: E[X], E[X^2] (= E[X^4]); E[X^3] = E[X]
    k2 = np.maximum(s - mu**2, 0.0)
    k3 = mu - 3 * mu * s + 2 * mu**3
    k4 = s - 4 * mu**2 - 3 * s**2 + 12 * mu**2 * s - 6 * mu**4
    spread = k2 > 1e-12  # else D is constant (b = c = 0, or every image discordant one way)
    safe = np.where(spread, k2, 1.0)
    g1 = np.where(spread, k3 / np.sqrt(n) / safe**1.5, 0.0)  # skewness and excess kurtosis of D
    g2 = np.where(spread, k4 / n / safe**2, 0.0)
    ends = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        z = _sp().norm.ppf(q)
        w = z + (z**2 - 1) * g1 / 6 + (z**3 - 3 * z) * g2 / 24 - (2 * z**3 - 5 * z) * g1**2 / 36
        x = n * mu + np.sqrt(n * k2) * w
        # the smallest lattice point d with P[D <= d] >= q, P[D <= d] read as the smooth law at d + 1/2
        d = np.where(spread, np.ceil(x - 0.5 - 1e-9), np.round(n * mu))
        ends.append(d / n + 0.0)  # + 0.0: no "-0.00" where the end is zero
    return ends[0], ends[1]


def mcnemar(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p-value per row: a binomial test of the discordant images against 1/2.

    For p = 1/2 the two-sided binomial test (scipy.stats.binomtest) is min(1, 2 * P[X <= min(b, c)]);
    computed here with the vectorised binomial cdf so a 1,000-attribute matrix needs no Python loop.
    No discordant image: p = 1."""
    base, other = np.atleast_2d(base).astype(bool), np.atleast_2d(other).astype(bool)
    b = (base & ~other).sum(axis=1)  # only the base is right
    c = (~base & other).sum(axis=1)  # only the other is right
    return mcnemar_counts(b, c)


def mcnemar_counts(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p-values from discordant counts b (base right only), c (other right only)."""
    b, c = np.asarray(b), np.asarray(c)
    n = b + c
    p = np.minimum(1.0, 2.0 * _sp().binom.cdf(np.minimum(b, c), n, 0.5))
    return np.where(n == 0, 1.0, p)


def image_variance(diff: np.ndarray) -> np.ndarray:
    """Per row of `diff` (K x n per-image differences): the variance of its mean over resampled images,
    var_i / n (plug-in; the limit of the image bootstrap's variance as resamples grow)."""
    diff = np.asarray(diff)
    n = max(diff.shape[1], 1)
    if np.issubdtype(diff.dtype, np.integer):  # from sums of integers: exact, and no float copy of the block
        total = diff.sum(axis=1, dtype=np.int64)
        squares = np.einsum("ij,ij->i", diff.astype(np.int32), diff.astype(np.int32))
        return image_variance_of_sums(total, squares, n)
    return np.asarray(diff, dtype=np.float64).var(axis=1) / n


def image_variance_of_sums(total: np.ndarray, squares: np.ndarray, n: int) -> np.ndarray:
    """`image_variance` of integer per-image differences D_i given only sum_i D_i and sum_i D_i^2 (what
    popcounts of packed bits give): the same numbers, without the per-image vectors."""
    total = np.asarray(total).astype(np.float64)
    squares = np.asarray(squares).astype(np.float64)
    return (squares / n - (total / n) ** 2) / n


def seed_test(per_seed: np.ndarray, image_var: np.ndarray, level: float = 0.95):
    """Mean over seeds, interval and two-sided p-value, combining image- and seed-level variance.

    `per_seed`: (K, S) per-seed differences d_s; `image_var`: (K,) `image_variance` of the seed-averaged
    per-image differences. Returns (mean, ci_low, ci_high, p_value, df). See the module docstring."""
    per_seed = np.asarray(per_seed, dtype=np.float64)
    s = per_seed.shape[1]
    mean = per_seed.mean(axis=1)
    v_seed = per_seed.var(axis=1, ddof=1) / s if s > 1 else np.zeros(len(mean))
    v = image_var + v_seed
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(v_seed > 0, v**2 * (s - 1) / np.where(v_seed > 0, v_seed, 1) ** 2, np.inf)
        se = np.sqrt(v)
        t = np.abs(mean) / se
    p = np.where(v > 0, 2 * _sp().t.sf(t, df), np.where(mean == 0, 1.0, 0.0))
    half = _sp().t.ppf(0.5 + level / 2, df) * se
    return mean, mean - half, mean + half, p, df


def majority_rate(labels: np.ndarray) -> float | None:
    """The share of the more frequent class among 0/1 labels (other values, e.g. -1 = unknown, ignored):
    the accuracy of always predicting the majority class. None when no label is known."""
    labels = np.asarray(labels)
    known = labels[(labels == 0) | (labels == 1)]
    if known.size == 0:
        return None
    p = float(known.mean())
    return max(p, 1.0 - p)


def above_rate(correct: np.ndarray, n: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """One-sided exact binomial p-value that accuracy exceeds `rate` (the majority-class rate).

    `correct` images right of `n`, per row. Used to tell a model that learned something from one that
    predicts the majority class; NaN where the rate is unknown."""
    correct, n, rate = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (correct, n, rate))
    p = np.full(len(correct), np.nan)
    ok = ~np.isnan(rate) & ~np.isnan(correct) & (n > 0)
    # P[X >= k] under Binomial(n, rate) is the sf at k - 1: exactly scipy.stats.binomtest(..., "greater")
    p[ok] = _sp().binom.sf(correct[ok] - 1, n[ok], rate[ok])
    return p


def adjust(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for one family; NaN entries (missing cells) are left out of the family and kept NaN.

    holm: Holm's step-down, controls the family-wise error rate; bh: Benjamini-Hochberg
    (scipy.stats.false_discovery_control), controls the false discovery rate."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction {method!r} is not one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    q = p[ok]
    if method == "bh":
        out[ok] = _sp().false_discovery_control(q, method="bh")
        return out
    m = len(q)
    order = np.argsort(q, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
    adj = np.empty(m)
    adj[order] = np.minimum(stepped, 1.0)
    out[ok] = adj
    return out
