"""`active`: measure a balanced first round, learn the drop matrix's shape, then train where the partners likely are.

The model (fitted on the measured cells only, each weighted by its paired standard error):

    drop[a, b] = mu + r[a] + c[b] + u[a] . v[b] + e[a, b],     e ~ N(0, se[a, b]^2 + s^2)

r[a]: how much attribute a suffers with any partner; c[b]: how much partner b harms any attribute (the
paper's Big_Lips is one very negative c); u . v: a rank-`settings.rank` interaction (partners that hurt
some attributes and not others); s^2: what the model leaves unexplained beyond the measurement noise.
This is the additive-plus-low-rank form of probabilistic matrix factorisation (Salakhutdinov & Mnih, NIPS
2007) with row and column effects, fitted by alternating ridge regressions whose prior variances and s^2
are re-estimated each sweep (empirical Bayes), so a matrix without structure shrinks to its mean. Each
alternating step is a Bayesian linear regression, so every unmeasured cell gets a predictive mean and
variance (the row's and the column's posterior variance, s^2 and the row's typical measurement noise).

Why this model: the surrogate models of Li et al. (TMLR 2023) predict a task's transfer from features of
the task pair; here there are no features, only measured cells, and the dominant effect the paper reports
(one partner hurting most attributes) is exactly a column effect, which a few cells per column estimate.
Matrix completion with uncertainty then lets the choice of the next pairs be a best-arm identification per
row (Bubeck et al. 2009; Jamieson & Nowak 2014): for each row a, with best = min(its most negative measured
drop, 0) (a partner must lower the accuracy), p[a, b] = P(drop[a, b] < best) for each unmeasured b; the
row's evidence P(partner measured) = prod_b (1 - p[a, b]) (the cells taken as independent given the
fit). A row whose evidence reaches `settings.confidence` is decided; each undecided row asks for its most
likely unmeasured partner, a pair counting for both its rows (p[a, b] + p[b, a]), until every row is
decided or the budget is spent. Unexplored columns have wide predictive variances, so they are tried
(exploration) without a separate rule.

Deterministic: the same cells, rounds and settings give the same round (fixed sweeps, seeded start).
"""

from __future__ import annotations

import numpy as np

from aal_sweep.analysis.strategies.base import COMPLETE, CONFIDENT, Cells, Round, Settings, decided_rows, requested

SWEEPS = 30  # alternating ridge sweeps per fit: enough to settle at the sizes benchmarked (docs/screening.md)
_TINY = 1e-12


def plan(m: int, rounds: list[Round], cells: Cells, settings: Settings) -> Round:
    number = len(rounds)
    if number == 0:
        return Round(0, design(m, settings.first_round, settings.seed))
    fit = Fit.of(cells, settings.rank, settings.seed)
    structure = held_out(cells, rounds[-1].pairs, settings.rank, settings.seed)
    asked = requested(rounds)
    open_ = np.ones((m, m), dtype=bool)  # pairs not requested yet, both orders
    np.fill_diagonal(open_, False)
    for i, j in asked:
        open_[i, j] = open_[j, i] = False
    p = fit.p_beats_best(cells)  # P(b beats a's best measured), 0 where measured
    log_rest = np.where(~cells.measured() & ~np.eye(m, dtype=bool), np.log1p(-np.minimum(p, 1 - 1e-16)), 0.0)
    p_measured = np.exp(log_rest.sum(axis=1))
    before = decided_rows(rounds)
    decided = []
    for a in range(m):
        if a in before:
            continue
        if not open_[a].any():
            decided.append((a, COMPLETE, float(p_measured[a]), number - 1))
        elif p_measured[a] >= settings.confidence:
            decided.append((a, CONFIDENT, float(p_measured[a]), number - 1))
    undecided = np.ones(m, dtype=bool)
    undecided[list(before) + [d[0] for d in decided]] = False
    # a pair's worth: the chance it holds the partner of each of its rows still undecided
    worth = np.where(undecided[:, None], p, 0.0) + np.where(undecided[None, :], p.T, 0.0)
    worth = np.where(open_, worth, -np.inf)
    wanted: dict[tuple[int, int], float] = {}
    for a in map(int, np.flatnonzero(undecided)):
        if not open_[a].any():
            continue
        b = int(np.argmax(worth[a]))  # first maximum: ties go to the partner first in the sweep's order
        pair = (min(a, b), max(a, b))
        wanted[pair] = max(wanted.get(pair, -np.inf), float(worth[a, b]))
    pairs = sorted(wanted, key=lambda q: (-wanted[q], q))
    return Round(number, tuple(pairs), tuple(decided), structure=structure, extra={"p_measured": p_measured})


