"""How well each screening estimator finds the exhaustive pair matrix's partners, and at what cost.

For each dataset (a synthetic one with planted negative transfer, `make-synthetic --xor`; a real-image one
from the MNIST digits, `make-mnist`):
 1. the exhaustive sweep (`aal-sweep run`, phases single + pair) gives the true matrix, partners and
    significance;
 2. every estimator scores every ordered pair with the real code: label_correlation on the training labels;
    lookahead as one all-attribute training recording TAG's affinities (train/lookahead.py, the trial a
    screened sweep runs); short from the exhaustive pairs' first `--short-epochs` epochs, which are
    the short trials' epochs exactly (same seed, data order and schedule: a short trial is the pair
    trial stopped early), at their share of the pair trials' training seconds;
 3. for K in 1, 2, 3 and both confirmation rules, the confirmed pairs are the exhaustive sweep's own pair
    trials (a screened sweep trains the same trials, same ids and seeds: tests/test_screening_sweep.py
    checks their accuracies are equal), so partners and statistics come from those cells only, as a
    screened sweep decides them (analysis/results.py), and agreement is screening.agreement;
 4. one real screened sweep per dataset (`aal-sweep run` with pairs.mode screened, lookahead, K = 2) is
    checked against step 3: `aal-sweep agreement` must give the same recall.
Cost = (estimator + confirmed pair trials) training seconds / exhaustive pair-phase training seconds.
Projected to 40 attributes (a projection, not a measurement): pair trials and their mean seconds scale
as M(M-1)/2; confirmed pairs per attribute stay as measured; label_correlation costs nothing; short
scales with the pairs; lookahead's recording steps cost M lookahead steps each (their measured seconds
x 40 / M) on top of one multi-task training.

    .venv/bin/python benchmarks/screening.py --out docs/screening-benchmark.json --figure docs/screening.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aal_sweep import open_results  # noqa: E402
from aal_sweep.analysis.matrix import pair_matrix  # noqa: E402
from aal_sweep.analysis.partners import derive_partners, partner_statistics  # noqa: E402
from aal_sweep.analysis.screening import (  # noqa: E402
    agreement,
    candidates,
    confirmation_pairs,
    expected_cells,
    label_correlation,
    matrix_drops,
    short_scores,
)
from aal_sweep.config import load_config  # noqa: E402
from aal_sweep.data.cache import open_decoded  # noqa: E402
from aal_sweep.data.index import load_index  # noqa: E402
from aal_sweep.orchestration.trials import Trial  # noqa: E402
from aal_sweep.store.core import STATS_COLUMNS  # noqa: E402
from aal_sweep.train.lookahead import lookahead_affinity  # noqa: E402

KS = (1, 2, 3)
RULES = ("top_k", "adaptive")
PROJECT_TO = 40


def make_data(name: str, tmp: Path, images: int) -> Path:
    if (tmp / name / "list_attr_celeba.txt").is_file():  # kept from an earlier run (--work)
        return tmp / name
    if name == "xor":  # 9 shapes + Xor = Disc XOR Square: a planted negative partner of Square
        from aal_sweep.data.synthetic import make_synthetic

        return make_synthetic(tmp / name, n_attributes=9, n_images=images, size=(16, 16), seed=0, xor=True)
    from aal_sweep.data.mnist import make_mnist_attributes

    return make_mnist_attributes(tmp / name, n_images=images, size=(16, 16), seed=0)


def write_config(tmp: Path, name: str, root: Path, epochs: int, **pairs) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "results": str(tmp / name),
                "dataset": {"root": str(root), "image_size": [16, 16], "cache": str(tmp / "cache")},
                "model": {"backbone": "small_cnn"},
                "train": {"epochs": epochs, "batch_size": 64, "lr": 3e-3, "lr_milestones": [epochs]},
                "phases": ["single", "pair"],
                "resources": {"cpus_per_trial": 1},
                **({"pairs": {"mode": "screened", **pairs}} if pairs else {}),
            }
        )
    )
    return path


def run(path: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if out.returncode != 0:
        raise SystemExit(f"{path}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def confirmed_outcome(exhaustive, rows: pd.DataFrame, estimates: pd.DataFrame, k: int, rule: str):
    """What a screened sweep decides from the exhaustive sweep's own pair trials of the confirmed pairs."""
    attrs = exhaustive.attributes
    pairs = confirmation_pairs(candidates(estimates, attrs, k, rule), attrs)
    keep = {frozenset(p) for p in pairs}
    cell = rows["partner"].isna().to_numpy() | np.array(
        [frozenset((a, b)) in keep for a, b in zip(rows["attribute"], rows["partner"])], dtype=bool
    )
    mine = rows[cell & rows["kind"].isin(["single", "pair"])]
    derived = derive_partners(pair_matrix(mine, attrs, "val_acc"), expected=expected_cells(attrs, pairs))
    chosen = partner_statistics(derived, mine, attrs, exhaustive.config.partners, intervals=False).chosen
    return pairs, chosen


