"""aal-sweep: run, submit, plan, config, status, matrix, pairs, partners, table, report, train, dataset, make-synthetic,
make-mnist.

User errors (AalError) print one line on stderr and exit 2, without a traceback. Ray is imported only by
`run` (through aal_sweep.orchestration.driver) and `submit` (aal_sweep.orchestration.submit), so the other
commands start fast and work without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from aal_sweep.errors import AalError
from aal_sweep.paths import require_folder
from aal_sweep.progress import Progress


def _cmd_train(args) -> int:
    from aal_sweep.config import load_config, resolve_attributes
    from aal_sweep.data.cache import open_decoded
    from aal_sweep.train import TrainSpec, fit

    attrs = tuple(a for a in args.attributes.split(",") if a)
    _check_train_args(args, attrs)
    cfg = load_config(args.config, overrides=args.set)
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
    # a build happens once per dataset and size; a small one (seconds) stays quiet
    with Progress("decoding images into the cache", sys.stderr, delay_s=CACHE_PROGRESS_DELAY_S) as bar:
        data = open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache, progress=bar.update)

    def on_epoch(_state, m):
        print(
            f"epoch {m['epoch']}: train loss {m['train_loss']:.4f} "
            + " ".join(f"{k} {v:.4f}" for k, v in m.items() if k.startswith("val_acc/")),
            flush=True,
        )

    result = fit(spec, data, on_epoch)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for h in result.heads:
        print(f"{h.attribute}: val_acc {h.val_acc:.4f} test_acc {h.test_acc:.4f} (best epoch {h.best_epoch})")
    print(
        f"{result.epochs_run} epochs, {result.train_seconds:.1f}s training, "
        f"{result.train_images_per_second:.0f} img/s on {result.device}"
    )
    return 0


CACHE_PROGRESS_DELAY_S = 5.0


def _check_train_args(args, attrs: tuple[str, ...]) -> None:
    """What argparse cannot say about `train`'s arguments, before any file is read."""
    twice = sorted({a for a in attrs if attrs.count(a) > 1})
    if twice:
        raise AalError(
            f"--attributes: {', '.join(twice)} given twice (a pair or adversarial training needs two "
            f"different attributes, e.g. --attributes Smiling,Male)"
        )
    if args.lam is not None and args.kind != "adversarial":
        raise AalError(f"--lambda applies to --kind adversarial only (this is --kind {args.kind}; drop --lambda)")
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam > 0):
        raise AalError(f"--lambda: {args.lam} must be a finite number greater than 0 (e.g. --lambda 0.1)")


def _verify(index):
    """Decode every image of `index`, with a progress line on stderr; None when all decode, else the
    error naming every bad one (its `bad`: (path, problem) pairs)."""
    from aal_sweep.data.cache import default_workers, verify_images
    from aal_sweep.errors import BadImagesError

    paths = [f if index.reader else str(index.image_path(f)) for files in index.files.values() for f in files]
    workers = default_workers()
    with Progress(f"verifying images with {workers} threads", sys.stderr) as bar:
        bad = verify_images(paths, workers, progress=bar.update, reader=index.reader)
    return BadImagesError(str(index.root), bad, len(paths)) if bad else None


