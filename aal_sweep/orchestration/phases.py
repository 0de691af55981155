"""Every phase's trials, as far as what the store holds lets them be planned (no torch, no Ray).

The driver (sweep.py), `status` and the tests share it. A phase is planned only from what it needs
(config.PHASE_NEEDS): the adversarial variants from complete rows of the pair matrix (unless
allow_partial), adversarial_shared also from a stored multitask_all trial of the same seed, whose final
weights it starts from (sweep.py writes them to RESULTS/artifacts/<trial_id>.pt).
"""

from __future__ import annotations

import pandas as pd

from aal_sweep.config import SweepConfig
from aal_sweep.kinds import ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL
from aal_sweep.orchestration.trials import (Trial, multitask_all_of, plan_adversarial, plan_adversarial_multiple,
                            plan_adversarial_shared, plan_initial, plan_multitask_all)
from aal_sweep.analysis.partners import negative_partners
from aal_sweep.analysis.results import chosen_partners
from aal_sweep.store.layout import weights_file  # noqa: F401 (re-export: where a phase's weights live)

# The order phases run in; single and pair are one Tune experiment ("single+pair"), the others one each.
ORDER = ("single", "pair", MULTITASK_ALL, ADVERSARIAL, ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED)


def plan_phases(cfg: SweepConfig, store, attributes: tuple[str, ...], allow_partial: bool = False,
                partners: pd.DataFrame | None = None) -> dict[str, list[Trial]]:
    """{phase: its trials} for every phase in cfg.phases, in ORDER. `partners`: the chosen partners
    (Store.chosen_partners under the config's rule), read from `store` when not given."""
    initial = plan_initial(cfg, attributes)
    out: dict[str, list[Trial]] = {}
    for phase in ORDER:
        if phase not in cfg.phases:
            continue
        if phase in ("single", "pair"):
            out[phase] = [t for t in initial if t.kind == phase]
        elif phase == MULTITASK_ALL:
            out[phase] = plan_multitask_all(cfg, attributes)
        elif phase == ADVERSARIAL_MULTIPLE:
            out[phase] = plan_adversarial_multiple(cfg, negatives(store, attributes, allow_partial))
        else:
            if partners is None:
                partners = chosen_partners(store, allow_partial, attributes, rule=cfg.partners)
            plan = plan_adversarial if phase == ADVERSARIAL else plan_adversarial_shared
            out[phase] = plan(cfg, partners)
    return out


def negatives(store, attributes: tuple[str, ...], allow_partial: bool = False) -> pd.DataFrame:
    """Per attribute every partner that lowers it (query.negative_partners on the validation matrix)."""
    from aal_sweep.analysis.matrix import pair_matrix

    return negative_partners(pair_matrix(store.query_rows(), list(attributes), "val_acc"), allow_partial)


def waiting_for_weights(cfg: SweepConfig, attributes: tuple[str, ...], trials: list[Trial],
                        done: set[str]) -> dict[str, list[Trial]]:
    """adversarial_shared trials whose multitask_all trial is not stored yet: {that trial's id: them}."""
    waiting: dict[str, list[Trial]] = {}
    for t in trials:
        base = multitask_all_of(cfg, attributes, t.seed)
        if base not in done:
            waiting.setdefault(base, []).append(t)
    return waiting
