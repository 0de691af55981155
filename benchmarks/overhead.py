"""Orchestration overhead per trial: wall time of a sweep of N trivial trials minus their training time, / N.

Trivial trials: 1 epoch of small_cnn on 8x8 images (40 of them). The sweep is the real `aal-sweep run` path
on an embedded Ray: Ray start-up, Tune, per-epoch checkpoints, the store, partner derivation.

    .venv/bin/python benchmarks/overhead.py --attributes 6
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")

from aal_sweep.config import parse_config  # noqa: E402
from aal_sweep.data.synthetic import make_synthetic  # noqa: E402
from aal_sweep.store import Store  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attributes", type=int, default=6)
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 2 attributes (3 trials)")
    a = p.parse_args()
    if a.smoke:
        a.attributes = 2
    from aal_sweep.orchestration import driver

    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "d", a.attributes, 40, (8, 8))
        cfg = parse_config(
            {
                "results": str(Path(tmp) / "r"),
                "dataset": {"root": str(root), "image_size": [8, 8], "cache": str(Path(tmp) / "c")},
                "model": {"backbone": "small_cnn"},
                "train": {"epochs": 1, "batch_size": 16},
                "phases": ["single", "pair"],
                "resources": {"cpus_per_trial": a.cpus_per_trial},
            }
        )
        t0 = time.perf_counter()
        assert driver.run(cfg) == 0
        wall = time.perf_counter() - t0
        df = Store(cfg.results).trials().drop_duplicates("trial_id")
    n = len(df)
    slots = max(1, int((os.cpu_count() or 1) // a.cpus_per_trial))
    train = df["train_seconds"].sum()
    print(
        f"{n} trials, {slots} concurrent: wall {wall:.1f}s, training {train:.2f}s in all; "
        f"overhead {(wall - train / slots) / n:.2f}s per trial (wall - training / {slots}) / {n}"
    )


if __name__ == "__main__":
    main()
