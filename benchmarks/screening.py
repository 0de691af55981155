"""Time each screening estimator on a dataset folder and write their estimates (no Ray, no exhaustive matrix).

    .venv/bin/python benchmarks/screening.py DATA --size 28 28 --backbone small_cnn --epochs 3 \\
        --batch-size 64 --lr 1e-3 --estimators label_correlation,lookahead,short --out estimates.parquet

DATA is a folder in the CelebA layout (`aal-sweep make-mnist`, `aal-sweep make-synthetic --xor`). Each
estimator runs as it would in a sweep, with the real training code: label_correlation on the training
labels; lookahead as one multitask_all training of `--epochs` with a recording every `--every` steps;
short as every single and every pair trained for `--short-epochs` epochs (`fit`, one after another, where
the sweep would stop real pair trials early). Prints one line per estimator (wall seconds, the cost its
rows sum to) and writes every estimate to `--out` (ESTIMATE_SCHEMA). The exhaustive matrix and the
agreement come from a sweep of the same folder and settings (`aal-sweep run`, `aal-sweep agreement`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

from aal_sweep.analysis.screening import ESTIMATORS, estimates_table, label_correlation, short_scores
from aal_sweep.data.cache import open_decoded
from aal_sweep.train import TrainSpec, fit
from aal_sweep.train.lookahead import EVERY, lookahead_affinity


def short_rows(spec: TrainSpec, data, attributes: list[str]) -> pd.DataFrame:
    """The store-like rows of every single and pair training of `spec` (its epochs are the short budget)."""
    rows = []
    runs = [("single", (a,)) for a in attributes] + [("pair", p) for p in itertools.combinations(attributes, 2)]
    for kind, attrs in runs:
        r = fit(dataclasses.replace(spec, kind=kind, attributes=attrs), data)
        for h in r.heads:
            partner = next((b for b in attrs if b != h.attribute), None)
            rows.append({"kind": kind, "attribute": h.attribute, "partner": partner, "seed": spec.seed,
                         "status": "ok", "val_acc_by_epoch": h.val_acc_by_epoch, "train_seconds": r.train_seconds,
                         "epochs_run": r.epochs_run})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--size", type=int, nargs=2, default=(28, 28))
    p.add_argument("--attributes", help="A,B,... (default: all)")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--epochs", type=int, default=3, help="the lookahead training's epochs")
    p.add_argument("--short-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=EVERY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", help="decode cache folder (default: $AAL_SWEEP_CACHE or ~/.cache/aal_sweep)")
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--out", required=True, help="the estimates' Parquet file")
    args = p.parse_args()
    wanted = args.estimators.split(",")
    unknown = [e for e in wanted if e not in ESTIMATORS]
    if unknown:
        raise SystemExit(f"--estimators: unknown {unknown} (valid: {', '.join(ESTIMATORS)})")
    torch.set_num_threads(args.threads)
    data = open_decoded(args.data, tuple(args.size), args.cache)
    attributes = args.attributes.split(",") if args.attributes else list(data.attributes)
    spec = TrainSpec(kind="multitask_all", attributes=tuple(attributes), backbone=args.backbone, pretrained=None,
                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_milestones=(args.epochs,),
                     seed=args.seed, device=args.device, num_threads=args.threads)
    frames = []
    for name in wanted:
        t0 = time.perf_counter()
        if name == "label_correlation":
            est = label_correlation(data.labels["train"][:, data.columns(attributes)], attributes)
        elif name == "lookahead":
            r = lookahead_affinity(spec, data, args.every)
            est = r.estimates
            print(f"lookahead: {r.steps} recorded steps, {r.lookahead_seconds:.1f} s of {r.seconds:.1f} s training; "
                  f"val acc {', '.join(f'{a} {v:.3f}' for a, v in r.val_acc.items())}")
        else:
            est = short_scores(short_rows(dataclasses.replace(spec, epochs=args.short_epochs), data,
                                          attributes), attributes, args.short_epochs)
        wall = time.perf_counter() - t0
        print(f"{name}: {len(est)} estimates, {wall:.1f} s wall, cost {est['cost'].sum():.1f} s "
              f"(M={len(attributes)}, {args.backbone}, {args.size[0]}x{args.size[1]}, "
              f"{len(data.images['train'])} training images)")
        frames.append(est)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(estimates_table(pd.concat(frames, ignore_index=True)), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
