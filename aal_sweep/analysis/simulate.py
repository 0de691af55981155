"""`aal-sweep simulate`: a measured screening strategy run against a complete pair matrix, as if it trained.

    matrix = read_matrix("exhaustive.csv")               # `aal-sweep matrix RESULTS --format csv`
    se = read_matrix("se.csv", like=matrix)              # optional: `aal-sweep matrix RESULTS --metric drop_se`
    out = simulate_matrix(matrix, se, pairs_config)      # pairs_trained, cost, partners, rounds, ...

Each requested pair "measures" its two cells by reading them from the matrix; the strategy code is the
sweep's own (analysis/strategies: `simulate` there), and partners come from the requested cells by the
sweep's partner rule (partners.derive_partners with each row's expected cells), so a simulation of an
exhaustive sweep's matrix makes the decisions a screened sweep of the same data and settings makes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aal_sweep.analysis.partners import derive_partners
from aal_sweep.analysis.strategies import Settings, get, simulate, total_pairs
from aal_sweep.analysis.strategies.base import (
    BUDGET,
    decided_rows,
    expected_mask,
    requested,
    summary,
)
from aal_sweep.errors import AalError


def read_matrix(path: str, like: pd.DataFrame | None = None) -> pd.DataFrame:
    """An M x M matrix as `aal-sweep matrix --format csv` writes it: an `attribute` index column, one column
    per attribute in the same order, the diagonal the single-task accuracy. `like`: the matrix this one must
    match (its attributes, in order). Accuracies may be fractions or percentages."""
    try:
        df = pd.read_csv(path, index_col=0)
    except FileNotFoundError:
        raise AalError(f"{path}: no such file (write one with: aal-sweep matrix RESULTS --format csv > FILE)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IsADirectoryError) as e:
        raise AalError(f"{path}: not a matrix csv ({str(e).splitlines()[0][:120]})") from None
    names = [str(c) for c in df.columns]
    index = [str(a) for a in df.index]
    if df.index.name != "attribute" or names != index:
        raise AalError(
            f"{path}: not a pair matrix: its first column must be `attribute` and its columns the same attributes "
            f"as its rows, in the same order (as `aal-sweep matrix RESULTS --format csv` writes it)"
        )
    values = df.apply(pd.to_numeric, errors="coerce")
    bad = df.notna() & values.isna()
    if bad.to_numpy().any():
        a, b = next((index[i], names[j]) for i, j in zip(*np.nonzero(bad.to_numpy())))
        raise AalError(f"{path}: cell ({a}, {b}) is not a number: {df.loc[a, b]!r}")
    if like is not None and names != list(like.columns):
        raise AalError(f"{path}: its attributes are not the matrix's ({', '.join(like.columns)}), in the same order")
    values.index.name = "attribute"
    values.index, values.columns = index, names
    return values.astype(float)


def simulate_matrix(matrix: pd.DataFrame, se: pd.DataFrame | None, pairs, source: str = "matrix") -> dict:
    """Run pairs.strategy (a config.PairsConfig) against `matrix`; the JSON `aal-sweep simulate` prints."""
    if pairs.strategy not in ("active", "uniform"):
        raise AalError(f"simulate runs a measured strategy (pairs.strategy: active or uniform), not {pairs.strategy}")
    attributes = list(matrix.columns)
    m = len(attributes)
    p = matrix.to_numpy(float)
    if m < 2:
        raise AalError(f"{source}: a pair matrix needs at least two attributes, got {m}")
    off = ~np.eye(m, dtype=bool)
    if np.isnan(np.diag(p)).any() or np.isnan(p[off]).any():
        missing = [attributes[i] for i in range(m) if np.isnan(p[i]).any()]
        raise AalError(
            f"{source}: the matrix is not complete (rows with a missing cell: {', '.join(missing[:5])}); simulate "
            f"reads every requested cell from it: pass an exhaustive sweep's matrix"
        )
    # percentages (the paper's tables) or fractions (`aal-sweep matrix --format csv`): the sweep sees fractions
    scale = 100.0 if np.nanmax(p) > 1.0 else 1.0
    drop = (p - np.diag(p)[:, None]) / scale
    errors = None if se is None else se.to_numpy(float) / scale
    settings = Settings.of(pairs)
    rounds = simulate(get(pairs.strategy), drop, errors, settings)
    asked = requested(rounds)
    expected = expected_mask(m, rounds)
    partners = derive_partners(matrix.where(expected | ~off), allow_partial=False, expected=expected)
    decided = decided_rows(rounds)
    names = np.asarray(attributes, dtype=object)
    return {
        "strategy": pairs.strategy,
        "budget": pairs.budget,
        "seed": pairs.seed,
        "attributes": m,
        "pairs_trained": [[attributes[i], attributes[j]] for r in rounds for i, j in r.pairs],
        "cost": len(asked) / total_pairs(m),
        "partners": {
            a: (b if isinstance(b, str) else None) for a, b in zip(partners["attribute"], partners["partner"])
        },
        "rounds": [
            {
                "round": r.number,
                "pairs": [[attributes[i], attributes[j]] for i, j in r.pairs],
                "decided": [attributes[a] for a, *_ in r.decided],
                "final": r.final,
            }
            for r in rounds
        ],
        "ended": rounds[-1].reason,
        "structure": rounds[-1].structure,
        "evidence": {
            str(names[a]): {"decided": how, "round": number, "p_measured": p_}
            for a, (how, p_, _, number) in sorted(decided.items())
        },
        "undecided_at_end": sorted(str(names[a]) for a, d in decided.items() if d[0] == BUDGET),
        "summary": summary(pairs.strategy, rounds, m, settings),
    }
