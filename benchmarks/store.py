"""How the results store scales with the number of attributes M (issues 7, 20): complete stores built with
the store's own writer, then `matrix`, `partners`, `status` and a nothing-to-do resume, timed, with peak RSS;
and with --cli-stats the statistics commands `pairs`, `partners` and `report` as whole CLI processes.

    .venv/bin/python benchmarks/store.py --m 40 200 1000          # writes the table (markdown) to stdout
    nice -n 10 .venv/bin/python benchmarks/store.py --m 200 1000 --images 19867 --cli-stats

A store of M attributes holds M single, M(M-1)/2 pair and 5M adversarial trials (5 lambdas, every attribute
with a partner): 505,500 trials and ~1M rows at M = 1,000. It is built fast, as one compacted segment per
phase through `Store.import_rows` (the compaction's own segment writer), not as 505k inbox files. Each row
carries 6-epoch curves and, unless --bits 0, 125 bytes of packed per-image correctness per split (1,000
random images). --images N instead gives every row realistic bits: N validation images (CelebA's 19,867;
its 19,962 test images), single models right on 75-97% of them, every pair and adversarial model its
single model with 0.5-6% of the images flipped (so the drops, discordant counts and p-values look like a
sweep's), val_acc / test_acc counted from the bits; at M = 1,000 that is 5 GB of bits, written in 8
segments. With bits the build also computes every pair's statistics once, as the driver does when it
writes partners.parquet (pairs.pairs_table, about M^2 cells); queries then reuse them.

--cli-stats times `aal-sweep pairs RESULTS` (default table format, to /dev/null), `aal-sweep partners
RESULTS` with partners.parquet current (reused) and removed (recomputed: what every query does while it is
outdated), and `aal-sweep report RESULTS --out DIR`: each a fresh process, one warm-up, the median of
--repeats, and its peak RSS (GNU time's %M, so /usr/bin/time must exist).

Each measurement runs in a fresh process (a new `aal-sweep` command would), warm OS cache: one warm-up, then
the median of --repeats. matrix / partners / status open a new Store each time (no in-process cache).
resume-noop is what `aal-sweep run CONFIG` does before it would import Ray: open the store, check the
training settings, build the graph of the sweep from what it holds (orchestration/state.py), check the
store is tidy. `run (CLI)` is the whole
`aal-sweep run CONFIG` command on the finished store, interpreter start included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

LAMBDAS = [0.01, 0.03, 0.1, 0.3, 1.0]
EPOCHS = 6
BITS = 125  # bytes of packed correctness per split (1,000 images); --bits 0 leaves the columns null
TEST_IMAGES = {19867: 19962}  # CelebA: its test split beside its validation split


def config_file(out: Path, m: int) -> Path:
    """A sweep config over a tiny synthetic dataset with M attributes (the resume check reads its names)."""
    import yaml

    from aal_sweep.data.synthetic import make_synthetic

    root = out / f"data-{m}"
    if not (root / "list_attr_celeba.txt").is_file():
        make_synthetic(root, n_attributes=4, n_images=40, size=(16, 16), seed=0, random_attributes=m - 4)
    path = out / f"sweep-{m}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": f"bench-{m}",
                "results": str(out / f"results-{m}"),
                "dataset": {"root": str(root), "image_size": [16, 16]},
                "model": {"backbone": "small_cnn", "pretrained": None},
                "train": {"epochs": EPOCHS},
                "adversarial": {"lambdas": LAMBDAS},
            }
        )
    )
    return path


def rows_table(trials, cfg, rng, bits: int) -> pa.Table:
    """The store rows of `trials` (single, pair or adversarial Trials), built column-wise."""
    from aal_sweep.store import SCHEMA

    ids, kinds, attrs, partners, lams, methods = [], [], [], [], [], []
    for t in trials:
        heads = t.attributes[:1] if t.kind != "pair" else t.attributes
        for a in heads:
            ids.append(t.trial_id)
            kinds.append(t.kind)
            attrs.append(a)
            partners.append(next((b for b in t.attributes if b != a), None))
            lams.append(t.lam)
            methods.append(t.method)
    n = len(ids)

    def curves():
        return pa.ListArray.from_arrays(
            np.arange(0, (n + 1) * EPOCHS, EPOCHS, dtype=np.int32), rng.uniform(0.7, 0.95, n * EPOCHS)
        )

    def packed():
        if not bits:
            return pa.nulls(n, pa.binary())
        data = pa.py_buffer(rng.integers(0, 256, n * bits, dtype=np.uint8).tobytes())
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(bits), n, [None, data]).cast(pa.binary())

    val = rng.uniform(0.8, 0.95, n)
    cols = {
        "trial_id": pa.array(ids),
        "kind": pa.array(kinds),
        "attribute": pa.array(attrs),
        "partner": pa.array(partners, pa.string()),
        "lambda": pa.array(lams, pa.float64()),
        "method": pa.array(methods, pa.string()),
        "seed": pa.array(np.zeros(n, np.int64)),
        "status": pa.array(["ok"] * n),
        "best_epoch": pa.array(rng.integers(0, EPOCHS, n)),
        "val_acc": pa.array(val),
        "test_acc": pa.array(val - 0.01),
        "val_acc_by_epoch": curves(),
        "val_loss_by_epoch": curves(),
        "test_acc_by_epoch": curves(),
        "epochs_run": pa.array(np.full(n, EPOCHS)),
        "attempts": pa.array(np.ones(n, np.int64)),
        "train_seconds": pa.array(rng.uniform(50, 200, n)),
        "n_val": pa.array(np.full(n, 8 * max(bits, BITS))),
        "n_test": pa.array(np.full(n, 8 * max(bits, BITS))),
        "backbone": pa.array(["small_cnn"] * n),
        "config_hash": pa.array([cfg.training_hash()] * n),
        "val_correct": packed(),
        "test_correct": packed(),
    }
    return pa.table({f.name: cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in SCHEMA})


class RealisticBits:
    """Per-image bits like a sweep's: one vector per single model, every other model its head's single
    vector with a few percent of the images flipped (a pool of flip masks, each row a random rotation of
    one, so 1M rows cost a gather, not 2e10 random draws)."""

    POOL = 97

    def __init__(self, m: int, n: int, rng):
        self.n, self.nbytes = n, (n + 7) // 8
        self.keep = np.uint8(0xFF ^ ((0xFF >> (n % 8)) if n % 8 else 0))  # the last byte's real bits
        acc = rng.uniform(0.75, 0.97, m)
        self.single = np.packbits(rng.random((m, n)) < acc[:, None], axis=1)
        flips = np.packbits(rng.random((self.POOL, n)) < rng.uniform(0.005, 0.06, (self.POOL, 1)), axis=1)
        self.windows = np.lib.stride_tricks.sliding_window_view(
            np.concatenate([flips, flips], axis=1), self.nbytes, axis=1
        )
        self.rng = rng

    def rows(self, head: np.ndarray, single: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(packed bits, accuracy) per row: head = attribute index, single = row of a single model."""
        out = self.single[head].copy()
        flip = ~single
        k = int(flip.sum())
        out[flip] ^= self.windows[self.rng.integers(0, self.POOL, k), self.rng.integers(0, self.nbytes, k)]
        out[:, -1] &= self.keep
        return out, np.bitwise_count(out).sum(axis=1) / self.n


