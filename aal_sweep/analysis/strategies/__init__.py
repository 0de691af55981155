"""Measured screening strategies: which pair trials to train, round after round, from the cells measured so far.

    strategy = get("active")
    rounds = []
    while not (rounds and rounds[-1].final):
        r = next_round(strategy, rounds, cells, settings)   # pure: same inputs, same round
        rounds.append(r)                                     # ... train r.pairs, measure, update `cells`

A strategy is one module with `plan(m, rounds, cells, settings) -> Round`, registered in STRATEGIES below
(as data formats are in aal_sweep/data/index.py). `next_round` wraps it with what every strategy must
obey: the budget is never exceeded, a pair is requested once, a decided row stays decided, and the last
round decides every row left. The sweep (orchestration/screen.py) and `aal-sweep simulate`
(`simulate` below) run this same code: simulate measures a requested pair by reading a complete matrix.

Pure numpy / scipy: no torch, no Ray, no store. docs/screening.md says what each strategy does.
"""

from __future__ import annotations

from types import ModuleType

from aal_sweep.analysis.strategies.base import Cells, Round, Settings, next_round, simulate, total_pairs

__all__ = ["Cells", "Round", "Settings", "STRATEGIES", "get", "next_round", "simulate", "total_pairs"]


def _active() -> ModuleType:
    from aal_sweep.analysis.strategies import active

    return active


def _uniform() -> ModuleType:
    from aal_sweep.analysis.strategies import uniform

    return uniform


# name -> the module that plans its rounds; config.PAIR_STRATEGIES lists these names and `static`
STRATEGIES = {"active": _active, "uniform": _uniform}


def get(name: str) -> ModuleType:
    """The module of a measured strategy (one of STRATEGIES)."""
    from aal_sweep.errors import AalError

    if name not in STRATEGIES:
        raise AalError(f"screening strategy {name!r} is not one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
