"""The trials of a sweep (pure, no Ray): their ids, and the plan of each kind (the graph, graph.py, uses them).

A trial id is readable and stable: kind, attributes, lambda, seed and the hash of the training settings,
so the same config always yields the same ids and a results folder knows what it already holds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from aal_sweep.config import SweepConfig
from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, LOOKAHEAD, MULTITASK_ALL, PAIR, SHORT

# what a screened pair phase's estimator trials train: a short pair, or one all-attribute model
TASK_OF = {SHORT: PAIR, LOOKAHEAD: MULTITASK_ALL}


@dataclass(frozen=True)
class Trial:
    trial_id: str
    kind: str  # single | pair | adversarial, or one of Table 1's variants (aal_sweep.kinds)
    attributes: tuple[str, ...]  # primary first
    lam: float | None = None
    method: str | None = None
    seed: int = 0  # one of cfg.seeds; also in trial_id

    def spec(self, cfg: SweepConfig):
        """The train.TrainSpec of this trial (imported here: planning, `status` and queries need no torch)."""
        from aal_sweep.train.loop import TrainSpec

        spec = TrainSpec.from_config(cfg, TASK_OF.get(self.kind, self.kind), self.attributes, self.lam)
        if self.kind == SHORT:  # the first epochs of the pair trial: same seed, data order and schedule
            spec = dataclasses.replace(spec, epochs=min(cfg.pairs.short_epochs, spec.epochs))
        return dataclasses.replace(spec, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "kind": self.kind,
            "attributes": list(self.attributes),
            "lam": self.lam,
            "method": self.method,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        # Tune experiments saved before seeds existed lack "seed": their trials ran with the first seed,
        # which the id's -s<seed> names
        seed = d["seed"] if "seed" in d else int(d["trial_id"].rsplit("-s", 1)[1].split("-")[0])
        return cls(d["trial_id"], d["kind"], tuple(d["attributes"]), d["lam"], d["method"], seed)


@functools.lru_cache(maxsize=65536)  # a sweep names each attribute in ~M trial ids: one regex per name
def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", name)
    # names that differ only in punctuation must not collide
    return slug if slug == name else f"{slug}~{hashlib.sha1(name.encode()).hexdigest()[:4]}"


def _digest(names) -> str:
    """Six hex digits naming an ordered list of attribute names."""
    return hashlib.sha1("\x1f".join(names).encode()).hexdigest()[:6]


def trial_id(
    kind: str, attributes, seed: int, config_hash: str, lam: float | None = None, method: str | None = None
) -> str:
    names = [_slug(a) for a in attributes]
    if kind == "adversarial":
        return f"adv-{method}-{names[0]}-vs-{names[1]}-l{lam:g}-s{seed}-{config_hash}"
    if kind == MULTITASK_ALL:  # 40 names would make a 500-character id: their count and a digest
        return f"mta-{len(names)}attrs-{_digest(attributes)}-s{seed}-{config_hash}"
    if kind == ADVERSARIAL_MULTIPLE:  # the partner set by its size and digest (in sweep order, as trained)
        return f"advm-{method}-{names[0]}-vs-{len(names) - 1}p{_digest(attributes[1:])}-l{lam:g}-s{seed}-{config_hash}"
    if kind == ADVERSARIAL_SHARED:
        return f"advs-{method}-{names[0]}-vs-{names[1]}-l{lam:g}-s{seed}-{config_hash}"
    if kind == LOOKAHEAD:  # `method` carries the lookahead interval: another interval, other estimates
        return f"look-{len(names)}attrs-{_digest(attributes)}-every{method}-s{seed}-{config_hash}"
    if kind == SHORT:  # `method` carries the epochs trained
        return f"short-{'-'.join(names)}-e{method}-s{seed}-{config_hash}"
    return f"{kind}-{'-'.join(names)}-s{seed}-{config_hash}"


def plan_initial(cfg: SweepConfig, attributes: tuple[str, ...]) -> list[Trial]:
    """Per seed, one single-task trial per attribute and one pair trial per unordered pair (config order)."""
    h = cfg.training_hash()
    trials = []
    for seed in cfg.seeds:
        if "single" in cfg.phases:
            trials += [Trial(trial_id("single", [a], seed, h), "single", (a,), seed=seed) for a in attributes]
        if "pair" in cfg.phases:
            trials += [Trial(trial_id("pair", p, seed, h), "pair", p, seed=seed) for p in combinations(attributes, 2)]
    return trials


def plan_adversarial(cfg: SweepConfig, partners: pd.DataFrame) -> list[Trial]:
    """One trial per (seed, attribute with a partner, lambda); `partners` chosen by the config's partner rule."""
    return _against_partners(cfg, partners, "adversarial", cfg.adversarial.method)


