"""aal-sweep: run, status, matrix, partners, report, train, dataset, make-synthetic.

User errors (AalError) print one line on stderr and exit 2, without a traceback. Ray is imported only by
`run` (through aal_sweep.sweep), so the other commands start fast and work without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from aal_sweep.errors import AalError


def _cmd_train(args) -> int:
    from aal_sweep.config import load_config, resolve_attributes
    from aal_sweep.data.cache import open_decoded
    from aal_sweep.train import TrainSpec, fit

    cfg = load_config(args.config)
    attrs = tuple(a for a in args.attributes.split(",") if a)
    names = resolve_attributes(cfg)
    unknown = [a for a in attrs if a not in names]
    if unknown:
        raise AalError(f"--attributes: unknown {unknown} (valid: {', '.join(names)})")
    if args.kind == "adversarial" and args.lam is None:
        raise AalError("--lambda is required with --kind adversarial (e.g. --lambda 0.1)")
    try:
        spec = TrainSpec.from_config(cfg, args.kind, attrs, args.lam if args.kind == "adversarial" else None)
    except ValueError as e:
        raise AalError(f"--attributes: {e}") from None
    data = open_decoded(cfg.dataset.root, cfg.dataset.image_size, cfg.dataset.cache)

    def on_epoch(_state, m):
        print(f"epoch {m['epoch']}: train loss {m['train_loss']:.4f} "
              + " ".join(f"{k} {v:.4f}" for k, v in m.items() if k.startswith("val_acc/")), flush=True)

    result = fit(spec, data, on_epoch)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for h in result.heads:
        print(f"{h.attribute}: val_acc {h.val_acc:.4f} test_acc {h.test_acc:.4f} (best epoch {h.best_epoch})")
    print(f"{result.epochs_run} epochs, {result.train_seconds:.1f}s training, "
          f"{result.train_images_per_second:.0f} img/s on {result.device}")
    return 0


def _cmd_dataset(args) -> int:
    from aal_sweep.data.celeba import describe, load_index

    attrs = [a for a in args.attributes.split(",") if a] if args.attributes else None
    info = describe(load_index(args.root, attrs))
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    s = info["splits"]
    print(f"{args.root}: {sum(s.values())} images; train {s['train']}, val {s['val']}, test {s['test']}")
    width = max(len(a) for a in info["attributes"])
    print(f"{'attribute':<{width}}  {'train':>7} {'val':>7} {'test':>7}   (positive rate)")
    for a, r in info["attributes"].items():
        print(f"{a:<{width}}  " + " ".join("    n/a" if r[k] is None else f"{r[k]:7.4f}" for k in ("train", "val", "test")))
    return 0


def _cmd_make_synthetic(args) -> int:
    from aal_sweep.data.synthetic import make_synthetic

    try:
        root = make_synthetic(args.out, args.attributes, args.images, tuple(args.size), args.seed)
    except ValueError as e:
        raise AalError(str(e)) from None
    print(f"wrote {args.images} images with {args.attributes} attributes to {root}")
    return 0


def _cmd_run(args) -> int:
    from aal_sweep.config import load_config

    cfg = load_config(args.config)
    if args.address is None:
        # The embedded cluster keeps token authentication on (Ray's default since 2.59); saying so before
        # ray is imported silences Ray's warning. A cluster's mode and token come from the environment.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from aal_sweep.sweep import run_sweep

    return run_sweep(cfg, results=args.results, address=args.address, verbose=args.verbose,
                     restart=args.restart)


def _cmd_status(args) -> int:
    from aal_sweep.status import sweep_status

    print(sweep_status(args.results))
    return 0


def _cmd_matrix(args) -> int:
    from aal_sweep.formats import render_matrix
    from aal_sweep.query import Results

    print(render_matrix(Results.open(args.results).matrix(args.metric), args.format))
    return 0


def _cmd_partners(args) -> int:
    from aal_sweep.formats import render_partners
    from aal_sweep.query import Results

    print(render_partners(Results.open(args.results).partners(), args.format))
    return 0


def _cmd_report(args) -> int:
    from aal_sweep.query import Results
    from aal_sweep.report import write_report

    path = write_report(Results.open(args.results), args.out, compare=args.compare)
    print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aal-sweep", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="WARNING", help="Python logging level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="run (or resume) a whole sweep on Ray Tune")
    s.add_argument("config")
    s.add_argument("--results", help="results folder (default: the config's `results`)")
    s.add_argument("--address", help="join a Ray cluster: auto, ray://host:10001 or host:port (default: embedded)")
    s.add_argument("--restart", action="store_true", help="discard the results folder's trials and start over")
    s.add_argument("-v", "--verbose", action="count", default=0, help="-v: Tune's status table, -vv: trial logs")
    s.set_defaults(fn=_cmd_run)

    s = sub.add_parser("status", help="per phase done / failed / pending, and the missing cells")
    s.add_argument("results")
    s.set_defaults(fn=_cmd_status)

    fmts = ("table", "csv", "json", "markdown")
    s = sub.add_parser("matrix", help="the pair matrix (row: measured attribute, column: partner)")
    s.add_argument("results")
    s.add_argument("--metric", choices=("val_acc", "test_acc"), default="val_acc")
    s.add_argument("--format", choices=fmts, default="table")
    s.set_defaults(fn=_cmd_matrix)

    s = sub.add_parser("partners", help="per attribute: partner, single, multi, adversarial (the paper's Table 3)")
    s.add_argument("results")
    s.add_argument("--format", choices=fmts, default="table")
    s.set_defaults(fn=_cmd_partners)

    s = sub.add_parser("report", help="figures and one self-contained index.html")
    s.add_argument("results")
    s.add_argument("--out", required=True)
    s.add_argument("--compare", choices=("paper-celeba", "paper-duke"))
    s.set_defaults(fn=_cmd_report)

    s = sub.add_parser("train", help="one training, locally, without Ray")
    s.add_argument("config")
    s.add_argument("--kind", choices=("single", "pair", "adversarial"), required=True)
    s.add_argument("--attributes", required=True, help="A or A,B (adversarial: primary,partner)")
    s.add_argument("--lambda", dest="lam", type=float)
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("dataset", help="check a dataset folder; images per split, positive rates")
    s.add_argument("root")
    s.add_argument("--attributes", help="A,B,... (default: all)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(fn=_cmd_dataset)

    s = sub.add_parser("make-synthetic", help="write a synthetic dataset in the CelebA layout")
    s.add_argument("out")
    s.add_argument("--attributes", type=int, default=4)
    s.add_argument("--images", type=int, default=2000)
    s.add_argument("--size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_make_synthetic)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except AalError as e:
        print(f"aal-sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aal-sweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
