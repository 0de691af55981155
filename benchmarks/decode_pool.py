"""How the decode cache's pool should start its workers: the cache build's work (decode JPEGs into a uint8
memmap, `data/cache.py::_decode_into`) run by a fork pool (forking a multi-threaded caller can hang), a
fork-server pool (failed in processes that host Ray), threads (what `data/cache.py` uses) and one thread.
Each variant starts its own pool, as every build does; one warm-up round, then the median of `--repeats`
rounds.

    .venv/bin/python benchmarks/decode_pool.py --images 4000 --size 64 64 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from aal_sweep.data import cache
from aal_sweep.data.synthetic import make_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 64 JPEGs of 16x16, one round")
    args = ap.parse_args()
    if args.smoke:
        args.images, args.size, args.repeats = 64, (16, 16), 1
    h, w = args.size
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "data", n_attributes=3, n_images=args.images, size=(w, h), seed=0)
        paths = sorted(str(p) for p in Path(root).rglob("*.jpg"))
        shape = (len(paths), h, w, 3)
        out = str(Path(tmp) / "cache.u8")
        np.memmap(out, dtype=np.uint8, mode="w+", shape=shape).flush()
        jobs = [(out, paths[i : i + 512], i, shape) for i in range(0, len(paths), 512)]
        server = multiprocessing.get_context("forkserver")
        server.set_forkserver_preload([cache.__name__])
        variants = {
            "fork pool": lambda: ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")),
            "fork-server pool": lambda: ProcessPoolExecutor(args.workers, mp_context=server),
            f"{args.workers} threads": lambda: ThreadPoolExecutor(args.workers),
            "1 thread": lambda: ThreadPoolExecutor(1),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(1 + args.repeats):  # rounds alternate the variants, so a drift hits them alike
            for name, make in variants.items():
                times[name].append(_run(make, jobs))
        print(f"{len(paths)} JPEGs of {w}x{h}, {args.workers} workers, median of {args.repeats} after a warm-up:")
        for name, t in times.items():
            print(f"  {name}: {statistics.median(t[1:]):.2f} s (warm-up {t[0]:.2f} s)")


def _run(make, jobs) -> float:
    start = time.perf_counter()
    with make() as pool:
        bad = [b for found in pool.map(cache._decode_into, jobs) for b in found]
    assert not bad, bad[:3]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