def _against_partners(cfg: SweepConfig, partners: pd.DataFrame, kind: str, method: str) -> list[Trial]:
    """One `kind` trial per (seed, attribute with a partner, lambda)."""
    h = cfg.training_hash()
    trials = []
    for seed in cfg.seeds:
        for row in partners.itertuples():
            if row.partner is None or pd.isna(row.partner):
                continue
            pair = (row.attribute, row.partner)
            for lam in cfg.adversarial.lambdas:
                trials.append(Trial(trial_id(kind, pair, seed, h, lam, method), kind, pair, lam, method, seed))
    return trials


# ---- Table 1's other variants (aal_sweep.kinds) -------------------------------------------------------


def plan_multitask_all(cfg: SweepConfig, attributes: tuple[str, ...]) -> list[Trial]:
    """Per seed, one training with a head for every sweep attribute (needs nothing)."""
    h = cfg.training_hash()
    return [
        Trial(trial_id(MULTITASK_ALL, attributes, seed, h), MULTITASK_ALL, tuple(attributes), seed=seed)
        for seed in cfg.seeds
    ]


def plan_adversarial_multiple(cfg: SweepConfig, negatives: pd.DataFrame) -> list[Trial]:
    """Per seed, attribute with at least one negative partner (`negatives`: query.negative_partners) and
    lambda: one trial against all of them. Gradient reversal only (kinds.GRL_ONLY)."""
    h = cfg.training_hash()
    trials = []
    for seed in cfg.seeds:
        for row in negatives.itertuples():
            if not row.partners:
                continue
            attrs = (row.attribute, *row.partners)
            for lam in cfg.adversarial.lambdas:
                trials.append(
                    Trial(
                        trial_id(ADVERSARIAL_MULTIPLE, attrs, seed, h, lam, "grl"),
                        ADVERSARIAL_MULTIPLE,
                        attrs,
                        lam,
                        "grl",
                        seed,
                    )
                )
    return trials


def plan_adversarial_shared(cfg: SweepConfig, partners: pd.DataFrame) -> list[Trial]:
    """As plan_adversarial (same partners, same lambdas), on the frozen conv layers of the same seed's
    multitask_all model (`multitask_all_of`). Gradient reversal only (kinds.GRL_ONLY)."""
    return _against_partners(cfg, partners, ADVERSARIAL_SHARED, "grl")


def multitask_all_of(cfg: SweepConfig, attributes: tuple[str, ...], seed: int) -> str:
    """The id of the multitask_all trial whose weights an adversarial_shared trial of `seed` starts from."""
    return trial_id(MULTITASK_ALL, attributes, seed, cfg.training_hash())


# ---- a screened pair phase's estimator trials (config.PairsConfig) -----------------------------------


def plan_estimators(cfg: SweepConfig, attributes: tuple[str, ...]) -> list[Trial]:
    """The trials whose results score every pair before confirmation: for `lookahead` one all-attribute
    training, for `short` every pair for its first epochs, for `label_correlation` none (the labels
    alone). The first seed only: estimates rank candidates, the confirmed pairs train every seed."""
    p, h, seed = cfg.pairs, cfg.training_hash(), cfg.seeds[0]
    if p.mode != "screened" or p.measured:  # a measured strategy's evidence is its own pair trials
        return []
    if p.estimator == LOOKAHEAD:
        return [
            Trial(
                trial_id(LOOKAHEAD, attributes, seed, h, method=str(p.every)),
                LOOKAHEAD,
                tuple(attributes),
                method=str(p.every),
                seed=seed,
            )
        ]
    if p.estimator == SHORT:
        e = str(min(p.short_epochs, cfg.train.epochs))
        return [
            Trial(trial_id(SHORT, pair, seed, h, method=e), SHORT, pair, method=e, seed=seed)
            for pair in combinations(attributes, 2)
        ]
    return []


def plan_pairs(cfg: SweepConfig, pairs) -> list[Trial]:
    """The pair trials of these unordered pairs (each in sweep order), every seed: the same trials, and
    ids, as an exhaustive sweep's."""
    h = cfg.training_hash()
    return [Trial(trial_id(PAIR, p, seed, h), PAIR, tuple(p), seed=seed) for seed in cfg.seeds for p in pairs]