def _with_bits(table: pa.Table, splits: dict, index: dict) -> pa.Table:
    """`table` with val/test bits and accuracies from `splits` ({"val": RealisticBits, "test": ...})."""
    attr = table.column("attribute").to_numpy(zero_copy_only=False)
    head = np.array([index[a] for a in attr])
    single = table.column("kind").to_numpy(zero_copy_only=False) == "single"
    for split, bits in splits.items():
        packed, acc = bits.rows(head, single)
        blob = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(bits.nbytes), len(packed), [None, pa.py_buffer(packed)]
        ).cast(pa.binary())
        for name, col in (
            (f"{split}_correct", blob),
            (f"{split}_acc", pa.array(acc)),
            (f"n_{split}", pa.array(np.full(len(acc), bits.n, np.int64))),
        ):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, table.schema.field(i), col.cast(table.schema.field(i).type))
    i = table.schema.get_field_index("val_majority")  # a majority-class rate below every model's accuracy
    return table.set_column(i, table.schema.field(i), pa.array(np.full(table.num_rows, 0.6)))


def build(out: Path, m: int, bits: int, images: int = 0) -> tuple[float, int, int]:
    """Write the complete store for M attributes; return (seconds, trials, rows). images > 0: realistic
    bits of that many validation images (RealisticBits), written in chunks of trials."""
    from aal_sweep.analysis.results import chosen_partners
    from aal_sweep.config import load_config
    from aal_sweep.orchestration.trials import plan_adversarial, plan_initial
    from aal_sweep.store import Store

    t0 = time.perf_counter()
    cfg = load_config(config_file(out, m))
    attributes = tuple(cfg.dataset.attributes or __import__("aal_sweep.config").config.resolve_attributes(cfg))
    store = Store(cfg.results)
    rng = np.random.default_rng(m)
    index = {a: i for i, a in enumerate(attributes)}
    splits = (
        {"val": RealisticBits(m, images, rng), "test": RealisticBits(m, TEST_IMAGES.get(images, images), rng)}
        if images
        else {}
    )
    with store.lease(settle_s=0.0):
        store.write_config(cfg, attributes)
        initial = plan_initial(cfg, attributes)
        rows = 0
        if splits:
            chunk = -(-len(initial) // (8 if m >= 500 else 1))
            for start in range(0, len(initial), chunk):
                table = _with_bits(rows_table(initial[start : start + chunk], cfg, rng, 0), splits, index)
                store.import_rows(table)
                rows += table.num_rows
                del table
        else:
            table = rows_table(initial, cfg, rng, bits)
            single = dict(zip(table.column("attribute").to_pylist()[:m], table.column("val_acc").to_pylist()[:m]))
            # every attribute gets a negative partner: its pair cells sit just above, one just below, its single
            attr = table.column("attribute").to_numpy(zero_copy_only=False)
            base = np.array([single[a] for a in attr])
            val = np.where(
                table.column("kind").to_numpy(zero_copy_only=False) == "single",
                base,
                base + rng.uniform(-0.004, 0.02, len(attr)),
            )
            table = table.set_column(table.schema.get_field_index("val_acc"), "val_acc", pa.array(val))
            store.import_rows(table)
            rows = table.num_rows
        partners = chosen_partners(store, rule=cfg.partners)
        adversarial = plan_adversarial(cfg, partners)
        adv = rows_table(adversarial, cfg, rng, 0 if splits else bits)
        if splits:
            adv = _with_bits(adv, splits, index)
        store.import_rows(adv)
        store.write_partners(chosen_partners(store, statistics=True, rule=cfg.partners))
    return time.perf_counter() - t0, len(initial) + len(adversarial), rows + adv.num_rows


def measure(what: str, config: str, repeats: int) -> dict:
    """In this (fresh) process: one warm-up, then `repeats` timings of `what`; seconds and peak RSS."""
    from aal_sweep.config import load_config

    cfg = load_config(config)

    def once():
        if what == "matrix":
            from aal_sweep import open_results

            open_results(cfg.results).matrix()
        elif what == "partners":
            from aal_sweep import open_results

            open_results(cfg.results).partners()
        elif what == "status":
            from aal_sweep.orchestration.status import sweep_status

            sweep_status(cfg.results)
        elif what == "resume":
            from aal_sweep.orchestration.state import open_state

            state = open_state(cfg)  # what `run` does before it would import Ray (orchestration/driver.py)
            assert state.nothing_to_do() and state.tidy(cfg)
        else:
            raise ValueError(what)

    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset at exec, unlike ru_maxrss, which keeps the parent's)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def child(what: str, config: Path, repeats: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, "--config", str(config), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_run(config: Path, repeats: int) -> float:
    aal = str(Path(sys.executable).with_name("aal-sweep"))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = subprocess.run([aal, "run", str(config)], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        assert out.returncode == 0 and "nothing to do" in out.stdout, out.stderr
    return statistics.median(times[1:])


def cli_stats(config: Path, results: Path, out: Path, repeats: int) -> dict:
    """`pairs`, `partners` (partners.parquet current, then removed) and `report` as whole CLI processes:
    {name: (median seconds, peak RSS MB)}, one warm-up each."""
    import os
    import shutil

    aal = str(Path(sys.executable).with_name("aal-sweep"))
    commands = {
        "pairs": [aal, "pairs", str(results)],
        "partners": [aal, "partners", str(results)],
        "partners (stale)": [aal, "partners", str(results)],
        "report": [aal, "report", str(results), "--out", str(out / "report")],
    }
    partners_file = results / "partners.parquet"
    kept = out / "partners.parquet.kept"
    shutil.copyfile(partners_file, kept)
    got = {}
    for name, cmd in commands.items():
        if name == "partners (stale)":
            partners_file.unlink()  # what a query finds while the sweep has moved on: recompute
        times, rss = [], []
        for _ in range(repeats + 1):
            # GNU time's %M: the command's own peak RSS (a child's ru_maxrss would start at this process's,
            # inherited over fork, which is large after a build)
            peak = out / "peak_rss_kb"
            t0 = time.perf_counter()
            with open(os.devnull, "w") as sink:
                done = subprocess.run(
                    ["/usr/bin/time", "-f", "%M", "-o", str(peak), *cmd], stdout=sink, stderr=subprocess.PIPE, text=True
                )
            times.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stderr
            rss.append(int(peak.read_text().split()[-1]) / 1024)
        got[name] = (statistics.median(times[1:]), max(rss[1:]))
        if name == "partners (stale)":
            shutil.copyfile(kept, partners_file)
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, nargs="+", default=[40, 200, 1000])
    p.add_argument("--out", type=Path, default=Path("/tmp/aal-bench-store"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--bits",
        type=int,
        default=BITS,
        help=f"bytes of val_correct / test_correct per row "
        f"(default {BITS}; 0: none, so no per-cell bootstrap at build time)",
    )
    p.add_argument(
        "--images",
        type=int,
        default=0,
        help="realistic bits of this many validation images per row (19867: CelebA's), instead of --bits random bytes",
    )
    p.add_argument(
        "--cli-stats",
        action="store_true",
        help="time pairs / partners / report as CLI processes instead of the store queries",
    )
    p.add_argument("--reuse", action="store_true", help="measure the stores already in --out (build column: -)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for the test suite: M = 6, one repeat, in a temporary folder, both tables (the "
        "--cli-stats one on realistic bits of 200 images)",
    )
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.config, args.repeats)))
        return
    if not args.smoke:
        tables(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for cli_stats, images in ((False, 0), (True, 200)):
            tables(
                argparse.Namespace(
                    **{
                        **vars(args),
                        "m": [6],
                        "repeats": 1,
                        "out": Path(tmp),
                        "reuse": False,
                        "cli_stats": cli_stats,
                        "images": images,
                    }
                )
            )


def tables(args: argparse.Namespace) -> None:
    """Build (or, --reuse, open) the store of each M and print its row of the table."""
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cli_stats:
        print(
            "| M | images | trials | rows | store size | build | pairs | partners | partners (stale) | report "
            "| peak RSS pairs / partners (stale) / report |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print(
            "| M | trials | rows | store size | build | matrix | partners | status | resume-noop | run (CLI) "
            "| peak RSS |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in args.m:
        config = config_file(args.out, m)
        results = args.out / f"results-{m}"
        if args.reuse and results.exists():
            from aal_sweep.store import Store

            rows = len(Store(results).trials(["trial_id"]))
            trials, seconds = len(Store(results).done_ids()), float("nan")
        else:
            if results.exists():
                subprocess.run(["rm", "-rf", str(results)], check=True)
            seconds, trials, rows = build(args.out, m, args.bits, args.images)
        size = sum(f.stat().st_size for f in results.rglob("*") if f.is_file()) / 2**20
        built = "-" if seconds != seconds else f"{seconds:.1f} s"  # NaN: measured a store built before
        if args.cli_stats:
            got = cli_stats(config, results, args.out, args.repeats)
            cells = " | ".join(f"{got[w][0]:.2f} s" for w in ("pairs", "partners", "partners (stale)", "report"))
            rss = " / ".join(f"{got[w][1]:,.0f}" for w in ("pairs", "partners (stale)", "report"))
            print(
                f"| {m} | {args.images or 8 * args.bits:,} | {trials:,} | {rows:,} | {size:,.0f} MB | {built} | "
                f"{cells} | {rss} MB |",
                flush=True,
            )
            continue
        got = {w: child(w, config, args.repeats) for w in ("matrix", "partners", "status", "resume")}
        run_s = cli_run(config, args.repeats)
        rss = max(g["rss_mb"] for g in got.values())
        cells = [f"{got[w]['seconds']:.2f} s" for w in ("matrix", "partners", "status", "resume")]
        print(
            f"| {m} | {trials:,} | {rows:,} | {size:,.0f} MB | {built} | "
            + " | ".join(cells)
            + f" | {run_s:.2f} s | {rss:,.0f} MB |",
            flush=True,
        )
        print(
            "  per query peak RSS (MB): " + ", ".join(f"{w} {g['rss_mb']:.0f}" for w, g in got.items()),
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
