"""A screened pair phase's confirmation: the estimates from what the store holds, then the pairs to train.

    estimates = make_estimates(store, cfg, attributes)   # once every estimator trial ended
    pairs = confirmed_pairs(estimates, attributes, cfg.pairs.confirm, cfg.pairs.rule)

label_correlation reads the training labels (the annotation files, on the driver's node); lookahead reads
the estimates its trial stored; short compares the short pair trials' epochs with the single trials'. The
estimates are stored (RESULTS/estimates/<key>.parquet) before the pairs are released, so a resumed sweep
confirms the same pairs without computing anything again. No Ray, no torch.
"""

from __future__ import annotations

import time

import pandas as pd

from aal_sweep.analysis.screening import estimates_key, estimates_table, label_correlation, short_scores
from aal_sweep.config import SweepConfig
from aal_sweep.errors import AalError
from aal_sweep.kinds import PAIR, SHORT, SINGLE
from aal_sweep.store import Store


def make_estimates(store: Store, cfg: SweepConfig, attributes: tuple[str, ...]) -> pd.DataFrame:
    """The sweep's estimates, stored under their key when the driver made them; read when a trial did."""
    key = estimates_key(cfg, list(attributes))
    stored = store.read_estimates(key)
    if stored is not None:
        return stored
    estimator = cfg.pairs.estimator
    if estimator == "label_correlation":
        from aal_sweep.data.index import load_index

        t0 = time.perf_counter()
        labels = load_index(cfg.dataset.source(), list(attributes), check_images=False).labels["train"]
        estimates = label_correlation(labels, list(attributes))
        estimates["cost"] = (time.perf_counter() - t0) / max(len(estimates), 1)  # each row's share
    elif estimator == SHORT:
        rows = store.trials(
            ["kind", "attribute", "partner", "seed", "status", "val_acc_by_epoch", "train_seconds", "epochs_run"]
        )
        rows = rows[rows["kind"].isin([SINGLE, SHORT])].copy()
        rows["kind"] = rows["kind"].astype(object).replace({SHORT: PAIR})  # short_scores reads them as pairs
        estimates = short_scores(rows, list(attributes), min(cfg.pairs.short_epochs, cfg.train.epochs))
    else:  # lookahead: its trial stores them as it ends
        raise AalError(
            f"{store.show()}: the lookahead trial is stored but its estimates ({key}) are not; "
            f"rerun with --restart, or pick another pairs.estimator"
        )
    store.write_estimates(key, estimates_table(estimates))
    return estimates
