"""`uniform`: the whole budget in one round of pairs drawn uniformly at random (seeded), no model.

The baseline an adaptive strategy must beat at equal cost: it finds a row's partner with probability equal
to the share of pairs trained, whatever the matrix's shape.
"""

from __future__ import annotations

import numpy as np

from aal_sweep.analysis.strategies.base import Cells, Round, Settings, total_pairs


def plan(m: int, rounds: list[Round], cells: Cells, settings: Settings) -> Round:
    if rounds:
        return Round(len(rounds), ())  # nothing more: next_round makes this the last round
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    pick = np.random.default_rng(settings.seed).permutation(total_pairs(m))[: settings.cap(m)]
    return Round(0, tuple(pairs[k] for k in sorted(pick)))
