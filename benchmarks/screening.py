"""How well each screening strategy finds the exhaustive pair matrix's partners, and at what cost.

Three parts (`--part`, comma-separated; `--smoke` runs every part tiny, in seconds to a minute):

simulated  Measured strategies (analysis/strategies: active, uniform) against generated pair matrices at
           M = 40, 200 and 1,000 (`--sizes`), many seeds, run by `simulate`, the sweep's own code. A matrix
           is drops in percentage points, D = -s[a] h[b] + L[a, b] + e[a, b] + n[a, b]:
             dominant  h[b*] = 3 for one partner b*, |N(0, 0.4)| for the rest; s ~ U(0.5, 1.5);
                       L = 0.3 x (rank-2 Gaussian); e ~ N(0, 0.3)        (the paper's Big_Lips shape)
             moderate  h ~ U(1, 1.5) for 5 partners, |N(0, 0.3)| for the rest; L = 0.5 x rank 2; e ~ N(0, 0.3)
             lowrank   D = rank-3 Gaussian / sqrt(3), e ~ N(0, 0.2)     (no partner effect)
             noise     e ~ N(0, 1) only                                  (nothing to learn)
           plus the measurement noise n ~ N(0, 0.3), whose standard error 0.3 the strategy is given. The
           exhaustive partner of a is argmin_b D[a, b]; it is significant when D < 0 and its two-sided
           p-value (z = D / 0.3) is below 0.05 after Holm over a's row. Recall = share of the significant
           partners whose pair was trained. There are no labels here, so no static estimator can score
           these matrices: `uniform` (the same number of pairs drawn at random) is what an estimator
           without information achieves; the static estimators are measured on real images (part static).
real       Real-image sets where a partner really hurts: MNIST digits (make-mnist --noisy 0.3) and synthetic
           shapes with a coin-flip attribute (make-synthetic --random-attributes 1), 10 attributes each; the
           exhaustive sweep and measured screened sweeps (active, budget 0.3) at two seeds of the strategy,
           side by side, scored by `aal-sweep agreement`, plus `simulate` on the exhaustive matrix.
static     Today's static estimators (label_correlation, lookahead, short) with K = 1, 2, 3 and both
           confirmation rules, against the exhaustive sweeps of `make-synthetic --xor` and `make-mnist`
           (the benchmark of the earlier round, unchanged; see docs/benchmarks.md for its method).

    .venv/bin/python benchmarks/screening.py --part simulated --out docs/screening-simulated.json
    .venv/bin/python benchmarks/screening.py --part real --out docs/screening-real.json
    .venv/bin/python benchmarks/screening.py --smoke
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


def make_data(name: str, tmp: Path, images: int, shapes: int = 9) -> Path:
    """One of DATASETS under `tmp` (kept from an earlier run with --work), 16x16 images."""
    from aal_sweep.data.mnist import make_mnist_attributes
    from aal_sweep.data.synthetic import make_synthetic

    if (tmp / name / "list_attr_celeba.txt").is_file():
        return tmp / name
    shape = {"n_attributes": shapes, "n_images": images, "size": (16, 16), "seed": 0}
    digits = {"n_images": images, "size": (16, 16), "seed": 0}
    if name == "xor":  # the shapes + Xor = Disc XOR Square: a planted negative partner of Square
        return make_synthetic(tmp / name, **shape, xor=True)
    if name == "mnist":
        return make_mnist_attributes(tmp / name, **digits)
    if name == "noisy-shapes":  # the shapes + Random (coin flips no image predicts)
        return make_synthetic(tmp / name, **shape, random_attributes=1)
    if name == "noisy-mnist":  # the MNIST attributes + Noisy (Big with 30% of its labels flipped)
        return make_mnist_attributes(tmp / name, **digits, noisy=0.3)
    raise SystemExit(f"--datasets: {name!r} is not one of {', '.join(DATASETS)}")


DATASETS = ("xor", "mnist", "noisy-shapes", "noisy-mnist")


def write_config(tmp: Path, name: str, root: Path, epochs: int, attributes=None, **pairs) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "results": str(tmp / name),
                "dataset": {
                    "root": str(root),
                    "image_size": [16, 16],
                    "cache": str(tmp / "cache"),
                    **({"attributes": attributes} if attributes else {}),
                },
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
    """`aal-sweep run PATH` to its end; its wall seconds."""
    t0 = time.perf_counter()
    cli("run", str(path))
    return time.perf_counter() - t0


def cli(*argv: str) -> str:
    """`aal-sweep ARGV` with this checkout's code; its stdout (a failure ends the benchmark, saying why)."""
    got = subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    if got.returncode != 0:
        raise SystemExit(
            f"aal-sweep {' '.join(argv)}: exit {got.returncode}\n{got.stdout[-2000:]}\n{got.stderr[-3000:]}"
        )
    return got.stdout


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
    chosen = partner_statistics(derived, mine, attrs, exhaustive.config.partners).chosen
    return pairs, chosen


