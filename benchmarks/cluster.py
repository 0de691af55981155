"""Orchestration overhead per trial on one Ray node vs a 3-node local Ray cluster, same number of slots.

Trivial trials (1 epoch of small_cnn on 40 images of 8x8), the real `aal-sweep run --address` driver in a
subprocess joining a cluster of ray.cluster_utils.Cluster nodes on this machine (the tests' plumbing,
tests/ray_nodes.py). Cluster start-up is timed apart; the sweep's wall time includes the driver's own start.

    .venv/bin/python benchmarks/cluster.py --attributes 6 --slots 3

overhead per trial = (wall - training / slots) / trials.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported: this process talks to the GCS too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_nodes import isolated_env, local_cluster  # noqa: E402

from aal_sweep.data.synthetic import make_synthetic  # noqa: E402
from aal_sweep.store import Store  # noqa: E402


def sweep(tmp: Path, root: Path, name: str, address: str, env: dict) -> tuple[float, int, float, int]:
    """Wall time, trials, summed training seconds and distinct nodes of one sweep run to the end."""
    config = tmp / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "results": str(tmp / name),
                "dataset": {"root": str(root), "image_size": [8, 8], "cache": str(tmp / "cache")},
                "model": {"backbone": "small_cnn"},
                "train": {"epochs": 1, "batch_size": 16},
                "phases": ["single", "pair"],
                "resources": {"cpus_per_trial": 1},
            }
        )
    )
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(config), "--address", address],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    rows = Store(str(tmp / name)).trials().drop_duplicates("trial_id")
    return wall, len(rows), float(rows["train_seconds"].sum()), rows["node_id"].nunique()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attributes", type=int, default=6)
    p.add_argument("--slots", type=int, default=3, help="concurrent trials in both layouts")
    p.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 2 attributes, 2 slots")
    a = p.parse_args()
    if a.smoke:
        a.attributes, a.slots = 2, 2
    layouts = {  # (head, workers): with workers, the head hosts the driver and no trial
        "one node": ({"num_cpus": a.slots}, []),
        f"{a.slots} nodes": ({"num_cpus": 0}, [{"num_cpus": 1}] * a.slots),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_synthetic(tmp / "d", a.attributes, 40, (8, 8))
        print("| layout | cluster start | trials | wall | training (sum) | nodes used | overhead per trial |")
        print("|---|---|---|---|---|---|---|")
        for name, (head, workers) in layouts.items():
            env = isolated_env()
            t0 = time.perf_counter()
            with local_cluster(env, workers, head=head) as cluster:
                started = time.perf_counter() - t0
                wall, n, train, nodes = sweep(tmp, root, name.replace(" ", "_"), cluster.address, env)
            print(
                f"| {name} | {started:.1f} s | {n} | {wall:.1f} s | {train:.2f} s | {nodes} | "
                f"**{(wall - train / a.slots) / n:.2f} s** |",
                flush=True,
            )


if __name__ == "__main__":
    main()
