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


def next_round(store: Store, cfg: SweepConfig, graph):
    """A measured screening's next round (analysis/strategies), once `graph.round_ready()`: planned from the
    cells its released pairs measured, and stored before it is released. (The rounds a previous run stored
    are in the graph already: graph.from_store releases them, so a resumed sweep makes the same decisions.)"""
    from aal_sweep.analysis.strategies import Settings, get
    from aal_sweep.analysis.strategies import next_round as plan_next
    from aal_sweep.analysis.strategies.base import round_table, rounds_key

    attributes = list(graph.attributes)
    cells = measured_cells(store, attributes, graph.rounds)
    rnd = plan_next(get(cfg.pairs.strategy), list(graph.rounds), cells, Settings.of(cfg.pairs))
    store.write_round(rounds_key(cfg, attributes), rnd.number, round_table(rnd, attributes))
    return rnd


def measured_cells(store: Store, attributes: list[str], rounds):
    """The drops P[a][b] - P[a][a] of the pairs requested so far (validation accuracy, mean over seeds, as
    `aal-sweep matrix` gives them) and their standard errors (`pairs`' drop_se, from the per-image bits):
    what the strategy sees, and exactly what `aal-sweep simulate` reads from those two matrices."""
    import numpy as np

    from aal_sweep.analysis.matrix import pair_matrix
    from aal_sweep.analysis.pairs import drop_se_matrix, pairs_table
    from aal_sweep.analysis.strategies import Cells

    m = len(attributes)
    asked = np.zeros((m, m), dtype=bool)
    for r in rounds:
        for i, j in r.pairs:
            asked[i, j] = asked[j, i] = True
    p = pair_matrix(store.query_rows(), attributes, "val_acc").to_numpy(float)
    se = drop_se_matrix(pairs_table(store.stats_rows(("val",)), attributes), attributes).to_numpy(float)
    return Cells(np.where(asked, p - np.diag(p)[:, None], np.nan), np.where(asked, se, np.nan))


def round_line(graph, rnd) -> str:
    """What a released round says: its pairs, the rows it decided, how far the budget is spent."""
    from aal_sweep.analysis.strategies.base import ENDINGS, decided_rows, requested, total_pairs

    m = len(graph.attributes)
    n = len(requested(graph.rounds))
    line = (
        f"screening round {rnd.number}: {len(rnd.pairs)} pair(s) released, {len(rnd.decided)} row(s) decided "
        f"({len(decided_rows(graph.rounds))} of {m}); {n} of {total_pairs(m)} pairs requested"
    )
    return line + (f"; the screening ends: {ENDINGS[rnd.reason]}" if rnd.final else "")
