"""Time the pair statistics of a whole matrix on constructed store rows (no training).

    .venv/bin/python benchmarks/stats.py --attributes 40 --images 19867 --seeds 1 --repeats 3

Builds the rows of a complete (single + pair) store: per seed, M single and M(M-1) pair heads with
bit-packed correctness vectors of `--images` validation images (CelebA's validation split has 19,867),
then times `pairs.pairs_table` (exact bootstrap intervals, McNemar or the seed test, Holm within rows).
Median of `--repeats`. (Until the statistics were vectorised it also timed the partner choice without
intervals; intervals now cost nothing beside the counts, so there is one path.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from aal_sweep.analysis import stats
from aal_sweep.analysis.pairs import pairs_table


def rows(m: int, n: int, seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = [f"A{i}" for i in range(m)]
    out = []
    for s in range(seeds):
        single = {a: rng.random(n) < 0.9 for a in names}
        for a in names:
            out.append(("single", a, None, s, single[a]))
            for b in names:
                if b != a:
                    out.append(("pair", a, b, s, single[a] ^ (rng.random(n) < 0.03)))
    return pd.DataFrame(
        {
            "kind": [r[0] for r in out],
            "attribute": [r[1] for r in out],
            "partner": [r[2] for r in out],
            "seed": [r[3] for r in out],
            "status": "ok",
            "val_acc": [r[4].mean() for r in out],
            "val_correct": [stats.pack(r[4]) for r in out],
            "n_val": n,
            "val_majority": 0.8,
        }
    ), names


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attributes", type=int, default=40)
    p.add_argument("--images", type=int, default=19867)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 6 attributes, 200 images, once")
    args = p.parse_args()
    if args.smoke:
        args.attributes, args.images, args.repeats = 6, 200, 1
    trials, names = rows(args.attributes, args.images, args.seeds)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        table = pairs_table(trials, names)
        times.append(time.perf_counter() - t0)
    print(
        f"pairs_table: M={args.attributes}, {len(table)} cells, {args.images} images, {args.seeds} seed(s): "
        f"median {statistics.median(times):.2f} s over {args.repeats} (min {min(times):.2f} s)"
    )


if __name__ == "__main__":
    main()