def one_dataset(name: str, tmp: Path, args) -> list[dict]:
    root = make_data(name, tmp, args.images, args.shapes)
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
        tmp,
        f"{name}-screened",
        root,
        args.epochs,
        strategy="static",
        estimator="lookahead",
        confirm=2,
        every=args.every,
    )
    run(scr_path)
    real = json.loads(
        cli(
            "agreement", str(tmp / f"{name}-screened"), "--against", str(tmp / f"{name}-exhaustive"), "--format", "json"
        )
    )
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
            marker=markers.get(r["dataset"], "^"),
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
    p.add_argument("--part", default="simulated,real", help="simulated, real, static (comma-separated)")
    p.add_argument("--smoke", action="store_true", help="every part, tiny: seconds to a minute, numbers meaningless")
    # simulated
    p.add_argument("--sizes", default="40,200,1000")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--seeds", type=int, default=20, help="matrices per kind at M = 40 (fewer at larger M)")
    p.add_argument("--budgets", help="pairs.budget values to run (default: per size, BUDGETS)")
    # real and static
    p.add_argument("--datasets", default=None, help="static: xor,mnist; real: noisy-mnist,noisy-shapes")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--shapes", type=int, default=9, help="shapes of the synthetic sets (each adds one more attribute)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--short-epochs", type=int, default=1)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--out", help="every number as JSON")
    p.add_argument("--work", help="keep datasets and results here (a rerun then trains nothing already stored)")
    p.add_argument("--replot", help="static: only redraw --figure and reprint the table from this --out JSON")
    p.add_argument("--figure", help="static: recall against cost, PNG")
    args = p.parse_args()
    if args.smoke:
        args.sizes, args.seeds, args.images, args.epochs, args.shapes = "12", 1, 200, 1, 3
        args.part = "simulated,real,static"
    if args.replot:
        rows = json.loads(Path(args.replot).read_text())
        if args.figure:
            figure(rows, Path(args.figure))
        print(markdown_table(rows))
        return
    out: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for part in args.part.split(","):
            if part == "simulated":
                out[part] = simulated_part(args)
            elif part == "real":
                names = args.datasets or ("noisy-shapes" if args.smoke else "noisy-mnist,noisy-shapes")
                out[part] = [r for name in names.split(",") for r in real_part(name, work, args)]
            elif part == "static":
                # smoke: the real part's data, whose exhaustive sweep is stored already (nothing trains twice)
                names = args.datasets or ("noisy-shapes" if args.smoke else "xor,mnist")
                out[part] = [r for name in names.split(",") for r in one_dataset(name, work, args)]
                if args.figure:
                    figure(out[part], Path(args.figure))
                print(markdown_table(out[part]))
            else:
                raise SystemExit(f"--part: {part!r} is not one of simulated, real, static")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))


# ---- simulated matrices ------------------------------------------------------------------------------------

KINDS = ("dominant", "moderate", "lowrank", "noise")
SE = 0.3  # the measurement noise of every generated cell, in percentage points (given to the strategy)
BUDGETS = {40: (0.1, 0.2, 0.3), 200: (0.05, 0.1, 0.2), 1000: (0.02, 0.05)}
SEEDS_AT = {40: 1.0, 200: 0.25, 1000: 0.1}  # share of --seeds run at each size: a fit costs ~M^2 per round
STRATEGIES = (("active", 1), ("active", 2), ("uniform", 1))  # (strategy, pairs.rank); the default rank is 1


