"""A Duke-scale sweep: every DukeMTMC-attribute identity, the real labels, synthetic small images.

The official duke_attribute.mat (702 training + 1,110 test identities, 23 attributes) beside synthetic
images in the DukeMTMC-reID folder layout (`images-per-identity` each; an identity's positive attributes
are drawn as patches, see aal_sweep/data/synthetic_reid.py). Then the whole sweep (single, pair,
adversarial over the config's lambda grid) with small_cnn for `epochs`, through the public CLI exactly as a
user runs it, and the Table 6 comparison. Minutes to an hour on 2 cores: the suite runs only --smoke.

    .venv/bin/python benchmarks/duke_scale.py --out /tmp/duke_scale --size 32 16 --images-per-identity 3

Writes OUT/summary.json (wall time, trials, the split) and OUT/comparison.md (this sweep beside Table 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from aal_sweep.data.synthetic_reid import make_reid_tree, write_attribute_mat

SHARED_MAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "dukemtmc-attribute" / "duke_attribute.mat"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The public CLI in a child process, so the benchmark measures what a user runs."""
    return subprocess.run([sys.executable, "-m", "aal_sweep.cli", *args], capture_output=True, text=True, check=check)


def write_config(out: Path, root: Path, a: argparse.Namespace) -> Path:
    config = {
        "name": "duke-scale",
        "results": str(out / "results"),
        "dataset": {"format": "duke", "root": str(root), "image_size": list(a.size), "cache": str(out / "cache")},
        "model": {"backbone": "small_cnn", "pretrained": None},
        "train": {"epochs": a.epochs, "batch_size": a.batch_size, "lr": 3e-3, "lr_milestones": [], "seed": 0},
        "phases": ["single", "pair", "adversarial"],
        "resources": {"cpus_per_trial": a.cpus_per_trial, "gpus_per_trial": 0},
    }
    if a.lambdas:
        config["adversarial"] = {"lambdas": a.lambdas}
    path = out / "duke_scale.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def comparison_markdown(results: str) -> str:
    from aal_sweep import open_results
    from aal_sweep.report.formats import markdown  # the markdown the CLI prints
    from aal_sweep.report.tables import comparison, load_reference

    res = open_results(results)
    return markdown(comparison(res.partners(), res.matrix(), load_reference("paper-duke")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/duke_scale"))
    p.add_argument("--mat", type=Path, default=SHARED_MAT, help="the official duke_attribute.mat")
    p.add_argument("--size", type=int, nargs=2, default=(32, 16), metavar=("H", "W"))
    p.add_argument("--images-per-identity", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--lambdas", type=float, nargs="*", help="default: the config's grid (the paper's)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for the test suite: a written duke_attribute.mat of 3 attributes and 24 identities "
        "(no shared data needed), 16x8 images, one lambda; --out defaults to a temporary folder",
    )
    a = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if a.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            if a.out == p.get_default("out"):
                a.out = Path(tmp) / "duke_scale"
            a.mat = smoke_mat(Path(tmp) / "smoke_attribute.mat")
            a.size, a.images_per_identity, a.batch_size, a.lambdas = (16, 8), 2, 16, [0.1]
            bench(a)
        return
    bench(a)


def smoke_mat(path: Path) -> Path:
    """A duke_attribute.mat in the official shape: 3 of Duke's attributes (1 = no, 2 = yes), random labels."""
    rng = np.random.default_rng(0)
    splits = {"train": [f"{i:04d}" for i in range(1, 33, 2)], "test": [f"{i:04d}" for i in range(2, 18, 2)]}
    return write_attribute_mat(
        path,
        "duke_attribute",
        {
            s: (ids, {f: rng.integers(1, 3, len(ids)).tolist() for f in ("backpack", "hat", "gender")})
            for s, ids in splits.items()
        },
    )


def bench(a: argparse.Namespace) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    root = a.out / "DukeMTMC-reID"
    t0 = time.perf_counter()
    if not (root / "bounding_box_test").is_dir():
        make_reid_tree(root, "duke", a.mat, a.images_per_identity, tuple(a.size))
    data_seconds = time.perf_counter() - t0
    config = write_config(a.out, root, a)
    facts = json.loads(cli("dataset", str(root), "--layout", "duke", "--format", "json").stdout)
    print(
        f"dataset: {facts['splits']} images, {facts['identities']} identities ({data_seconds:.0f} s to write)",
        flush=True,
    )

    t0 = time.perf_counter()
    run = cli("run", str(config), check=False)
    wall = time.perf_counter() - t0
    (a.out / "run.log").write_text(run.stdout + run.stderr)
    status = cli("status", str(a.out / "results"), check=False).stdout
    print(f"run: exit {run.returncode}, {wall:.0f} s wall\n{status}", flush=True)
    summary = {
        "wall_seconds": round(wall, 1),
        "exit": run.returncode,
        "status": status,
        "images": facts["splits"],
        "identities": facts["identities"],
        "excluded": facts["excluded"],
        "val_identities": facts["val_identities"],
        "size": list(a.size),
        "images_per_identity": a.images_per_identity,
        "epochs": a.epochs,
    }
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2))
    partners = cli("partners", str(a.out / "results"), "--format", "markdown", check=False)
    (a.out / "partners.md").write_text(partners.stdout + partners.stderr)
    table = comparison_markdown(str(a.out / "results"))
    (a.out / "comparison.md").write_text(table + "\n")
    report = cli(
        "report", str(a.out / "results"), "--out", str(a.out / "report"), "--compare", "paper-duke", check=False
    )
    print(table, report.stdout, report.stderr, sep="\n", flush=True)


if __name__ == "__main__":
    main()
