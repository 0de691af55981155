"""Writes tests/data/pairs_reference_*.csv: the pair and gain tables of a random store, computed by the
per-cell implementation of aal_sweep.analysis.pairs before it was vectorised (commit 62abe23).

    PYTHONPATH=$PWD .venv/bin/python tests/data/make_pairs_reference.py

tests/test_stats.py (test_vectorised_tables_match_the_stored_reference) rebuilds the same store with
`reference_store` and compares: everything identical but the one-seed bootstrap ends, which were Monte
Carlo (2,000 resamples) and are now the exact bootstrap's quantiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
NAMES = ["A", "B", "C", "D", "E", "F"]
N_IMAGES = 1003  # not a multiple of 8: the packed vectors end in padding bits


def _pack(v):
    return np.packbits(np.asarray(v, dtype=bool)).tobytes()


def reference_store(seeds=(0,)) -> pd.DataFrame:
    """Singles, pairs and adversarial rows of NAMES with random correctness vectors (both splits); some
    cells are made awkward: a missing pair row, a row without vectors, a seed missing from one cell."""
    rng = np.random.default_rng(20)
    rows = []

    def row(kind, a, b, s, val, test, lam=None):
        rows.append(
            {
                "trial_id": f"{kind}-{a}-{b}-{lam}-s{s}",
                "kind": kind,
                "attribute": a,
                "partner": b,
                "lambda": lam,
                "seed": s,
                "status": "ok",
                "val_acc": val.mean(),
                "test_acc": test.mean(),
                "val_correct": _pack(val),
                "test_correct": _pack(test),
                "n_val": N_IMAGES,
                "n_test": N_IMAGES,
                "val_majority": 0.55 + 0.05 * NAMES.index(a),
            }
        )

    for s in seeds:
        single = {a: (rng.random(N_IMAGES) < rng.uniform(0.6, 0.95), rng.random(N_IMAGES) < 0.8) for a in NAMES}
        for a in NAMES:
            row("single", a, None, s, *single[a])
        for a in NAMES:
            for b in NAMES:
                if a == b or (a, b) == ("A", "F") or ((a, b) == ("B", "E") and s == 2):
                    continue  # (A, F) never ran; (B, E) lacks seed 2
                flip = rng.random(N_IMAGES) < rng.uniform(0.0, 0.12)
                val = np.where(flip, rng.random(N_IMAGES) < 0.7, single[a][0])
                test = np.where(rng.random(N_IMAGES) < 0.05, ~single[a][1], single[a][1])
                row("pair", a, b, s, val, test)
                if b == NAMES[(NAMES.index(a) + 1) % len(NAMES)]:
                    for lam in (0.1, 1.0):
                        adv = np.where(rng.random(N_IMAGES) < 0.06, rng.random(N_IMAGES) < 0.9, single[a][1])
                        row("adversarial", a, b, s, np.where(rng.random(N_IMAGES) < 0.05, ~val, val), adv, lam)
    out = pd.DataFrame(rows)
    no_bits = (out["kind"] == "pair") & (out["attribute"] == "C") & (out["partner"] == "D")
    out.loc[no_bits, "val_correct"] = None  # written before vectors were stored
    return out


def chosen(trials: pd.DataFrame) -> pd.DataFrame:
    adv = trials[trials["kind"] == "adversarial"].drop_duplicates(["attribute", "partner", "lambda"])
    return adv[["attribute", "partner", "lambda"]].reset_index(drop=True)


def main() -> None:
    from aal_sweep.analysis.pairs import adversarial_gains, pairs_table

    for label, seeds in (("1seed", (0,)), ("3seeds", (0, 1, 2))):
        trials = reference_store(seeds)
        pairs_table(trials, NAMES).to_csv(HERE / f"pairs_reference_{label}.csv", index=False, float_format="%.17g")
        gains = pd.concat([adversarial_gains(trials, chosen(trials), split=split) for split in ("val", "test")])
        gains.to_csv(HERE / f"gains_reference_{label}.csv", index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
