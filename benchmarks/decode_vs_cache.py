"""Epoch time: the decode-once uint8 cache against decoding JPEGs with a torchvision DataLoader.

Both paths feed the same model the same batches (flip + normalise) and run the same train step, so the
difference is the input pipeline. Warm-up epoch, then `--repeats` epochs; the median is reported.

    .venv/bin/python benchmarks/decode_vs_cache.py --images 4000 --size 64 64 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

from aal_sweep.backbones import normalisation
from aal_sweep.data.cache import open_decoded
from aal_sweep.data.celeba import load_index
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.data.tensors import SplitTensors
from aal_sweep.train.loop import TrainSpec, _epoch_generator, build_model, train_epoch


class JpegFolder(Dataset):
    """The usual torchvision pipeline: read and decode each JPEG every epoch, then transform."""

    def __init__(self, index, size, backbone: str):
        self.paths = [str(index.image_path(f)) for f in index.files["train"]]
        self.labels = torch.as_tensor(index.labels["train"][:, :2], dtype=torch.float32)
        self.tf = v2.Compose(
            [
                v2.Resize(size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(*normalisation(backbone)),
            ]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.tf(decode_jpeg(read_file(self.paths[i]))), self.labels[i]


def epoch(model, batches) -> float:
    t0 = time.perf_counter()
    train_epoch(model.task, batches, model.optimizers, model.autocast)  # the real training step
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--size", type=int, nargs=2, default=(64, 64))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 200 images of 16x16, one epoch")
    a = p.parse_args()
    if a.smoke:
        a.images, a.size, a.batch_size, a.repeats = 200, (16, 16), 32, 1  # 200: val and test get 2 each
    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(
            Path(tmp) / "d", 4, a.images, tuple(a.size), seed=0, splits=(0.98, 0.01)
        )  # val and test may not be empty
        t0 = time.perf_counter()
        data = open_decoded(root, tuple(a.size), Path(tmp) / "cache", workers=a.workers)
        build = time.perf_counter() - t0
        model = build_model(
            TrainSpec(kind="pair", attributes=("a", "b"), backbone=a.backbone, lr=1e-3, device="cpu"),
            torch.device("cpu"),
        )
        cached = SplitTensors(
            data.images["train"], data.labels["train"][:, :2], torch.device("cpu"), "auto", *normalisation(a.backbone)
        )
        loader = DataLoader(
            JpegFolder(load_index(root), tuple(a.size), a.backbone),
            batch_size=a.batch_size,
            shuffle=True,
            num_workers=a.workers,
            persistent_workers=True,
        )
        runs = {"cache": [], "jpeg": []}
        for r in range(a.repeats + 1):  # the first round is warm-up
            c = epoch(model, cached.batches(a.batch_size, _epoch_generator(0, r), augment=True))
            j = epoch(model, loader)
            if r:
                runs["cache"].append(c)
                runs["jpeg"].append(j)
        # the input pipeline alone: the same epochs without the train step
        only = {
            "cache": statistics.median(
                epoch_inputs(cached.batches(a.batch_size, _epoch_generator(0, r), augment=True))
                for r in range(a.repeats)
            ),
            "jpeg": statistics.median(epoch_inputs(loader) for _ in range(a.repeats)),
        }
    c, j = statistics.median(runs["cache"]), statistics.median(runs["jpeg"])
    n = a.images
    print(
        f"{n} images {a.size[0]}x{a.size[1]}, batch {a.batch_size}, {a.backbone}, {a.workers} loader workers, "
        f"{torch.get_num_threads()} torch threads; cache build {build:.2f}s (once)"
    )
    print(
        f"epoch with train step: cache {c:.2f}s ({n / c:.0f} img/s), jpeg DataLoader {j:.2f}s ({n / j:.0f} img/s), "
        f"ratio {j / c:.2f}x"
    )
    print(
        f"input pipeline only:   cache {only['cache']:.2f}s ({n / only['cache']:.0f} img/s), "
        f"jpeg DataLoader {only['jpeg']:.2f}s ({n / only['jpeg']:.0f} img/s), ratio {only['jpeg'] / only['cache']:.1f}x"
    )


def epoch_inputs(batches) -> float:
    t0 = time.perf_counter()
    for _batch in batches:
        pass
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
