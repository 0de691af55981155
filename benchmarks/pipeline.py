"""One Tune run released by dependencies vs. the phase-by-phase driver: wall time and slot utilization.

The same sweep (single, pair, multitask_all and adversarial trials of unequal lengths) is run to its end by
`aal-sweep run` from this checkout and from another commit (a git worktree of the phase-by-phase driver),
alternated, each in a fresh process with a fresh results folder, on the embedded Ray with `--slots` CPUs.
The decode cache is built once before the first run. Everything is read from the runs' journals (each
trial's `start` and last `epoch` event): nothing is timed inside the code under test.

    git worktree add /tmp/aal-phases 0e0769d          # the last commit of the phase-by-phase driver
    .venv/bin/python benchmarks/pipeline.py --baseline /tmp/aal-phases --attributes 6 --repeats 2

utilization = training-busy seconds / (slots x wall); wall = the CLI's process wall time; span = first trial
start to last trial end; idle = slot-seconds with no trial in [first start, last end]; longest gap = the
longest stretch before the last trial started during which a slot had no trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aal_sweep.data.cache import open_decoded  # noqa: E402
from aal_sweep.data.index import DatasetSource  # noqa: E402
from aal_sweep.data.synthetic import make_synthetic  # noqa: E402
from aal_sweep.store import Store  # noqa: E402


def config(tmp: Path, root: Path, name: str, args) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "results": str(tmp / name),
                "dataset": {"root": str(root), "image_size": [args.size, args.size], "cache": str(tmp / "cache")},
                "model": {"backbone": "small_cnn"},
                "train": {"epochs": args.epochs, "batch_size": 32, "lr": 3e-3, "lr_milestones": [args.epochs]},
                "adversarial": {"method": "grl", "lambdas": [0.1, 0.5]},
                "phases": ["single", "pair", "multitask_all", "adversarial"],
                "resources": {"cpus_per_trial": 1, "max_concurrent": args.slots},
            }
        )
    )
    return path


def run(code: Path, path: Path) -> float:
    """`aal-sweep run` of `code` (a checkout) to the end; its wall time."""
    env = dict(os.environ, PYTHONPATH=str(code), RAY_AUTH_MODE="token")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(path)], env=env, cwd=code, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{code}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall


def intervals(results: Path) -> list[tuple[float, float]]:
    """Each trial attempt's busy interval: its `start` event to its last `epoch` event."""
    store = Store(results)
    out = []
    for trial in store.journaled():
        events = store.journal(trial)
        starts = [i for i, e in enumerate(events) if e["event"] == "start"]
        for k, i in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(events)
            epochs = [e["time"] for e in events[i:end] if e["event"] == "epoch"]
            if epochs:
                out.append((events[i]["time"], epochs[-1]))
    return out


def measure(spans: list[tuple[float, float]], slots: int, wall: float) -> dict:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    first, last_end = edges[0][0], edges[-1][0]
    last_start = max(s for s, _ in spans)
    busy_s = sum(e - s for s, e in spans)
    idle, longest, running, t_prev, gap_from = 0.0, 0.0, 0, first, None
    for t, step in edges:
        idle += max(0, slots - running) * (t - t_prev)
        if running < slots and gap_from is None:
            gap_from = t_prev
        running += step
        if running >= slots and gap_from is not None:
            longest = max(longest, min(t, last_start) - gap_from)
            gap_from = None
        t_prev = t
    if gap_from is not None:
        longest = max(longest, last_start - gap_from)
    return {
        "wall": wall,
        "span": last_end - first,
        "busy": busy_s,
        "utilization": busy_s / (slots * wall),
        "span_utilization": busy_s / (slots * (last_end - first)),
        "idle": idle,
        "longest_gap": longest,
        "attempts": len(spans),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="a checkout (git worktree) of the phase-by-phase driver")
    p.add_argument("--attributes", type=int, default=6)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", help="write every run's numbers as JSON here")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="for the test suite: 2 attributes, 1 epoch, one run of each design; without --baseline this "
        "checkout's only (a baseline run is the same code, `run`, on another checkout)",
    )
    a = p.parse_args()
    if a.smoke:
        a.attributes, a.images, a.size, a.epochs, a.repeats = 2, 100, 8, 1, 1
    elif not a.baseline:
        p.error("--baseline is required: a checkout (git worktree) of the phase-by-phase driver")
    designs = {"graph (this checkout)": ROOT}
    if a.baseline:
        designs["phases (baseline)"] = Path(a.baseline).resolve()
    rows: dict[str, list[dict]] = {d: [] for d in designs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_synthetic(tmp / "data", a.attributes, a.images, (a.size, a.size), seed=0)
        open_decoded(DatasetSource(root), (a.size, a.size), str(tmp / "cache"))  # built once, before any run
        for k in range(a.repeats):
            for d, code in designs.items() if k % 2 == 0 else reversed(designs.items()):
                name = f"{'graph' if code == ROOT else 'phases'}-{k}"
                path = config(tmp, root, name, a)
                wall = run(code, path)
                m = measure(intervals(tmp / name), a.slots, wall)
                rows[d].append(m)
                print(f"{d} run {k + 1}: " + ", ".join(f"{key} {v:.2f}" for key, v in m.items()), flush=True)
    print(f"\n{a.attributes} attributes, {a.slots} slots, median of {a.repeats} runs each (alternated)\n")
    print(
        "| design | trials | wall | utilization (wall) | utilization (first start to last end) | idle slot-s | "
        "longest gap |"
    )
    print("|---|---|---|---|---|---|---|")
    for d, ms in rows.items():
        med = {key: statistics.median(m[key] for m in ms) for key in ms[0]}
        print(
            f"| {d} | {int(med['attempts'])} | {med['wall']:.1f} s | {100 * med['utilization']:.0f}% | "
            f"{100 * med['span_utilization']:.0f}% | {med['idle']:.1f} | {med['longest_gap']:.1f} s |"
        )
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
