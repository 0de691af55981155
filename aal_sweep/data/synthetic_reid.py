"""Synthetic images in the DukeMTMC-reID / Market-1501 folder layout, beside a real or written attribute .mat.

    make_reid_tree(root, "duke", mat=Path("duke_attribute.mat"), images_per_identity=3, size=(32, 16))

Each attribute owns one cell of a grid over the image; an image of an identity positive for it shows a
bright patch there (jittered, over noise) with probability SHOWN, and an image of a negative one with
probability SPURIOUS, so `small_cnn` learns the real label structure from small images but not perfectly
(every attribute at 100% would make every comparison a tie). Some
distractor (0000) and junk (-1) images go into the test folder, as in the real datasets. Used by the tests
and by benchmarks/duke_scale.py; the images are not the datasets' images.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from aal_sweep.data.reid import LAYOUTS, TEST_DIR, TRAIN_DIR, read_annotations

SHOWN, SPURIOUS = 0.85, 0.05  # chance that an image shows the patch of a positive / a negative attribute


def write_attribute_mat(path: Path, struct: str, splits: dict[str, tuple[list[str], dict[str, list[int]]]]) -> Path:
    """Write a .mat file shaped like the official ones: {struct: {split: {field: uint8 [1, n], image_index}}}."""
    import scipy.io

    out = {}
    for split, (ids, fields) in splits.items():
        index = np.empty((1, len(ids)), dtype=object)
        index[0, :] = list(ids)
        out[split] = {
            **{n: np.asarray(v, dtype=np.uint8).reshape(1, -1) for n, v in fields.items()},
            "image_index": index,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {struct: out})
    return path


def image_name(fmt: str, identity: str, k: int) -> str:
    """A file name as the dataset spells it: Duke 0001_c2_f0046182.jpg, Market 0002_c1s1_000451_03.jpg."""
    camera = k % 6 + 1
    if fmt == "duke":
        return f"{identity}_c{camera}_f{1000 * k + 17:07d}.jpg"
    return f"{identity}_c{camera}s1_{100 * k + 51:06d}_{k % 10:02d}.jpg"


def _image(labels: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    h, w = size
    cols = max(1, round(math.sqrt(len(labels) * w / h)))
    rows = math.ceil(len(labels) / cols)
    ch, cw = h / rows, w / cols
    img = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    shown = rng.random(len(labels)) < np.where(labels > 0, SHOWN, SPURIOUS)
    for j in np.flatnonzero(shown):
        r, c = divmod(int(j), cols)
        y0, x0 = int(r * ch + rng.integers(0, max(1, ch // 3))), int(c * cw + rng.integers(0, max(1, cw // 3)))
        img[y0 : y0 + max(1, int(ch * 0.7)), x0 : x0 + max(1, int(cw * 0.7))] = rng.integers(180, 256, size=3)
    return Image.fromarray(img)


def write_images(
    root: Path,
    fmt: str,
    folder: str,
    labels: dict[str, np.ndarray],
    images_per_identity: int,
    size: tuple[int, int],
    rng: np.random.Generator,
) -> int:
    """Write `images_per_identity` JPEGs per identity into root/folder; return how many."""
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    for identity, row in labels.items():
        for k in range(images_per_identity):
            _image(row, size, rng).save(out / image_name(fmt, identity, k), quality=95)
    return len(labels) * images_per_identity


def make_reid_tree(
    root: Path,
    fmt: str,
    mat: Path,
    images_per_identity: int = 3,
    size: tuple[int, int] = (32, 16),
    identities: dict[str, list[str]] | None = None,
    seed: int = 0,
) -> Path:
    """Copy `mat` into root and write images for its labelled identities (or the `identities` per split)."""
    layout = LAYOUTS[fmt]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mat, root / layout.mat_file)
    ann = read_annotations(root, layout)
    rng = np.random.default_rng(seed)
    for split, folder in (("train", TRAIN_DIR), ("test", TEST_DIR)):
        wanted = identities[split] if identities is not None else ann.identities[split]
        rows = {i: ann.labels[split][ann.identities[split].index(i)] for i in wanted}
        write_images(root, fmt, folder, rows, images_per_identity, size, rng)
    noise = np.zeros(len(ann.attributes), dtype=np.uint8)
    write_images(root, fmt, TEST_DIR, {"0000": noise, "-1": noise}, 2, size, rng)  # distractors, junk
    return root