def _cmd_dataset(args) -> int:
    from aal_sweep.data.index import load_index
    from aal_sweep.data.types import DatasetSource, describe

    attrs = [a for a in args.attributes.split(",") if a] if args.attributes else None
    if (args.root is None) == (args.config is None):
        raise AalError("dataset: pass a dataset folder (ROOT) or a sweep config (--config jobs/x.yaml), one of them")
    if args.config is not None:  # the sweep's dataset section: the way to check a table dataset
        from aal_sweep.config import load_config

        source = load_config(args.config, check_files=False).dataset.source()
        args.val_fraction, args.split_seed = source.val_fraction, source.split_seed
    else:
        source = DatasetSource(args.root, args.layout, args.val_fraction, args.split_seed)
    index = load_index(source, attrs)
    info = describe(index)
    bad = _verify(index) if args.verify else None
    if args.verify:
        info["bad_images"] = [
            {"file": p if index.reader else os.path.relpath(p, index.root), "problem": why}
            for p, why in (bad.bad if bad else [])
        ]
    if args.format == "json":
        print(json.dumps(info, indent=2))
        if bad:
            raise bad
        return 0
    s = info["splits"]
    print(f"{source}: {sum(s.values())} images; train {s['train']}, val {s['val']}, test {s['test']}")
    width = max(len(a) for a in info["attributes"])
    if "labelled" in info:  # some labels are unknown: the rate is among the labelled images
        print(f"{'attribute':<{width}}  {'train':>15} {'val':>15} {'test':>15}   (labelled images, positive rate)")
    else:
        print(f"{'attribute':<{width}}  {'train':>7} {'val':>7} {'test':>7}   (positive rate)")
    for a, r in info["attributes"].items():
        rates = ["    n/a" if r[k] is None else f"{r[k]:7.4f}" for k in ("train", "val", "test")]
        if "labelled" in info:
            rates = [f"{info['labelled'][a][k]:7d} {rate}" for k, rate in zip(("train", "val", "test"), rates)]
        print(f"{a:<{width}}  " + " ".join(rates))
    for note in info.get("notes", []):
        print(f"note: {note}")
    if "identities" in info:  # the reID layouts: labels per identity, validation carved from train
        n = info["identities"]
        print(
            f"identities: train {n['train']}, val {n['val']}, test {n['test']}; validation identities "
            f"(val_fraction {args.val_fraction}, split_seed {args.split_seed}): {' '.join(info['val_identities'])}"
        )
        for identity, why in info["excluded"].items():
            print(f"excluded: identity {identity}, {why}")
    if args.verify:
        for entry in info["bad_images"]:
            print(f"bad: {entry['file']} ({entry['problem']})")
        if bad:
            raise bad
        print(f"verified {sum(s.values())} images: all decode")
    return 0


NOISY_HELP = (
    "also an attribute Noisy: {first}'s labels with this share flipped at random (a subjective annotation: "
    "a partner that may hurt many attributes)"
)


def _cmd_make_synthetic(args) -> int:
    from aal_sweep.data.synthetic import make_synthetic

    require_folder(args.out, "OUT")
    try:
        root = make_synthetic(
            args.out,
            args.attributes,
            args.images,
            tuple(args.size),
            args.seed,
            random_attributes=args.random_attributes,
            xor=args.xor,
            noisy=args.noisy,
        )
    except ValueError as e:
        raise AalError(str(e)) from None
    print(f"wrote {args.images} images with {args.attributes} attributes to {root}")
    return 0


def _cmd_make_mnist(args) -> int:
    from aal_sweep.data.mnist import ATTRIBUTES, make_mnist_attributes

    require_folder(args.out, "OUT")
    try:
        root = make_mnist_attributes(args.out, args.images, tuple(args.size), args.seed, args.source, args.noisy)
    except ValueError as e:
        raise AalError(str(e)) from None
    print(f"wrote {args.images} MNIST test images with {len(ATTRIBUTES) + bool(args.noisy)} attributes to {root}")
    return 0


