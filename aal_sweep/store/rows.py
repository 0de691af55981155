"""The store rows of a finished or failed trial (plain values; no torch, no Ray)."""

from __future__ import annotations

from typing import Any

from aal_sweep.kinds import evaluated, partner_of


def result_rows(
    trial, cfg, result, attempts: int, node_id: str | None = None, val_majority: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One row per evaluated head (only C_a for adversarial) of `result` (a train.FitResult);
    `val_majority`: {attribute: majority-class rate of its validation labels} (stats.majority_rate)."""
    rows = []
    for head in result.heads:
        rows.append(
            {
                "trial_id": trial.trial_id,
                "kind": trial.kind,
                "attribute": head.attribute,
                "partner": partner_of(trial.kind, trial.attributes, head.attribute),
                "lambda": trial.lam,
                "method": trial.method,
                "seed": getattr(trial, "seed", cfg.train.seed),
                "status": "ok",
                "error": None,
                "best_epoch": head.best_epoch,
                "val_acc": head.val_acc,
                "test_acc": head.test_acc,
                "val_acc_by_epoch": head.val_acc_by_epoch,
                "val_loss_by_epoch": head.val_loss_by_epoch,
                "test_acc_by_epoch": head.test_acc_by_epoch,
                "epochs_run": result.epochs_run,
                "attempts": attempts,
                "train_seconds": result.train_seconds,
                # the images labelled for this head's attribute (the split's size unless labels are missing)
                "n_val": head.n_val,
                "n_test": head.n_test,
                "backbone": cfg.model.backbone,
                "config_hash": cfg.training_hash(),
                "node_id": node_id,
                "val_majority": (val_majority or {}).get(head.attribute),
                # packed per-image correctness, present once the training core records it
                "val_correct": _bytes(getattr(head, "val_correct", None)),
                "test_correct": _bytes(getattr(head, "test_correct", None)),
            }
        )
    return rows


def failed_rows(trial, cfg, error: str, attempts: int, node_id: str | None = None) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": trial.trial_id,
            "kind": trial.kind,
            "attribute": a,
            "partner": partner_of(trial.kind, trial.attributes, a),
            "lambda": trial.lam,
            "method": trial.method,
            "seed": getattr(trial, "seed", cfg.train.seed),
            "status": "failed",
            "error": error,
            "attempts": attempts,
            "backbone": cfg.model.backbone,
            "config_hash": cfg.training_hash(),
            "node_id": node_id,
        }
        for a in evaluated(trial.kind, trial.attributes)
    ]


def _bytes(value) -> bytes | None:
    """Packed bits (bytes, or a uint8 array) for the binary column; empty means not recorded."""
    if value is None or len(value) == 0:
        return None
    return value if isinstance(value, bytes) else bytes(value)