def generate(kind: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """A measured drop matrix (percentage points) of `kind` (the module docstring's generator)."""
    if kind == "dominant":
        h = np.abs(rng.normal(0, 0.4, m))
        h[rng.integers(m)] = 3.0
        s = rng.uniform(0.5, 1.5, m)
        effect = -s[:, None] * h[None, :] + 0.3 * rng.normal(size=(m, 2)) @ rng.normal(size=(2, m))
        effect += rng.normal(0, 0.3, (m, m))
    elif kind == "moderate":
        h = np.abs(rng.normal(0, 0.3, m))
        h[rng.choice(m, 5, replace=False)] = rng.uniform(1, 1.5, 5)
        s = rng.uniform(0.5, 1.5, m)
        effect = -s[:, None] * h[None, :] + 0.5 * rng.normal(size=(m, 2)) @ rng.normal(size=(2, m))
        effect += rng.normal(0, 0.3, (m, m))
    elif kind == "lowrank":
        effect = rng.normal(size=(m, 3)) @ rng.normal(size=(3, m)) / np.sqrt(3) + rng.normal(0, 0.2, (m, m))
    elif kind == "noise":
        effect = rng.normal(0, 1.0, (m, m))
    else:
        raise SystemExit(f"--kinds: {kind!r} is not one of {', '.join(KINDS)}")
    d = effect + rng.normal(0, SE, (m, m))
    np.fill_diagonal(d, 0.0)
    return d


def significant_partners(d: np.ndarray) -> dict[int, int]:
    """row -> its exhaustive partner, for the rows whose partner is significant (Holm over the row)."""
    from scipy.stats import norm

    from aal_sweep.analysis.stats import adjust

    m = len(d)
    out = {}
    for a in range(m):
        row = np.delete(d[a], a)
        others = np.delete(np.arange(m), a)
        k = int(np.argmin(row))
        p = adjust(2 * norm.sf(np.abs(row) / SE), "holm")
        if row[k] < 0 and p[k] < 0.05:
            out[a] = int(others[k])
    return out


def simulated_part(args) -> list[dict]:
    from aal_sweep.analysis.strategies import Settings, get, simulate, total_pairs
    from aal_sweep.analysis.strategies.base import BUDGET, decided_rows, requested
    from aal_sweep.config import PairsConfig

    rows = []
    for m in map(int, args.sizes.split(",")):
        budgets = tuple(map(float, args.budgets.split(","))) if args.budgets else BUDGETS.get(m, (0.3,))
        n_seeds = max(1, round(args.seeds * SEEDS_AT.get(m, 1.0)))
        for kind in args.kinds.split(","):
            for seed in range(n_seeds):
                d = generate(kind, m, np.random.default_rng([m, KINDS.index(kind), seed]))
                truth = significant_partners(d)
                for strategy, rank in STRATEGIES:
                    if rank > 1 and m > 200:
                        continue  # the default's rank only at M = 1,000: a fit costs ~M^2 per round
                    for budget in budgets:
                        cfg = PairsConfig(mode="screened", strategy=strategy, budget=budget, seed=seed, rank=rank)
                        s = Settings.of(cfg)
                        t0 = time.process_time()
                        rounds = simulate(get(strategy), d / 100, np.full((m, m), SE / 100), s)
                        cpu = time.process_time() - t0
                        trained = requested(rounds)
                        found = [(min(a, b), max(a, b)) in trained for a, b in truth.items()]
                        left = sum(1 for x in decided_rows(rounds).values() if x[0] == BUDGET)
                        row = {
                            "m": m,
                            "kind": kind,
                            "seed": seed,
                            "strategy": strategy if rank == PairsConfig.rank else f"{strategy}-rank{rank}",
                            "budget": budget,
                            "cost": len(trained) / total_pairs(m),
                            "recall_significant": float(np.mean(found)) if found else None,
                            "significant": len(found),
                            "rounds": len(rounds),
                            "ended": rounds[-1].reason,
                            "undecided_at_end": left,
                            "structure": rounds[-1].structure,
                            "cpu_seconds": cpu,
                        }
                        rows.append(row)
                print(f"  M={m} {kind} seed {seed} done", flush=True)
    print(simulated_table(rows))
    return rows


def simulated_table(rows: list[dict]) -> str:
    """Mean over seeds per size, kind, strategy and budget (the docs' table)."""
    df = pd.DataFrame(rows)
    t = (
        df.groupby(["m", "kind", "strategy", "budget"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            cost=("cost", "mean"),
            recall=("recall_significant", "mean"),
            recall_min=("recall_significant", "min"),
            rounds=("rounds", "mean"),
            undecided=("undecided_at_end", "mean"),
            structure=("structure", "mean"),
            cpu_s=("cpu_seconds", "mean"),
        )
        .reset_index()
    )
    return markdown(list(t.columns), list(t.itertuples(index=False)))


# ---- real images: exhaustive and measured screened sweeps side by side ---------------------------------------


def real_part(name: str, tmp: Path, args) -> list[dict]:
    root = make_data(name, tmp, args.images, args.shapes)
    attributes = None
    if name == "noisy-mnist":
        attributes = ["Zero", "Even", "Big", "Prime", "Loop", "Ink", "Thick", "Wide", "Slanted", "Noisy"]
    ex_path = write_config(tmp, f"{name}-exhaustive", root, args.epochs, attributes=attributes)
    wall = run(ex_path)
    ex_dir = tmp / f"{name}-exhaustive"
    ex = open_results(str(ex_dir))
    truth = ex.chosen_partners(statistics=True)
    n_sig = int(truth["significant"].fillna(False).astype(bool).sum())
    by = truth.set_index("attribute")["partner"]
    print(
        f"{name}: {len(ex.attributes)} attributes, exhaustive sweep {wall:.0f} s; partners {dict(by.dropna())}, "
        f"significant {n_sig}",
        flush=True,
    )
    for metric, extra in (("m", []), ("se", ["--metric", "drop_se"])):
        (tmp / f"{name}-{metric}.csv").write_text(cli("matrix", str(ex_dir), "--format", "csv", *extra))
    out = []
    for seed in (0,) if args.smoke else (0, 1):  # smoke: one screened sweep is every code path
        budget = 0.3
        sc_name = f"{name}-active-s{seed}"
        run(write_config(tmp, sc_name, root, args.epochs, attributes=attributes, budget=budget, seed=seed))
        agree = json.loads(cli("agreement", str(tmp / sc_name), "--against", str(ex_dir), "--format", "json"))
        sim = json.loads(
            cli(
                "simulate",
                str(tmp / f"{name}-m.csv"),
                "--se",
                str(tmp / f"{name}-se.csv"),
                "--budget",
                str(budget),
                "--seed",
                str(seed),
                "--format",
                "json",
            )
        )
        sweep_pairs = open_results(str(tmp / sc_name)).screening()["confirmed"]
        same = [list(p) for p in sweep_pairs] == sim["pairs_trained"]
        row = {"dataset": name, "strategy": "active", "budget": budget, "seed": seed, **agree}
        row["simulate_same_pairs"] = same
        row["significant_exhaustive"] = n_sig
        out.append(row)
        print(
            f"  active seed {seed}: {agree['pair_trials']['screened']} of {agree['pair_trials']['exhaustive']} pairs "
            f"(cost {agree['cost']:.2f} of the pair phase's seconds), recall {agree['recall']}, significant "
            f"{agree['recall_significant']}, top1 {agree['top1_agreement']}; simulate made the same pairs: {same}",
            flush=True,
        )
    return out


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
    return markdown(cols, [[r.get(c) for c in cols] for r in rows if not r.get("real_sweep")])


def markdown(cols: list[str], rows) -> str:
    """A markdown table: floats to 2 decimals, missing (None, NaN) as "—"."""
    cell = lambda v: "—" if v is None or v != v else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


if __name__ == "__main__":
    main()
