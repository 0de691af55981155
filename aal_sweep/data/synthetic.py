"""A synthetic dataset in the CelebA on-disk layout: attributes are shapes in distinct image regions.

Each attribute owns one cell of a grid; a positive label draws that attribute's shape there, with jitter
in position, size and colour over a noisy background. A fraction of labels is flipped (`label_noise`) so
accuracies stay below 100% and pairs can differ, and a shared latent factor correlates the labels a little,
as real attributes are. `small_cnn` learns it in seconds; every run exercises the real CelebA reader.

`random_attributes` appends attributes named Random, Random_1, ... whose labels are fair coin flips drawn
independently of the image: nothing in a picture predicts them (a partner that can only be memorised).

`xor` appends an attribute named Xor, the exclusive or of the first two attributes' labels (Disc, Square).
It is a real, constructed negative partner for Square: its loss pushes the shared features of a Square in
opposite directions depending on whether a Disc is there, so until the backbone has built the conjunction
(early in training, on a short budget) it scrambles the Square feature (tests/test_significance.py).
Neither option changes the other attributes' labels or the images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aal_sweep.data.celeba import IMAGE_DIR, split_codes, write_lists

SHAPES = ("Disc", "Square", "Triangle", "Cross", "Ring", "Bar", "Diamond", "Dot")


def attribute_names(n: int) -> list[str]:
    return [SHAPES[i % len(SHAPES)] + (f"_{i // len(SHAPES)}" if i >= len(SHAPES) else "") for i in range(n)]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    w = max(1, int(r / 2))
    if shape == "Disc" or shape == "Dot":
        draw.ellipse(box, fill=colour)
    elif shape == "Square":
        draw.rectangle(box, fill=colour)
    elif shape == "Triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "Cross":
        draw.line([(x0, cy), (x1, cy)], fill=colour, width=w)
        draw.line([(cx, y0), (cx, y1)], fill=colour, width=w)
    elif shape == "Ring":
        draw.ellipse(box, outline=colour, width=w)
    elif shape == "Bar":
        draw.rectangle((x0, cy - w / 2, x1, cy + w / 2), fill=colour)
    else:  # Diamond
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)


def make_synthetic(
    out: str | Path,
    n_attributes: int = 4,
    n_images: int = 2000,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    label_noise: float = 0.06,
    splits: tuple[float, float] = (0.7, 0.15),
    random_attributes: int = 0,
    xor: bool = False,
    noisy: float = 0.0,
) -> Path:
    """Write ROOT/img_align_celeba/*.jpg and both list files (CRLF, like the official ones); return ROOT."""
    if n_attributes < 2:
        raise ValueError(f"--attributes must be at least 2, got {n_attributes}")
    if random_attributes < 0:
        raise ValueError(f"--random-attributes must be at least 0, got {random_attributes}")
    if n_images < 10:
        raise ValueError(f"--images must be at least 10, got {n_images}")
    if not 0 <= noisy <= 0.5:
        raise ValueError(f"--noisy must be a flip rate between 0 and 0.5, got {noisy}")
    h, w = size
    if min(h, w) < 8:
        raise ValueError(f"--size must be at least 8 8, got {h} {w}")
    out = Path(out)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = attribute_names(n_attributes)

    latent = rng.normal(size=n_images)
    bias = rng.uniform(-0.6, 0.3, size=n_attributes)
    weight = rng.uniform(-1.0, 1.0, size=n_attributes)
    drawn = rng.random((n_images, n_attributes)) < 1 / (1 + np.exp(-(bias + latent[:, None] * weight)))
    flip = rng.random((n_images, n_attributes)) < label_noise
    labels = np.where(drawn ^ flip, 1, -1)
    if random_attributes:  # drawn after the others, so a dataset without them is unchanged
        coins = np.random.default_rng([seed, 1]).random((n_images, random_attributes)) < 0.5
        labels = np.concatenate([labels, np.where(coins, 1, -1)], axis=1)
        names = names + ["Random" + (f"_{k}" if k else "") for k in range(random_attributes)]
    if xor:
        labels = np.concatenate([labels, np.where(labels[:, :1] != labels[:, 1:2], 1, -1)], axis=1)
        names = names + ["Xor"]
    if noisy:  # a subjective annotation of the first shape: its labels, a share `noisy` of them flipped
        flipped = np.random.default_rng([seed, 2]).random(n_images) < noisy
        labels = np.concatenate([labels, np.where(flipped, -labels[:, :1], labels[:, :1])], axis=1)
        names = names + ["Noisy"]

    grid = math.ceil(math.sqrt(n_attributes))
    ch, cw = h / grid, w / grid
    files = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    for i, name in enumerate(files):
        background = rng.integers(60, 140, size=(h, w, 1)) + rng.integers(-25, 25, size=(h, w, 3))
        img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for j in np.flatnonzero(drawn[i]):
            r0, c0 = divmod(int(j), grid)
            scale = rng.uniform(0.45, 0.8)
            bh, bw = ch * scale, cw * scale
            y = r0 * ch + rng.uniform(0, ch - bh)
            x = c0 * cw + rng.uniform(0, cw - bw)
            colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
            _draw(draw, names[j].split("_")[0], (x, y, x + bw, y + bh), colour)
        img.save(out / IMAGE_DIR / name, quality=90)

    write_lists(out, names, files, labels == 1, split_codes(n_images, splits))
    return out
