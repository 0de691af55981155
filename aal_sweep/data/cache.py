"""Decode once: every split's JPEGs become one uint8 array [N, H, W, 3] in a memory-mapped file.

The cache entry is keyed by a fingerprint of the dataset files (list files' bytes, each image's name, size
and mtime) and the image size, so an edited dataset or another size gets its own entry. It is built under
a file lock, into a temporary folder renamed into place when complete, so concurrent trials on one node
build it once and a killed build leaves nothing half-written behind. Trainings then read the arrays only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from aal_sweep.data.celeba import ATTR_FILE, IMAGE_DIR, PARTITION_FILE, SPLITS, load_index

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("AAL_SWEEP_CACHE", Path.home() / ".cache" / "aal_sweep"))


@dataclass(frozen=True)
class DecodedDataset:
    """Decoded images and 0/1 labels of every split; `images[split]` is a read-only memmap."""

    attributes: tuple[str, ...]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    path: Path

    def columns(self, attributes: list[str] | tuple[str, ...]) -> list[int]:
        return [self.attributes.index(a) for a in attributes]


def fingerprint(root: Path, image_size: tuple[int, int]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} {image_size[0]}x{image_size[1]}".encode())
    for name in (ATTR_FILE, PARTITION_FILE):
        h.update((root / name).read_bytes())
    with os.scandir(root / IMAGE_DIR) as it:
        entries = sorted((e.name, st.st_size, st.st_mtime_ns) for e in it if e.is_file() for st in [e.stat()])
    h.update(json.dumps(entries).encode())
    return h.hexdigest()[:16]


def _decode_into(args: tuple[str, list[str], int, tuple[int, int, int, int]]) -> None:
    """Worker: decode `files` and write them at rows [start, start + len) of the memmap at `path`."""
    path, files, start, shape = args
    out = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    h, w = shape[1], shape[2]
    for i, f in enumerate(files):
        with Image.open(f) as img:
            img.draft("RGB", (w, h))  # JPEG DCT-domain downscale when shrinking by 2x or more: much faster
            img = img.convert("RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            out[start + i] = np.asarray(img)
    out.flush()


def _build(root: Path, image_size: tuple[int, int], dest: Path, workers: int) -> None:
    index = load_index(root)
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"attributes": list(index.attributes), "image_size": list(image_size), "splits": {}}
    for split in SPLITS:
        files = [str(index.image_path(f)) for f in index.files[split]]
        shape = (len(files), image_size[0], image_size[1], 3)
        path = tmp / f"{split}.u8"
        if files:
            np.memmap(path, dtype=np.uint8, mode="w+", shape=shape).flush()
        else:
            path.touch()  # numpy cannot map an empty file
        chunk = 512
        jobs = [(str(path), files[i:i + chunk], i, shape) for i in range(0, len(files), chunk)]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_decode_into, jobs))
        else:
            for job in jobs:
                _decode_into(job)
        np.save(tmp / f"{split}.labels.npy", index.labels[split])
        meta["splits"][split] = len(files)
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.replace(tmp, dest)


def open_decoded(root: str | Path, image_size: tuple[int, int], cache_dir: str | Path | None = None,
                 workers: int | None = None) -> DecodedDataset:
    """Return the decoded dataset, building the cache entry first if no process has yet."""
    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = fingerprint(root, tuple(image_size))
    dest = cache_dir / key
    if not (dest / "meta.json").is_file():
        with FileLock(str(cache_dir / f"{key}.lock")):
            if not (dest / "meta.json").is_file():  # another process may have built it while we waited
                n = workers or max(1, min(16, len(os.sched_getaffinity(0))))
                log.info("decoding %s at %sx%s into %s (%d workers)", root, *image_size, dest, n)
                _build(root, tuple(image_size), dest, n)
    meta = json.loads((dest / "meta.json").read_text())
    images, labels = {}, {}
    for split in SPLITS:
        n = meta["splits"][split]
        shape = (n, image_size[0], image_size[1], 3)
        images[split] = np.memmap(dest / f"{split}.u8", dtype=np.uint8, mode="r", shape=shape) if n else \
            np.zeros(shape, dtype=np.uint8)
        labels[split] = np.load(dest / f"{split}.labels.npy")
    return DecodedDataset(attributes=tuple(meta["attributes"]), images=images, labels=labels, path=dest)
