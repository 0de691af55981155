"""The plan of a sweep (pure, no Ray): config -> trials per phase; partners -> adversarial trials.

A trial id is readable and stable: kind, attributes, lambda, seed and the hash of the training settings,
so the same config always yields the same ids and a results folder knows what it already holds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from aal_sweep.config import SweepConfig
from aal_sweep.train.loop import FitResult, TrainSpec

PHASE_OF_KIND = {"single": "initial", "pair": "initial", "adversarial": "adversarial"}


@dataclass(frozen=True)
class Trial:
    trial_id: str
    kind: str  # single | pair | adversarial
    attributes: tuple[str, ...]  # primary first
    lam: float | None = None
    method: str | None = None

    def spec(self, cfg: SweepConfig) -> TrainSpec:
        return TrainSpec.from_config(cfg, self.kind, self.attributes, self.lam)

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "kind": self.kind, "attributes": list(self.attributes),
                "lam": self.lam, "method": self.method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        return cls(d["trial_id"], d["kind"], tuple(d["attributes"]), d["lam"], d["method"])


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", name)
    # names that differ only in punctuation must not collide
    return slug if slug == name else f"{slug}~{hashlib.sha1(name.encode()).hexdigest()[:4]}"


def trial_id(kind: str, attributes, seed: int, config_hash: str, lam: float | None = None,
             method: str | None = None) -> str:
    names = [_slug(a) for a in attributes]
    if kind == "adversarial":
        return f"adv-{method}-{names[0]}-vs-{names[1]}-l{lam:g}-s{seed}-{config_hash}"
    return f"{kind}-{'-'.join(names)}-s{seed}-{config_hash}"


def plan_initial(cfg: SweepConfig, attributes: tuple[str, ...]) -> list[Trial]:
    """One single-task trial per attribute and one pair trial per unordered pair (config order)."""
    h, seed = cfg.training_hash(), cfg.train.seed
    trials = []
    if "single" in cfg.phases:
        trials += [Trial(trial_id("single", [a], seed, h), "single", (a,)) for a in attributes]
    if "pair" in cfg.phases:
        trials += [Trial(trial_id("pair", p, seed, h), "pair", p) for p in combinations(attributes, 2)]
    return trials


def plan_adversarial(cfg: SweepConfig, partners: pd.DataFrame) -> list[Trial]:
    """One trial per (attribute with a partner, lambda)."""
    h, seed, method = cfg.training_hash(), cfg.train.seed, cfg.adversarial.method
    trials = []
    for row in partners.itertuples():
        if row.partner is None or pd.isna(row.partner):
            continue
        pair = (row.attribute, row.partner)
        for lam in cfg.adversarial.lambdas:
            trials.append(Trial(trial_id("adversarial", pair, seed, h, lam, method), "adversarial", pair, lam, method))
    return trials


def result_rows(trial: Trial, cfg: SweepConfig, result: FitResult, attempts: int) -> list[dict[str, Any]]:
    """The store rows of a finished trial: one per evaluated head (only C_a for adversarial)."""
    rows = []
    for head in result.heads:
        partner = [a for a in trial.attributes if a != head.attribute]
        rows.append({
            "trial_id": trial.trial_id, "kind": trial.kind, "attribute": head.attribute,
            "partner": partner[0] if partner else None, "lambda": trial.lam, "method": trial.method,
            "seed": cfg.train.seed, "status": "ok", "error": None, "best_epoch": head.best_epoch,
            "val_acc": head.val_acc, "test_acc": head.test_acc, "val_acc_by_epoch": head.val_acc_by_epoch,
            "val_loss_by_epoch": head.val_loss_by_epoch, "test_acc_by_epoch": head.test_acc_by_epoch,
            "epochs_run": result.epochs_run, "attempts": attempts, "train_seconds": result.train_seconds,
            "n_val": result.n_val, "n_test": result.n_test, "backbone": cfg.model.backbone,
            "config_hash": cfg.training_hash(),
        })
    return rows


def failed_rows(trial: Trial, cfg: SweepConfig, error: str, attempts: int) -> list[dict[str, Any]]:
    heads = trial.attributes[:1] if trial.kind == "adversarial" else trial.attributes
    return [{"trial_id": trial.trial_id, "kind": trial.kind, "attribute": a,
             "partner": next((b for b in trial.attributes if b != a), None), "lambda": trial.lam,
             "method": trial.method, "seed": cfg.train.seed, "status": "failed", "error": error,
             "attempts": attempts, "backbone": cfg.model.backbone, "config_hash": cfg.training_hash()}
            for a in heads]
