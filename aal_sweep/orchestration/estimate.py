"""What a sweep will cost before it runs: trials per kind, GPU-hours from measured throughput, memory fit.

Pure and light: neither torch nor Ray. Trials are counted with the plan's own functions; the adversarial
phase, whose partners are not known yet, is counted at its upper bound (every attribute gets a partner:
attributes x lambdas x seeds). GPU-hours come only from a throughput file that `benchmarks/gpu.py` wrote
on a real GPU (its records name the GPU); without one, or without a record that matches the config, the
estimate says so and gives no number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from aal_sweep.config import SweepConfig
from aal_sweep.data.residency import keeps_resident
from aal_sweep.data.types import SPLITS, default_cache_dir
from aal_sweep.errors import AalError

THROUGHPUT_ENV = "AAL_SWEEP_THROUGHPUT"
UPPER_BOUND = ("adversarial", "adversarial_multiple", "adversarial_shared")  # planned once partners are known


def default_throughput_path() -> Path:
    """$AAL_SWEEP_THROUGHPUT, else throughput.json beside the default decode cache."""
    if os.environ.get(THROUGHPUT_ENV):
        return Path(os.environ[THROUGHPUT_ENV])
    return default_cache_dir() / "throughput.json"


def read_throughput(path: str | Path) -> dict[str, Any] | None:
    """The measurements at `path`, or None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("records"), list) or "gpu" not in data:
            raise ValueError("no 'gpu' or 'records'")
    except (ValueError, AttributeError) as e:
        raise AalError(
            f"throughput file {str(path)!r} is not one benchmarks/gpu.py wrote ({e}); rerun the "
            f"benchmark or pass another --throughput"
        ) from None
    return data


def trial_kind(kind: str, method: str | None = None) -> str:
    """The name a benchmark record and the estimate share: single, pair, adversarial-grl, ..."""
    return f"{kind}-{method}" if kind == "adversarial" else kind


