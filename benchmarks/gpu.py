"""Training throughput of the real training code, per kind of trial, on one GPU (or, --toy, on the CPU).

No Ray, no dataset download: a decoded uint8 cache of CelebA's size (162,770 / 19,867 / 19,962 images at
218x178, random pixels, 4 random attributes) is written directly in the layout data/cache.py builds, and
`aal_sweep.train.fit` trains on it. Measured per kind of trial (single, pair, adversarial grl / gan / wgan):
training images/s eager vs compiled (the second epoch: the first pays start-up and compilation), 1, 2 and
4 concurrent trainings on one GPU (separate processes, released together after their first epoch), the
evaluation time per epoch (validation + test), the peak GPU memory, the time to first step, and the same
step fed by a torchvision-style JPEG DataLoader (a few thousand JPEGs written for the purpose, PIL decoding
in DataLoader workers) and by the pinned-memory path (data kept on the host), so ratios come from one run.

    python benchmarks/gpu.py --toy --out toy.json          # CPU-sized, about a minute here
    python benchmarks/gpu.py --out h100.json                # full size on a GPU (a few minutes)
    python benchmarks/gpu.py --backbone timm/convnext_tiny --image-size 224 224 --batch-size 128   # another backbone

Any backbone a config names (model.backbone: resnet18, small_cnn, timm/NAME, torchvision/NAME) is measured at
random init (the weights do not change the speed); `aal-sweep plan` matches records by backbone, image size
and batch size, so measure with the config's.

On a GPU at full size the measurements are also written where `aal-sweep plan` looks for them
(estimate.default_throughput_path(), or --throughput-out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aal_sweep.backbones import check_backbone, normalisation
from aal_sweep.data.cache import DecodedDataset
from aal_sweep.orchestration.estimate import default_throughput_path
from aal_sweep.train.loop import TrainSpec, build_model, fit, pick_device, train_epoch

SPLITS = ("train", "val", "test")
ATTRIBUTES = ("a0", "a1", "a2", "a3")
KINDS = {
    "single": ("single", None),
    "pair": ("pair", None),
    "adversarial-grl": ("adversarial", "grl"),
    "adversarial-gan": ("adversarial", "gan"),
    "adversarial-wgan": ("adversarial", "wgan"),
}
SIZES = {  # the full size is CelebA's; the toy fits a 2-core CPU in about a minute
    "full": {
        "image_size": (218, 178),
        "splits": {"train": 162_770, "val": 19_867, "test": 19_962},
        "backbone": "resnet18",
        "batch_size": 256,
        "steps": 60,
        "jpeg_images": 6144,
    },
    "toy": {
        "image_size": (16, 16),
        "splits": {"train": 1024, "val": 256, "test": 256},
        "backbone": "small_cnn",
        "batch_size": 64,
        "steps": None,
        "jpeg_images": 1024,
    },
}


# ---- a decoded cache, fabricated ---------------------------------------------------------------------


def fabricate(folder: Path, image_size: tuple[int, int], splits: dict[str, int], seed: int = 0) -> Path:
    """Write meta.json, {split}.u8 and {split}.labels.npy as data/cache.py does, with random pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    block = rng.integers(0, 256, (512, *image_size, 3), dtype=np.uint8)  # tiled: fast to write at full size
    for split, n in splits.items():
        out = np.memmap(folder / f"{split}.u8", dtype=np.uint8, mode="w+", shape=(n, *image_size, 3))
        for start in range(0, n, len(block)):
            out[start : start + len(block)] = block[: n - start]
        out.flush()
        np.save(folder / f"{split}.labels.npy", (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.uint8))
    meta = {"attributes": list(ATTRIBUTES), "image_size": list(image_size), "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def read_cache(folder: Path) -> DecodedDataset:
    """The fabricated entry as a DecodedDataset: read-only memmaps, as open_decoded returns them."""
    meta = json.loads((folder / "meta.json").read_text())
    h, w = meta["image_size"]
    images = {
        s: np.memmap(folder / f"{s}.u8", dtype=np.uint8, mode="r", shape=(n, h, w, 3))
        for s, n in meta["splits"].items()
    }
    labels = {s: np.load(folder / f"{s}.labels.npy") for s in meta["splits"]}
    return DecodedDataset(tuple(meta["attributes"]), images, labels, folder)


# ---- one measurement ---------------------------------------------------------------------------------


def make_spec(kind: str, mode: str, size: dict, threads: int | None, resident: str = "auto") -> TrainSpec:
    base_kind, method = KINDS[kind]
    n = 1 if base_kind == "single" else 2
    compile_mode = mode.split(":", 1)[1] if ":" in mode else None
    return TrainSpec(
        kind=base_kind,
        attributes=ATTRIBUTES[:n],
        method=method,
        lam=0.1 if method else None,
        backbone=size["backbone"],
        epochs=2,
        batch_size=size["batch_size"],
        lr_milestones=(),
        num_threads=threads,
        compile=mode != "eager",
        compile_mode=compile_mode,
        resident=resident,
        max_steps_per_epoch=size["steps"],
    )


def measure(
    folder: Path, kind: str, mode: str, size: dict, threads: int | None, resident: str = "auto", barrier=None
) -> dict:
    """Two epochs of `fit`; the second is the measurement. `barrier`: wait for the others after epoch one."""
    data = read_cache(folder)
    device = pick_device("auto")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def on_epoch(_state, metrics):
        if barrier is not None and metrics["epoch"] == 0:
            barrier.wait()

    r = fit(make_spec(kind, mode, size, threads, resident), data, on_epoch)
    h = r.history
    resident_bytes = sum(data.images[s].nbytes for s, on in h["resident"].items() if on)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if device.type == "cuda":  # hand the resident copies back, or the next run's 0.4-of-free rule sees less
        gc.collect()
        torch.cuda.empty_cache()
    return {
        "images_per_second_per_trial": h["train_images"][1] / h["train_epoch_seconds"][1],
        "eval_seconds_per_epoch": h["eval_seconds"][1],
        "eval_images_per_second_per_trial": (r.n_val + r.n_test) / h["eval_seconds"][1],
        "first_step_seconds": h["first_step_seconds"],
        "first_epoch_extra_seconds": h["train_epoch_seconds"][0] - h["train_epoch_seconds"][1],
        "peak_memory_bytes": peak,
        "resident_bytes": resident_bytes,
        "resident": h["resident"],
        "train_images": h["train_images"][1],
    }


def _worker(args) -> None:
    folder, kind, mode, size, threads, resident, barrier, queue = args
    queue.put(measure(folder, kind, mode, size, threads, resident, barrier))


def measure_concurrent(
    folder: Path, kind: str, mode: str, size: dict, concurrency: int, threads: int | None, resident: str = "auto"
) -> dict:
    """`concurrency` trainings in their own processes on one device; images/s summed over them. Compiled
    runs always get a fresh process: torch.compile's caches and recompile limits are per process."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(concurrency, timeout=900), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=((folder, kind, mode, size, threads, resident, barrier, queue),))
        for _ in range(concurrency)
    ]
    for p in procs:
        p.start()
    parts = []
    while len(parts) < concurrency:
        try:
            parts.append(queue.get(timeout=5))
        except queue_module.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:  # a worker died (its traceback is on stderr): stop the others, do not wait forever
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a benchmark worker exited with code {failed[0]}") from None
    for p in procs:
        p.join()
    return {
        "images_per_second": sum(p["images_per_second_per_trial"] for p in parts),
        "images_per_second_per_trial": float(np.mean([p["images_per_second_per_trial"] for p in parts])),
        "eval_seconds_per_epoch": float(np.mean([p["eval_seconds_per_epoch"] for p in parts])),
        "eval_images_per_second_per_trial": float(np.mean([p["eval_images_per_second_per_trial"] for p in parts])),
        "first_step_seconds": max(p["first_step_seconds"] for p in parts),
        "first_epoch_extra_seconds": max(p["first_epoch_extra_seconds"] for p in parts),
        "peak_memory_bytes": max((p["peak_memory_bytes"] or 0) for p in parts) or None,
        "resident_bytes": max(p["resident_bytes"] for p in parts),
        "resident": [p["resident"] for p in parts],
        "train_images": parts[0]["train_images"],
    }


# ---- the same step fed by JPEGs ------------------------------------------------------------------------


class JpegFolder(torch.utils.data.Dataset):
    """What a user would write: PIL decode, flip, normalise, per image, in DataLoader workers."""

    def __init__(self, paths: list[str], labels: np.ndarray, backbone: str):
        from torchvision.transforms import v2

        self.paths, self.labels = paths, torch.as_tensor(labels, dtype=torch.float32)
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(*normalisation(backbone)),  # as the decoded path normalises for it
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


def write_jpegs(data: DecodedDataset, folder: Path, n: int, backbone: str) -> JpegFolder:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"{i:06d}.jpg"))
        Image.fromarray(np.asarray(data.images["train"][i])).save(paths[-1], quality=90)
    return JpegFolder(paths, data.labels["train"][:n], backbone)


def measure_jpeg(
    data: DecodedDataset, jpegs: JpegFolder, kind: str, mode: str, size: dict, threads: int | None, workers: int
) -> dict:
    """The real training step (train_epoch) fed by a DataLoader over JPEGs; the second epoch is measured."""
    spec = make_spec(kind, mode, size, threads)
    device = pick_device("auto")
    if threads:
        torch.set_num_threads(threads)
    model = build_model(spec, device)
    cols = data.columns(spec.attributes)
    loader = torch.utils.data.DataLoader(
        jpegs,
        batch_size=spec.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
    )
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def batches():
        for x, y in loader:
            yield x.to(device, non_blocking=True, memory_format=fmt), y[:, cols].to(device, non_blocking=True)

    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        _, _, n_images = train_epoch(model.task, batches(), model.optimizers, model.autocast)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return {
        "images_per_second_per_trial": n_images / seconds[1],
        "train_images": n_images,
        "first_epoch_extra_seconds": seconds[0] - seconds[1],
    }


# ---- the grid ------------------------------------------------------------------------------------------


def sized(args) -> dict:
    """The size to measure: --toy's or the full one, with --backbone, --image-size, --batch-size, --steps."""
    size = dict(SIZES["toy" if args.toy else "full"])
    for key in ("backbone", "image_size", "batch_size", "steps"):
        if getattr(args, key) is not None:
            size[key] = tuple(args.image_size) if key == "image_size" else getattr(args, key)
    return size


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "gpu": props.name if cuda else None,
        "gpu_memory_bytes": props.total_memory if cuda else None,
        "device": "cuda" if cuda else "cpu",
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def grid(args) -> list[tuple[str, str, int, str]]:
    """(kind, mode, concurrency, data) to measure, in order."""
    cuda = torch.cuda.is_available()
    # compiling on a CPU takes about a minute per graph: there only the concurrency kinds are compiled
    runs = [
        (k, m, 1, "auto") for m in args.modes for k in (args.kinds if m == "eager" or cuda else args.concurrency_kinds)
    ]
    runs += [(k, args.default_mode, c, "auto") for c in args.concurrency if c > 1 for k in args.concurrency_kinds]
    if cuda:  # on a CPU every batch comes from the host anyway
        runs += [(k, args.default_mode, 1, "never") for k in args.concurrency_kinds]
    runs += [(k, args.default_mode, 1, "jpeg") for k in args.concurrency_kinds]
    return runs


def run(args) -> list[dict]:
    size = sized(args)
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        folder = fabricate(Path(tmp) / "cache", size["image_size"], size["splits"])
        print(
            f"fabricated a decoded cache of {sum(size['splits'].values())} images at {size['image_size']} "
            f"in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
        records, jpegs = [], None
        for kind, mode, conc, data_path in grid(args):
            t0 = time.perf_counter()
            threads = 1 if not torch.cuda.is_available() else None  # more threads than free cores: spinning
            if data_path == "jpeg":
                data = read_cache(folder)
                jpegs = jpegs or write_jpegs(data, Path(tmp) / "jpeg", size["jpeg_images"], size["backbone"])
                m = measure_jpeg(data, jpegs, kind, mode, size, threads, args.workers or cpus)
                m["images_per_second"] = m["images_per_second_per_trial"]
            elif conc == 1 and mode == "eager":
                m = measure(folder, kind, mode, size, threads, resident=data_path)
                m["images_per_second"] = m["images_per_second_per_trial"]
            else:
                m = measure_concurrent(folder, kind, mode, size, conc, threads, data_path)
            records.append(
                {
                    "kind": kind,
                    "mode": mode,
                    "concurrency": conc,
                    "data": data_path,
                    "backbone": size["backbone"],
                    "image_size": list(size["image_size"]),
                    "batch_size": size["batch_size"],
                    **m,
                    "wall_seconds": time.perf_counter() - t0,
                }
            )
            print(
                f"  {kind} {mode} x{conc} {data_path}: {m['images_per_second']:.0f} img/s "
                f"({time.perf_counter() - t0:.1f}s)",
                file=sys.stderr,
            )
    return records


def _on_gpu(resident) -> str:
    """Which splits stayed on the GPU: "train,val,test" for one training, "k/n train" for n of them."""
    if resident is None or not torch.cuda.is_available():
        return "-"
    if isinstance(resident, list):
        return f"{sum(r['train'] for r in resident)}/{len(resident)} train"
    return ",".join(s for s, on in resident.items() if on) or "none"


def speedups(records: list[dict]) -> list[str]:
    """The decoded cache against the JPEG DataLoader (and the host path), same kind and mode, this run."""
    base = {(r["kind"], r["mode"]): r for r in records if r["concurrency"] == 1 and r["data"] == "auto"}
    out = []
    for r in records:
        ref = base.get((r["kind"], r["mode"]))
        if r["data"] in ("jpeg", "never") and ref:
            out.append(
                f"{r['kind']} {r['mode']}: decoded cache {ref['images_per_second']:.0f} img/s = "
                f"{ref['images_per_second'] / r['images_per_second']:.1f}x the "
                f"{'JPEG DataLoader' if r['data'] == 'jpeg' else 'pinned-memory path'}"
            )
    return out


def table(records: list[dict]) -> str:
    gib = lambda b: "-" if not b else f"{b / 2**30:.1f}"  # noqa: E731
    head = ("kind", "mode", "conc", "data", "img/s", "img/s/trial", "eval s/epoch", "1st step s", "peak GiB", "on GPU")
    rows = [head] + [
        (
            r["kind"],
            r["mode"],
            str(r["concurrency"]),
            r["data"],
            f"{r['images_per_second']:.0f}",
            f"{r['images_per_second_per_trial']:.0f}",
            "-" if r.get("eval_seconds_per_epoch") is None else f"{r['eval_seconds_per_epoch']:.2f}",
            "-" if r.get("first_step_seconds") is None else f"{r['first_step_seconds']:.2f}",
            gib(r.get("peak_memory_bytes")),
            _on_gpu(r.get("resident")),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="CPU-sized: small_cnn at 16x16, a few thousand images")
    p.add_argument("--out", help="write the records as JSON here")
    p.add_argument(
        "--throughput-out",
        help="also write them where `aal-sweep plan` reads them (default on a "
        "GPU at full size: estimate.default_throughput_path())",
    )
    p.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="eager, compiled, compiled:reduce-overhead (CUDA graphs), compiled:max-autotune "
        "(default: eager compiled; on a CPU compiled only for --concurrency-kinds)",
    )
    p.add_argument("--concurrency", nargs="+", type=int, default=[2, 4], help="concurrent trainings besides 1")
    p.add_argument(
        "--concurrency-kinds",
        nargs="+",
        choices=tuple(KINDS),
        default=["pair"],
        help="kinds measured concurrently, with the pinned-memory path and the JPEG DataLoader",
    )
    p.add_argument(
        "--backbone",
        help="model.backbone to measure: resnet18, small_cnn, timm/NAME, torchvision/NAME "
        "(default: resnet18 at full size, small_cnn in the toy)",
    )
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="default: 218 178 (CelebA's); toy 16 16")
    p.add_argument("--batch-size", type=int, help="default: 256; toy 64")
    p.add_argument("--steps", type=int, help="training steps per epoch (default: 60 at full size, all in the toy)")
    p.add_argument("--workers", type=int, help="JPEG DataLoader workers (default: every CPU)")
    p.add_argument("--tmp", help="where to write the fabricated cache (full size: 23 GB)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for the test suite: the toy, eager (a cold compile takes a minute), 2 concurrent, 2 steps",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.toy, args.modes, args.concurrency, args.steps = True, args.modes or ["eager"], [2], args.steps or 2
    size = sized(args)
    problems = check_backbone(size["backbone"], None, size["image_size"])  # a typo: one line, not a traceback
    if problems:
        p.error("; ".join(problems))
    cuda = torch.cuda.is_available()
    args.default_mode = "compiled" if cuda else "eager"  # what train.compile auto does on this device
    args.modes = args.modes or ["eager", "compiled"]
    records = run(args)
    result = {**machine(), "toy": args.toy, "command": " ".join(sys.argv), "records": records}
    print(table(records))
    for line in speedups(records):
        print(line)
    plan_path = args.throughput_out or (default_throughput_path() if cuda and not args.toy else None)
    for path, written in ((args.out, result), (plan_path, plan_plus(plan_path, result))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(written, indent=1))
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _setting(r: dict) -> tuple:
    return r["backbone"], tuple(r["image_size"]), r["batch_size"]


def plan_plus(path: str | Path | None, result: dict) -> dict:
    """`result` with the records of the file `plan` reads at `path` that it does not measure again: so
    measuring a second backbone (or image size, or batch size) on the same GPU keeps the first's."""
    if path is None or not Path(path).is_file():
        return result
    try:
        before = json.loads(Path(path).read_text())
        kept = [r for r in before["records"] if _setting(r) not in {_setting(n) for n in result["records"]}]
    except (ValueError, KeyError, TypeError):  # not a file this benchmark wrote: replaced
        return result
    if before.get("gpu") != result["gpu"]:  # measured on another GPU: not comparable, replaced
        return result
    return {**result, "records": kept + result["records"]}


if __name__ == "__main__":
    sys.exit(main())