def held_out(cells: Cells, last: tuple[tuple[int, int], ...], rank: int, seed: int) -> float | None:
    """How well the model predicted the last round's cells before it measured them: 1 - SSE / SST, SST around
    the mean of the cells it was fitted on, clipped to [0, 1] (None: nothing to score). A held-out score:
    fitted on the same cells, a low-rank term explains noise too (a pure-noise matrix scored 0.2 to 0.4 at
    M = 40 in-sample), so it cannot tell structure from none."""
    if not last:
        return None
    before = Cells(cells.drop.copy(), cells.se.copy())
    i, j = np.array(last).T
    before.drop[i, j] = before.drop[j, i] = np.nan
    got = cells.drop[np.r_[i, j], np.r_[j, i]]
    seen = before.measured()
    keep = ~np.isnan(got)
    if not seen.any() or keep.sum() < 2:
        return None
    predicted = Fit.of(before, rank, seed).mean[np.r_[i, j], np.r_[j, i]]
    sst = float(((got[keep] - before.drop[seen].mean()) ** 2).sum())
    sse = float(((got[keep] - predicted[keep]) ** 2).sum())
    return float(np.clip(1 - sse / sst, 0.0, 1.0)) if sst > 0 else None


def design(m: int, degree: int, seed: int) -> tuple[tuple[int, int], ...]:
    """A balanced first round: each attribute meets `degree` partners (every pair when degree >= M - 1).
    A circulant graph on a seeded random order of the attributes: offsets 1 .. degree // 2 (each a
    Hamiltonian cycle: from degree 2 the design is connected, so every row and column effect is tied to
    the others), plus, for an odd degree, the matching across the order (offset ceil(M / 2); with M odd, the
    attribute left over meets the last one)."""
    if degree >= m - 1:
        return tuple((i, j) for i in range(m) for j in range(i + 1, m))
    order = [int(x) for x in np.random.default_rng(seed).permutation(m)]
    edges = [(order[x], order[(x + k) % m]) for k in range(1, degree // 2 + 1) for x in range(m)]
    if degree % 2:
        half = (m + 1) // 2
        edges += [(order[x], order[x + half]) for x in range(m - half)] + (
            [(order[m - half], order[-1])] if m % 2 else []
        )
    return tuple(sorted({(min(i, j), max(i, j)) for i, j in edges if i != j}))


class Fit:
    """The model fitted to the measured cells: predictive mean and variance of every cell's measured drop."""

    def __init__(self, mean: np.ndarray, var: np.ndarray):
        self.mean, self.var = mean, var

    @classmethod
    def of(cls, cells: Cells, rank: int, seed: int) -> Fit:
        m = cells.m
        obs = cells.measured()
        y = np.where(obs, cells.drop, 0.0)
        n_obs = int(obs.sum())
        if n_obs == 0:
            return cls(np.zeros((m, m)), np.full((m, m), np.inf))
        known = obs & ~np.isnan(cells.se)
        noise = np.where(known, np.nan_to_num(cells.se) ** 2, np.nan)
        fill = float(np.nanmedian(noise[known])) if known.any() else 0.0
        noise = np.where(obs, np.where(known, noise, fill), 0.0)
        # the row's typical noise, for the cells it has not measured (its images, its accuracy level)
        row_noise = np.array([np.median(noise[a, obs[a]]) if obs[a].any() else fill for a in range(m)])
        values = y[obs]
        spread = float(values.var()) if n_obs > 1 else float(values[0] ** 2)
        spread = max(spread, _TINY)
        k = rank
        mu = float(values.mean())
        r, c = np.zeros(m), np.zeros(m)
        u, v = _start(np.where(obs, y - mu, 0.0), obs, k, seed)
        # prior variances of (r, u) and (c, v), re-estimated each sweep: an effect's is the drops' variance; a
        # factor's its square root, so that a product u . v starts on the drops' scale (started on the
        # effects' scale, the factors shrink to zero: the low-rank term is lost at any rank)
        prior_row = np.array([spread] + [np.sqrt(spread)] * k)
        prior_col = prior_row.copy()
        misfit = 0.5 * spread
        ones = np.ones((m, 1))
        for _ in range(SWEEPS):
            w = np.where(obs, 1.0 / (noise + misfit), 0.0)
            x = np.hstack([ones, v])  # row a's regression on its measured columns b: [1, v_b] -> (r_a, u_a)
            theta, cov_row = _ridge(w, x, y - mu - c[None, :], prior_row, obs)
            r, u = theta[:, 0], theta[:, 1:]
            z = np.hstack([ones, u])  # column b's regression on its measured rows a: [1, u_a] -> (c_b, v_b)
            phi, cov_col = _ridge(w.T, z, (y - mu - r[:, None]).T, prior_col, obs.T)
            c, v = phi[:, 0], phi[:, 1:]
            resid = y - r[:, None] - c[None, :] - u @ v.T
            mu = float((w * resid).sum() / max(w.sum(), _TINY))
            resid = np.where(obs, resid - mu, 0.0)
            prior_row = np.maximum((theta**2).mean(0) + np.diagonal(cov_row, axis1=1, axis2=2).mean(0), _TINY * spread)
            prior_col = np.maximum((phi**2).mean(0) + np.diagonal(cov_col, axis1=1, axis2=2).mean(0), _TINY * spread)
            misfit = max(float(((resid**2 - noise) * obs).sum() / n_obs), 1e-6 * spread)
        x, z = np.hstack([ones, v]), np.hstack([ones, u])
        structural = r[:, None] + c[None, :] + u @ v.T
        mean = mu + structural
        var = _quadratic(cov_row, x) + _quadratic(cov_col, z).T + misfit + row_noise[:, None]
        return cls(mean, var)

    def p_beats_best(self, cells: Cells) -> np.ndarray:
        """P(drop[a, b] < best[a]) for each unmeasured cell, best[a] = min(a's most negative measured drop, 0):
        the chance that b, not measured yet, is a's exhaustive partner instead. 0 on measured cells."""
        from scipy.special import ndtr

        m = cells.m
        measured = cells.measured()
        best = np.minimum(np.where(measured, cells.drop, np.inf).min(axis=1), 0.0)
        sd = np.sqrt(np.maximum(self.var, _TINY))
        p = ndtr((best[:, None] - self.mean) / sd)
        p[measured | np.eye(m, dtype=bool)] = 0.0
        return p


def _start(resid: np.ndarray, obs: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Starting factors: the top-k singular pairs of the measured residuals (rescaled for the unmeasured
    cells), by a seeded block power iteration. A small random start lets the empirical-Bayes priors shrink
    the low-rank term to zero before the data can grow it (a fixed point PMF is known for)."""
    m = resid.shape[0]
    if k == 0:
        return np.zeros((m, 0)), np.zeros((m, 0))
    filled = resid / max(obs.mean(), 1.0 / max(obs.size, 1))
    q = np.random.default_rng(seed).standard_normal((m, k))
    for _ in range(8):
        q, _ = np.linalg.qr(filled.T @ (filled @ q))
    left = filled @ q  # = U S
    norms = np.maximum(np.linalg.norm(left, axis=0), _TINY)
    scale = np.sqrt(norms)
    return left / norms * scale, q * scale


def _ridge(
    w: np.ndarray, x: np.ndarray, t: np.ndarray, prior: np.ndarray, obs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row a: the posterior of beta_a in t[a, b] ~ x[b] . beta_a, weights w[a, b] (measured cells only),
    prior N(0, diag(prior)). Returns the means (M x K) and covariances (M x K x K)."""
    k = x.shape[1]
    t = np.where(obs, t, 0.0)
    # sum_b w[a, b] x[b, i] x[b, j] for every a as one matrix product (M x M by M x K^2): BLAS, not a loop
    a = (w @ (x[:, :, None] * x[:, None, :]).reshape(-1, k * k)).reshape(-1, k, k) + np.diag(1.0 / prior)
    cov = np.linalg.inv(a)
    mean = np.einsum("aij,aj->ai", cov, (w * t) @ x)
    return mean, cov


def _quadratic(cov: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[a, b] = x[b] . cov[a] . x[b]: the variance row a's posterior gives cell (a, b), as one matrix product."""
    k = x.shape[1]
    return cov.reshape(-1, k * k) @ (x[:, :, None] * x[:, None, :]).reshape(-1, k * k).T