def one_dataset(name: str, tmp: Path, args) -> list[dict]:
    root = make_data(name, tmp, args.images)
    ex_path = write_config(tmp, f"{name}-exhaustive", root, args.epochs)
    wall = run(ex_path)
    ex = open_results(str(tmp / f"{name}-exhaustive"))
    attrs = ex.attributes
    rows = ex.trials(STATS_COLUMNS + ["val_acc_by_epoch", "train_seconds", "epochs_run"])
    per_trial = ex.trials(["trial_id", "kind", "attribute", "partner", "train_seconds"]).drop_duplicates("trial_id")
    pair_cells = {
        frozenset((a, b)): sec
        for kind, a, b, sec in zip(
            per_trial["kind"], per_trial["attribute"], per_trial["partner"], per_trial["train_seconds"]
        )
        if kind == "pair"
    }
    pair_seconds = float(per_trial.loc[per_trial["kind"] == "pair", "train_seconds"].sum())
    n_pairs = int((per_trial["kind"] == "pair").sum())
    truth = ex.chosen_partners(statistics=True)
    drops = matrix_drops(ex.matrix("val_acc"))
    print(
        f"{name}: {len(attrs)} attributes, exhaustive sweep {wall:.0f} s wall, {n_pairs} pair trials, "
        f"{pair_seconds:.1f} s pair training; partners {int(truth['partner'].notna().sum())}, significant "
        f"{int(truth['significant'].fillna(False).astype(bool).sum())}",
        flush=True,
    )

    cfg = load_config(ex_path)
    labels = load_index(cfg.dataset.source(), attrs, check_images=False).labels["train"]
    t0 = time.perf_counter()
    estimates = {"label_correlation": label_correlation(labels, attrs).assign(cost=0.0)}
    estimates["label_correlation"]["cost"] = (time.perf_counter() - t0) / len(estimates["label_correlation"])
    data = open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache)
    spec = Trial("look", "lookahead", tuple(attrs)).spec(cfg)
    look = lookahead_affinity(dataclasses.replace(spec, num_threads=1), data, every=args.every)
    estimates["lookahead"] = look.estimates
    estimates["short"] = short_scores(rows.assign(kind=rows["kind"].astype(object)), attrs, args.short_epochs)
    est_seconds = {k: float(v["cost"].sum()) for k, v in estimates.items()}
    look_extra = look.lookahead_seconds

    out = []
    for estimator, est in estimates.items():
        for rule in RULES:
            for k in KS:
                pairs, chosen = confirmed_outcome(ex, rows, est, k, rule)
                pair_cost = float(sum(pair_cells[frozenset(p)] for p in pairs))
                a = agreement(
                    chosen,
                    truth,
                    pairs,
                    est,
                    drops,
                    (len(pairs), n_pairs),
                    (est_seconds[estimator] + pair_cost, pair_seconds),
                )
                m = len(attrs)
                t_pair = pair_seconds / n_pairs
                est40 = {
                    "label_correlation": 0.0,
                    "short": est_seconds["short"] / n_pairs * PROJECT_TO * (PROJECT_TO - 1) / 2,
                    "lookahead": est_seconds["lookahead"] - look_extra + look_extra * PROJECT_TO / m,
                }[estimator]
                n40 = len(pairs) / m * PROJECT_TO
                projected = (est40 + n40 * t_pair) / (PROJECT_TO * (PROJECT_TO - 1) / 2 * t_pair)
                row = {
                    "dataset": name,
                    "estimator": estimator,
                    "rule": rule,
                    "k": k,
                    **a,
                    "projected_cost_40": projected,
                    "confirmed_pairs": len(pairs),
                }
                out.append(row)
                print(
                    f"  {estimator:<17} {rule:<8} K={k}: recall {a['recall']}, significant {a['recall_significant']}, "
                    f"top1 {a['top1_agreement']}, spearman {a['spearman']}, cost {a['cost']:.2f}, "
                    f"projected at 40: {projected:.2f}",
                    flush=True,
                )

    # the real screened sweep must agree with the offline derivation of the same choice
    scr_path = write_config(
        tmp, f"{name}-screened", root, args.epochs, estimator="lookahead", confirm=2, every=args.every
    )
    run(scr_path)
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "aal_sweep.cli",
            "agreement",
            str(tmp / f"{name}-screened"),
            "--against",
            str(tmp / f"{name}-exhaustive"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    real = json.loads(got.stdout)
    print(
        f"  real screened sweep (lookahead, K=2, top_k): recall {real['recall']}, significant "
        f"{real['recall_significant']}, cost {real['cost']:.2f} ({real['pair_trials']})",
        flush=True,
    )
    out.append({"dataset": name, "estimator": "lookahead", "rule": "top_k", "k": 2, "real_sweep": True, **real})
    return out


def figure(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    markers = {"xor": "o", "mnist": "s"}
    colours = {"label_correlation": "#8c8c8c", "lookahead": "#2166ac", "short": "#d6604d"}
    for r in rows:
        if r.get("real_sweep") or r["rule"] != "top_k" or r["recall_significant"] is None:
            continue
        ax.scatter(
            r["cost"],
            r["recall_significant"],
            marker=markers[r["dataset"]],
            color=colours[r["estimator"]],
            s=30 + 20 * r["k"],
        )
        ax.annotate(
            f"K={r['k']}", (r["cost"], r["recall_significant"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    for e, c in colours.items():
        ax.scatter([], [], color=c, label=e)
    for d, mk in markers.items():
        ax.scatter([], [], marker=mk, color="black", label=d)
    ax.axhline(0.9, ls=":", color="black", lw=0.8)
    ax.set_xlabel("cost: screened / exhaustive pair-phase training seconds (measured at 10 and 12 attributes)")
    ax.set_ylabel("recall of significant partners")
    ax.set_title("Screened pair phase: recall against cost (top_k; dotted: the 90% goal)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="xor,mnist")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--short-epochs", type=int, default=1)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--out", help="every number as JSON")
    p.add_argument("--work", help="keep datasets and results here (a rerun then trains nothing already stored)")
    p.add_argument("--replot", help="only redraw --figure and reprint the table from this --out JSON")
    p.add_argument("--figure", help="recall against cost, PNG")
    args = p.parse_args()
    if args.replot:
        rows = json.loads(Path(args.replot).read_text())
        if args.figure:
            figure(rows, Path(args.figure))
        print(markdown_table(rows))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets.split(","):
            rows += one_dataset(name, work, args)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
    if args.figure:
        figure(rows, Path(args.figure))
    print()
    print(markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """The docs' table: per dataset, estimator, rule and K, what was found and what it cost."""
    cols = [
        "dataset",
        "estimator",
        "rule",
        "k",
        "recall",
        "recall_significant",
        "top1_agreement",
        "spearman",
        "cost",
        "projected_cost_40",
    ]
    cell = lambda v: "—" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows if not r.get("real_sweep")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