def count_trials(cfg: SweepConfig, attributes: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{kind: {trial kind: trials}}, from aal_sweep.orchestration.trials; the kinds that wait for partners
    (UPPER_BOUND) at their upper bound: every attribute gets a partner (all others, for adversarial_multiple);
    a measured screening's pairs at its budget (pairs.budget of every pair, every seed)."""
    import pandas as pd

    from aal_sweep.orchestration import trials as plan

    trials = list(plan.plan_initial(cfg, attributes))
    if "multitask_all" in cfg.phases:
        trials += plan.plan_multitask_all(cfg, attributes)
    if len(attributes) > 1:
        partners = pd.DataFrame({"attribute": list(attributes), "partner": list(attributes[1:]) + [attributes[0]]})
        if "adversarial" in cfg.phases:
            trials += plan.plan_adversarial(cfg, partners)
        if "adversarial_shared" in cfg.phases:
            trials += plan.plan_adversarial_shared(cfg, partners)
        if "adversarial_multiple" in cfg.phases:
            everyone = pd.DataFrame(
                {
                    "attribute": list(attributes),
                    "partners": [tuple(b for b in attributes if b != a) for a in attributes],
                }
            )
            trials += plan.plan_adversarial_multiple(cfg, everyone)
    counts: dict[str, dict[str, int]] = {}
    for t in trials:
        phase = counts.setdefault(t.kind, {})
        k = trial_kind(t.kind, t.method)
        phase[k] = phase.get(k, 0) + 1
    if cfg.pairs.measured and "pair" in counts:  # a measured screening trains at most its budget of the pairs
        from aal_sweep.analysis.strategies import Settings

        counts["pair"] = {"pair": Settings.of(cfg.pairs).cap(len(attributes)) * len(cfg.seeds)}
    return counts


def trials_per_gpu(gpus_per_trial: float) -> int | None:
    """How many trials share one GPU (None: the config trains on CPUs)."""
    if gpus_per_trial <= 0:
        return None
    return max(1, math.floor(1 / gpus_per_trial + 1e-9)) if gpus_per_trial < 1 else 1


def compile_mode(cfg: SweepConfig) -> str:
    """The benchmark mode a GPU trial of this config runs in (train.compile auto is on for CUDA)."""
    return "compiled" if cfg.train.compile in ("auto", True) else "eager"


def _matching(records: list[dict], cfg: SweepConfig, kind: str, mode: str, concurrency: int) -> dict | None:
    # data "auto": the GPU-resident rule a sweep's trials use (not the JPEG or forced-host comparison rows)
    want = {
        "kind": kind,
        "mode": mode,
        "concurrency": concurrency,
        "data": "auto",
        "backbone": cfg.model.backbone,
        "image_size": list(cfg.dataset.image_size),
        "batch_size": cfg.train.batch_size,
    }
    for r in records:
        if all(r.get(k) == v for k, v in want.items()) and r.get("images_per_second"):
            return r
    return None


def trial_gpu_seconds(record: dict, epochs: int, sizes: dict[str, int]) -> float:
    """Wall seconds of one trial at the record's concurrency: training, evaluation and start-up."""
    train = sizes["train"] / record["images_per_second_per_trial"]
    evaluation = (sizes["val"] + sizes["test"]) / record["eval_images_per_second_per_trial"]
    return epochs * (train + evaluation) + record["first_step_seconds"]


def estimate(
    cfg: SweepConfig,
    attributes: tuple[str, ...],
    sizes: dict[str, int] | None,
    throughput: dict[str, Any] | None,
    source: str | None = None,
    unchecked=(),
) -> dict[str, Any]:
    """The plan's counts and, where measured, GPU-hours per phase and the memory check. JSON-ready.
    `unchecked`: what the plan could not check because it is not there yet (config.unchecked_files)."""
    counts = count_trials(cfg, attributes)
    out: dict[str, Any] = {
        "phases": {p: sum(k.values()) for p, k in counts.items()},
        "kinds": {k: n for p in counts.values() for k, n in p.items()},
        "trials": sum(sum(k.values()) for k in counts.values()),
        "upper_bound_phases": [p for p in counts if p in UPPER_BOUND],
        "seeds": list(cfg.seeds),
        "attributes": len(attributes),
        "images": sizes,
        "throughput": None,
        "gpu_hours": None,
        "gpu_hours_by_phase": None,
        "notes": [],
        "warnings": [],
        "unchecked": list(unchecked),
    }
    notes, warnings = out["notes"], out["warnings"]
    per_gpu = trials_per_gpu(cfg.resources.gpus_per_trial)
    if per_gpu is None:
        notes.append("resources.gpus_per_trial is 0: the sweep trains on CPUs; no GPU-hours to estimate")
        return out
    if throughput is None:
        notes.append(
            f"no GPU throughput measured ({source or default_throughput_path()} not found): run "
            f"benchmarks/gpu.py on the GPU machine, then pass --throughput FILE; no GPU-hours estimated"
        )
        return out
    out["throughput"] = {k: throughput.get(k) for k in ("gpu", "gpu_memory_bytes", "date", "torch")} | {"file": source}
    if sizes is None:
        notes.append(
            "the dataset's split sizes are unknown (their files are not there): GPU-hours need them; none "
            "estimated until the annotation files are there"
        )
        return out
    mode, records = compile_mode(cfg), throughput["records"]
    by_phase, missing, measured = {}, [], {}
    for phase, kinds in counts.items():
        hours = 0.0
        for kind, n in kinds.items():
            r = _matching(records, cfg, kind, mode, per_gpu)
            if r is None:
                missing.append(kind)
                continue
            measured[kind] = r["images_per_second_per_trial"]
            hours += n * trial_gpu_seconds(r, cfg.train.epochs, sizes) / per_gpu / 3600
        by_phase[phase] = None if any(k in missing for k in kinds) else hours
    # what the hours come from: training images/s of one trial of each kind, for this backbone and setting
    out["throughput"] |= {
        "setting": f"{cfg.model.backbone} at {list(cfg.dataset.image_size)}, batch {cfg.train.batch_size}, "
        f"{mode}, {per_gpu} per GPU",
        "images_per_second_per_trial": measured,
    }
    if missing:
        h, w = cfg.dataset.image_size
        notes.append(
            f"not measured on {throughput['gpu']}: {', '.join(missing)} {mode} at {per_gpu} per GPU "
            f"({cfg.model.backbone}, {list(cfg.dataset.image_size)}, batch {cfg.train.batch_size}); "
            f"run python benchmarks/gpu.py --backbone {cfg.model.backbone} --image-size {h} {w} --batch-size "
            f"{cfg.train.batch_size} on that GPU; no total given"
        )
    out["gpu_hours_by_phase"] = by_phase
    out["gpu_hours"] = None if missing else sum(by_phase.values())
    warnings += memory_warnings(cfg, sizes, throughput, per_gpu)
    return out


def memory_warnings(cfg: SweepConfig, sizes: dict[str, int], throughput: dict[str, Any], per_gpu: int) -> list[str]:
    """Replay the GPU-resident rule for `per_gpu` trials starting one after another on one measured GPU."""
    total = throughput.get("gpu_memory_bytes")
    working = [
        r["peak_memory_bytes"] - r.get("resident_bytes", 0)
        for r in throughput["records"]
        if r.get("peak_memory_bytes")
        and r.get("backbone") == cfg.model.backbone
        and r.get("image_size") == list(cfg.dataset.image_size)
        and r.get("batch_size") == cfg.train.batch_size
    ]
    if not total or not working:
        return [
            f"GPU memory fit not checked: no peak memory measured on {throughput['gpu']} for "
            f"{cfg.model.backbone} at {list(cfg.dataset.image_size)}, batch {cfg.train.batch_size}"
        ]
    h, w = cfg.dataset.image_size
    split_bytes = {s: sizes[s] * h * w * 3 for s in SPLITS}
    used, on_host = 0, []
    for trial in range(1, per_gpu + 1):
        for s in SPLITS:
            if keeps_resident(split_bytes[s], total - used):
                used += split_bytes[s]
            else:
                on_host.append(f"trial {trial}: {s}")
        used += max(working)
    gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    out = []
    if used > total:
        out.append(
            f"resources.gpus_per_trial {cfg.resources.gpus_per_trial:g} puts {per_gpu} trials on one "
            f"{throughput['gpu']}: their GPU-resident data and working memory need {gib(used)} of its "
            f"{gib(total)}; raise gpus_per_trial (fewer trials per GPU)"
        )
    if on_host:
        out.append(
            f"with {per_gpu} trial(s) per {throughput['gpu']} these splits stay on the host (pinned-memory "
            f"path, slower): {', '.join(on_host)}"
        )
    return out


def render_plan(plan: dict[str, Any], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(plan, indent=2)
    lines = [f"{'phase':<14} {'trials':>8}   {'GPU-hours':>10}"]
    by_phase = plan["gpu_hours_by_phase"] or {}
    for phase, n in plan["phases"].items():
        hours = by_phase.get(phase)
        bound = " (upper bound: partners not known yet)" if phase in plan["upper_bound_phases"] else ""
        lines.append(f"{phase:<14} {n:>8}   {'-' if hours is None else f'{hours:10.2f}':>10}{bound}")
    total = plan["gpu_hours"]
    lines.append(f"{'total':<14} {plan['trials']:>8}   {'-' if total is None else f'{total:10.2f}':>10}")
    if plan["throughput"]:
        t = plan["throughput"]
        lines.append(f"throughput measured on {t['gpu']} ({t['date']}), from {t['file']}")
        if t.get("images_per_second_per_trial"):
            rates = ", ".join(f"{k} {v:.0f}" for k, v in t["images_per_second_per_trial"].items())
            lines.append(f"  {t['setting']}: {rates} training images/s per trial")
    lines += list(plan.get("unchecked", ()))  # "images not checked: ... missing", one line each
    lines += [f"note: {n}" for n in plan["notes"]] + [f"warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