def _cmd_run(args) -> int:
    from aal_sweep.config import load_config

    cfg = load_config(args.config, overrides=args.set)
    require_folder(args.results or cfg.results, "--results" if args.results else "results")
    if args.address is None:
        # The embedded cluster keeps token authentication on (Ray's default since 2.59); saying so before
        # ray is imported silences Ray's warning. A cluster's mode and token come from the environment.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        # Ray's single-machine mode (its default on macOS and Windows): the node's address is 127.0.0.1,
        # so gcs, raylet, agents and workers listen on loopback only (ray._private.services.get_node_ip_address).
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from aal_sweep.orchestration.state import nothing_to_do_line, open_state, parse_address

    parse_address(args.address)  # a bad address is refused even when there is nothing to do
    # no Ray, and no torch with a built-in backbone (a timm/ or torchvision/ one was checked, with torch, when
    # the config was read): a finished sweep answers at once
    state = open_state(cfg, args.results, args.restart, args.allow_partial)
    if state.nothing_to_do() and state.tidy(cfg, args.allow_partial):
        print(nothing_to_do_line(state.store))
        return 0
    from aal_sweep.orchestration import driver

    bars: list[Progress] = []

    def progress(step: str, unit: str):
        """A long step's progress on stderr: a bar on a terminal, lines in a log; silent when it is short
        (the cache already built, a small store to compact)."""
        bars.append(Progress(step, sys.stderr, unit=unit, delay_s=5.0))
        return bars[-1].update

    try:
        return driver.run(
            cfg,
            results=args.results,
            address=args.address,
            verbose=args.verbose,
            restart=args.restart,
            allow_partial=args.allow_partial,
            on_event=show,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()


def show(event) -> None:
    """Print a driver event (orchestration/events.py): notes and progress on stdout, errors on stderr; a
    job's log chunks as they come."""
    end = "" if event.kind == "log" else "\n"
    print(event.text, file=sys.stderr if event.level == "error" else sys.stdout, end=end, flush=True)


def _cmd_submit(args) -> int:
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise AalError("submit: no job server named; pass --address http://HEAD:8265 (or set RAY_ADDRESS)")
    token = (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    )
    if token:
        # Ray sends its token only in token mode, which it reads once, at import: say so before importing it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from aal_sweep.orchestration.submit import cluster_config, submit

    cfg = cluster_config(args.config, args.results, args.set)
    return submit(cfg, address, args.wait, on_event=show, agent_timeout=args.agent_timeout)


def _positive_seconds(text: str) -> float:
    """--agent-timeout's value: a finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0 (e.g. 300)")
    return value


def _cmd_plan(args) -> int:
    from aal_sweep.config import load_config, resolve_attributes, unchecked_files
    from aal_sweep.orchestration.estimate import default_throughput_path, estimate, read_throughput, render_plan

    # before the images are there: the annotation files are checked when present, a listed
    # dataset.attributes is taken as it is, and the plan says what it could not check
    cfg = load_config(args.config, check_files="annotations", overrides=args.set)
    source = Path(args.throughput) if args.throughput else default_throughput_path()
    if args.throughput and not source.is_file():
        raise AalError(f"--throughput: {args.throughput!r} is not a file (write one with benchmarks/gpu.py --out)")
    unchecked = unchecked_files(cfg)
    sizes = _split_sizes(cfg, unchecked)
    from aal_sweep.orchestration.graph import plan_summary

    attributes = tuple(resolve_attributes(cfg))
    plan = estimate(cfg, attributes, sizes, read_throughput(source), str(source), unchecked=unchecked)
    plan["graph"] = plan_summary(cfg, attributes)  # per kind: what it needs, how many are done / wait
    print(render_plan(plan, args.format))
    return 0


def _split_sizes(cfg, unchecked: list[str]) -> dict[str, int] | None:
    """Images per split, from the annotation files (duke / market: also the image folders, which index
    their images); None, with the reason added to `unchecked`, when one of those is not there yet. A file
    that is there and broken is an error, as for `run`."""
    from aal_sweep.data.index import fingerprint_inputs, load_index
    from aal_sweep.errors import DataError

    try:
        index = load_index(cfg.dataset.source(), cfg.dataset.attributes, check_images=False)
    except DataError as e:
        try:
            files, folders, _ = fingerprint_inputs(cfg.dataset.source())
        except DataError:  # duke / market without their attribute file
            files, folders = [], []
        needed = files if cfg.dataset.format == "celeba" else files + folders
        if Path(cfg.dataset.root).is_dir() and files and all(p.exists() for p in needed):
            raise  # everything it reads is there: the files themselves are wrong
        unchecked.append(f"split sizes not counted: {e}")
        return None
    return {split: len(names) for split, names in index.files.items()}


def _cmd_config(args) -> int:
    import yaml

    from aal_sweep.config import config_source, load_config, recorded_config, resolve_attributes
    from aal_sweep.store.location import shown_uri

    cfg = load_config(args.config, overrides=args.set)
    d = recorded_config(cfg, resolve_attributes(cfg), shown_uri(cfg.results))
    print(
        f"# {config_source(args.config, args.set)}, resolved and validated: the config sweep.yaml records "
        f"(training hash {cfg.training_hash()})"
    )
    print(yaml.safe_dump(d, sort_keys=False), end="")
    return 0


def _cmd_status(args) -> int:
    from aal_sweep.orchestration.status import sweep_status

    print(sweep_status(args.results))
    return 0


def _cmd_matrix(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.report.formats import render_drop_matrix, render_matrix

    results = open_results(args.results)
    if args.estimated:  # a screened sweep's estimates: effects estimated, never measured accuracies
        if args.metric != "val_acc" or args.ci:
            raise AalError("--estimated shows the screening estimates; drop --metric and --ci")
        print(render_matrix(results.estimated_matrix(), args.format))
        return 0
    if args.metric == "drop":  # from the pairs' statistics: P[a][b] - P[a][a], intervals, significance
        print(render_drop_matrix(results.pairs(), results.attributes, args.format, ci=args.ci))
        return 0
    if args.metric == "drop_se":  # each drop's standard error (what `simulate --se` reads)
        if args.ci:
            raise AalError("--ci applies to --metric drop; drop_se is already each drop's standard error")
        from aal_sweep.analysis.pairs import drop_se_matrix

        print(render_matrix(drop_se_matrix(results.pairs(), results.attributes), args.format))
        return 0
    if args.ci:
        raise AalError("--ci applies to --metric drop (intervals are of differences; add --metric drop)")
    print(render_matrix(results.matrix(args.metric), args.format))
    return 0


def _cmd_pairs(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.report.formats import render_pairs

    print(render_pairs(open_results(args.results).pairs(), args.format))
    return 0


def _cmd_partners(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.report.formats import render_partners

    partners = open_results(args.results).partners()
    if partners.attrs.get("screening") and args.format in ("table", "markdown"):
        print(partners.attrs["screening"])  # csv / json carry the candidates column
    print(render_partners(partners, args.format))
    return 0


def _cmd_agreement(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.analysis.results import agreement_of

    found = agreement_of(open_results(args.screened), open_results(args.against))
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    for key, value in found.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        print(f"{key:<26} {'—' if value is None else value}")
    return 0


def _cmd_simulate(args) -> int:
    from aal_sweep.analysis.simulate import read_matrix, simulate_matrix
    from aal_sweep.config import apply_overrides, parse_pairs

    bad = [o for o in args.set if not o.startswith("pairs.")]
    if bad:
        raise AalError(f"--set {bad[0]}: simulate takes pairs settings only (--set pairs.KEY=VALUE)")
    given = [f"pairs.{k}={v}" for k, v in (("budget", args.budget), ("seed", args.seed)) if v is not None]
    source = "simulate" + "".join(f" --set {o}" for o in [*given, *args.set])
    pairs = parse_pairs(apply_overrides({"pairs": {"mode": "screened"}}, [*given, *args.set]), source)
    matrix = read_matrix(args.matrix)
    se = read_matrix(args.se, like=matrix) if args.se else None
    found = simulate_matrix(matrix, se, pairs, args.matrix)
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    print(found["summary"])
    print(f"pairs trained: {len(found['pairs_trained'])} (cost {found['cost']:.3f} of the exhaustive pair trials)")
    width = max(len(a) for a in found["partners"])
    print(f"{'attribute':<{width}}  {'partner':<{width}}  decided     round  P(partner measured)")
    for a, b in found["partners"].items():
        ev = found["evidence"][a]
        p = "—" if ev["p_measured"] is None else f"{ev['p_measured']:.3f}"
        print(f"{a:<{width}}  {b or '—':<{width}}  {ev['decided']:<10}  {ev['round']:>5}  {p}")
    return 0


def _cmd_table(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.report.tables import render_table, with_paper

    results = open_results(args.results)
    method = results.config.adversarial.method
    table = results.variants()
    if args.compare:
        table = with_paper(table, args.compare, method)
    print(render_table(table, args.format, method))
    return 0


def _cmd_report(args) -> int:
    from aal_sweep import open_results
    from aal_sweep.report.html import write_report

    require_folder(args.out, "--out")
    with Progress("rendering the report", sys.stderr, unit="steps", delay_s=5.0) as bar:  # quiet when quick
        path = write_report(open_results(args.results), args.out, compare=args.compare, progress=bar.update)
    print(f"report written to {path}")
    return 0


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Version(argparse.Action):
    """--version: our version and Ray's, torch's and pyarrow's, from package metadata (neither Ray nor torch
    is imported, so it answers at once)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from aal_sweep import versions

        v = versions()
        print(
            f"aal-sweep {v.pop('aal_sweep')} (" + ", ".join(f"{k} {x or 'not installed'}" for k, x in v.items()) + ")"
        )
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, like every other user error (its subparsers too)."""

    def error(self, message: str):
        self.exit(2, f"aal-sweep: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from aal_sweep.analysis.matrix import METRICS
    from aal_sweep.config import AGENT_TIMEOUT_S
    from aal_sweep.data.types import FORMATS as LAYOUTS
    from aal_sweep.data.types import SPLIT_SEED, VAL_FRACTION
    from aal_sweep.report.formats import FORMATS
    from aal_sweep.report.tables import COMPARE

    p = _Parser(prog="aal-sweep", description=__doc__.splitlines()[0])
    p.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="Python logging level (default WARNING)",
    )
    p.add_argument("--version", action=_Version, help="print the versions of aal_sweep, Ray, torch and pyarrow")
    sub = p.add_subparsers(dest="command", required=True)
    overrides = dict(
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted, YAML value; repeatable): --set train.lr=0.01 "
        "--set dataset.attributes=[Smiling,Male]",
    )

    s = sub.add_parser("run", help="run (or resume) a whole sweep on Ray Tune")
    s.add_argument("config")
    s.add_argument("--results", help="results folder or s3://bucket/prefix (default: the config's `results`)")
    s.add_argument("--address", help="join a Ray cluster: auto, ray://host:10001 or host:port (default: embedded)")
    s.add_argument("--restart", action="store_true", help="discard the results folder's trials and start over")
    s.add_argument(
        "--allow-partial",
        action="store_true",
        help="derive partners (and plan adversarial trials) from incomplete rows of the pair matrix "
        "too, skipping their missing cells (default: only complete rows decide; run exits 1 "
        "naming the others)",
    )
    s.add_argument("-v", "--verbose", action="count", default=0, help="-v: Tune's status table, -vv: trial logs")
    s.add_argument("--set", **overrides)
    s.set_defaults(fn=_cmd_run)

    s = sub.add_parser("submit", help="submit (or resume) a sweep as a job to a Ray cluster's job server")
    s.add_argument("config")
    s.add_argument("--address", help="the job server, http://HEAD:8265 (default: $RAY_ADDRESS)")
    s.add_argument(
        "--results",
        help="where the cluster writes results: s3://BUCKET/PREFIX or an absolute path "
        "every node sees (default: the config's `results`)",
    )
    s.add_argument("--wait", action="store_true", help="follow the job's logs; exit with its outcome")
    s.add_argument(
        "--agent-timeout",
        type=_positive_seconds,
        default=AGENT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for the job agent of a head that just started (default {AGENT_TIMEOUT_S:g})",
    )
    s.add_argument("--set", **overrides)
    s.set_defaults(fn=_cmd_submit)

    s = sub.add_parser("plan", help="trials per kind, the graph and GPU-hours (from benchmarks/gpu.py), before a run")
    s.add_argument("config")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument(
        "--throughput",
        help="a file benchmarks/gpu.py wrote (default: $AAL_SWEEP_THROUGHPUT, else "
        "throughput.json in the default cache folder)",
    )
    s.add_argument("--set", **overrides)
    s.set_defaults(fn=_cmd_plan)

    s = sub.add_parser(
        "config", help="print the resolved, validated config (with --set applied) as sweep.yaml records it"
    )
    s.add_argument("config")
    s.add_argument("--set", **overrides)
    s.set_defaults(fn=_cmd_config)

    s = sub.add_parser("status", help="per kind of trial done / failed / pending, and the missing cells")
    s.add_argument("results")
    s.set_defaults(fn=_cmd_status)

    s = sub.add_parser("matrix", help="the pair matrix (row: measured attribute, column: partner)")
    s.add_argument("results")
    s.add_argument(
        "--metric",
        choices=(*METRICS, "drop", "drop_se"),
        default="val_acc",
        help="drop: P[a][b] - P[a][a], '*' where significant after adjustment; drop_se: each drop's standard error",
    )
    s.add_argument("--ci", action="store_true", help="with --metric drop: show each cell's confidence interval")
    s.add_argument(
        "--estimated",
        action="store_true",
        help="a screened sweep's estimates (estimated effect of the column on the row), not accuracies",
    )
    s.add_argument("--format", choices=FORMATS, default="table")
    s.set_defaults(fn=_cmd_matrix)

    s = sub.add_parser("agreement", help="how well a screened sweep found an exhaustive sweep's partners")
    s.add_argument("screened")
    s.add_argument("--against", required=True, help="the exhaustive results of the same dataset and settings")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(fn=_cmd_agreement)

    s = sub.add_parser(
        "simulate", help="run a measured screening strategy against a complete pair matrix, as if it trained"
    )
    s.add_argument("matrix", help="a complete pair matrix csv (aal-sweep matrix EXHAUSTIVE --format csv)")
    s.add_argument("--budget", type=float, help="pairs.budget: the most pair trials, a share of M(M-1)/2")
    s.add_argument("--seed", type=int, help="pairs.seed: the first round's draw")
    s.add_argument("--se", help="each drop's standard error, same shape (aal-sweep matrix ... --metric drop_se)")
    s.add_argument("--set", action="append", default=[], metavar="pairs.KEY=VALUE", help="any other pairs setting")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(fn=_cmd_simulate)

    s = sub.add_parser("pairs", help="every ordered pair: drop, interval, p-values, significance, seeds")
    s.add_argument("results")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.set_defaults(fn=_cmd_pairs)

    s = sub.add_parser("partners", help="per attribute: partner, single, multi, adversarial (the paper's Table 3)")
    s.add_argument("results")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.set_defaults(fn=_cmd_partners)

    s = sub.add_parser("table", help="mean validation and test accuracy of every variant (the paper's Table 1)")
    s.add_argument("results")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument(
        "--compare",
        choices=tuple(COMPARE),
        help="the paper's numbers beside ours (Tables 1, 2, 3 and 5; Table 6 for DukeMTMC)",
    )
    s.set_defaults(fn=_cmd_table)

    s = sub.add_parser("report", help="figures and one self-contained index.html")
    s.add_argument("results")
    s.add_argument("--out", required=True)
    s.add_argument("--compare", choices=tuple(COMPARE))
    s.set_defaults(fn=_cmd_report)

    s = sub.add_parser("train", help="one training, locally, without Ray")
    s.add_argument("config")
    s.add_argument("--kind", choices=("single", "pair", "adversarial"), required=True)
    s.add_argument("--attributes", required=True, help="A or A,B (adversarial: primary,partner)")
    s.add_argument("--lambda", dest="lam", type=float)
    s.add_argument("--json", action="store_true", help="print the full result as JSON")
    s.add_argument("--set", **overrides)
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("dataset", help="check a dataset folder; images per split, positive rates")
    s.add_argument("root", nargs="?", help="the dataset folder (or --config)")
    s.add_argument("--config", help="a sweep YAML: check its dataset section (any format, the table format's keys)")
    s.add_argument("--attributes", help="A,B,... (default: all)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument(
        "--verify",
        action="store_true",
        help="decode every image (in parallel) and list the ones that cannot be decoded (exit 2)",
    )
    s.add_argument("--layout", choices=LAYOUTS, default="celeba", help="the on-disk format (default celeba)")
    s.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help=f"duke/market: share of training identities held out for validation (default {VAL_FRACTION})",
    )
    s.add_argument(
        "--split-seed",
        type=int,
        default=SPLIT_SEED,
        help=f"duke/market: seed of the validation identities (default {SPLIT_SEED})",
    )
    s.set_defaults(fn=_cmd_dataset)

    s = sub.add_parser("make-synthetic", help="write a synthetic dataset in the CelebA layout")
    s.add_argument("out")
    s.add_argument("--attributes", type=int, default=4)
    s.add_argument("--images", type=int, default=2000)
    s.add_argument("--size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--random-attributes", type=int, default=0, help="also N attributes with coin-flip labels no image predicts"
    )
    s.add_argument(
        "--xor",
        action="store_true",
        help="also an attribute Xor = first XOR second (a constructed negative partner of the second)",
    )
    s.add_argument("--noisy", type=float, default=0.0, metavar="RATE", help=NOISY_HELP.format(first="the first shape"))
    s.set_defaults(fn=_cmd_make_synthetic)

    from aal_sweep.data import mnist  # numpy and PIL only: the defaults, written once there

    s = sub.add_parser("make-mnist", help="write an attribute dataset in the CelebA layout from the MNIST test digits")
    s.add_argument("out")
    s.add_argument("--images", type=int, default=mnist.N_TEST)
    s.add_argument("--size", type=int, nargs=2, default=(mnist.SIDE, mnist.SIDE), metavar=("H", "W"))
    s.add_argument("--seed", type=int, default=mnist.SEED)
    s.add_argument(
        "--source",
        default=mnist.DEFAULT_SOURCE,
        help="the folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
        "(default: ../shared/data/mnist beside the repository)",
    )
    s.add_argument("--noisy", type=float, default=0.0, metavar="RATE", help=NOISY_HELP.format(first="Big"))
    s.set_defaults(fn=_cmd_make_mnist)
    return p


class _OncePerRun(logging.Filter):
    """A condition met again is not news: each warning (or note) is shown once per command, however many
    times the code meets it (`partners.parquet is unreadable ...` was three lines of one run). Errors
    always show."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for handler in set(logging.getLogger().handlers) - before:  # the CLI's own (none where a host set one)
        handler.addFilter(_OncePerRun())
    try:
        return args.fn(args)
    except AalError as e:
        print(f"aal-sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " Run the same command to resume." if args.command == "run" else ""
        print(f"aal-sweep: interrupted.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
