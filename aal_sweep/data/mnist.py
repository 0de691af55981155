"""A real-image attribute dataset in the CelebA on-disk layout, from the MNIST test digits.

    make_mnist_attributes("data/mnist-attrs", n_images=5000, source="../shared/data/mnist")

reads t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (the IDX format, gzip) from `source`, draws
`n_images` of the 10,000 test digits (a seeded permutation; the draw also orders the files, and so the
splits: 70% train, 15% val, 15% test), and writes each as a lossless greyscale PNG named after its index in
the MNIST test set (`t10k_00042.png`), resized to `size` when that is not 28x28. Twelve binary attributes,
each from the digit d or from the original 28x28 pixels:

    Zero       d = 0
    Even       d in {0, 2, 4, 6, 8}
    Big        d >= 5
    Prime      d in {2, 3, 5, 7}
    Loop       d in {0, 6, 8, 9}: the digit has a closed loop
    Straight   d in {1, 4, 7}: drawn with straight strokes only
    Ink        total ink (sum of the pixels / 255) above its median
    Thick      ink per pixel of the ink's bounding box above its median (stroke width)
    Wide       the bounding box's width / height above its median
    LeftHeavy  the share of the ink in the left half (columns 0-13) above its median
    TopHeavy   the share of the ink in the top half (rows 0-13) above its median
    Slanted    the ink's slant, cov(column, row) / var(row) with rows counted upwards, above its median
               (a digit leaning right is positive)

The bounding box holds the pixels > 0. Medians are over the images written, and "above" is strict, so ties
(Wide's ratios of small integers) leave an attribute a little under 50% positive. The digit attributes
share one latent factor (the digit's identity), so a shared trunk plausibly helps them together; the pixel
attributes ask for the writer's style (stroke width, slant, placement), which a trunk that learns digit
identity is invited to ignore, and Even, Prime and Big cut the ten digits across each other (Even and Prime
share only the 2) as XOR-like label pairs do: candidates for negative transfer. Which pairs do transfer is
for the pair matrix to measure, not for this list to claim.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from aal_sweep.data.celeba import IMAGE_DIR, split_codes, write_lists
from aal_sweep.errors import DataError

IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
N_TEST = 10_000
SIDE = 28
# the project's copy, beside the repository (../shared/data/mnist); elsewhere pass the folder
DEFAULT_SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
SPLITS = (0.7, 0.15)  # train, val; the rest is test
SEED = 0
DIGITS = {
    "Zero": (0,),
    "Even": (0, 2, 4, 6, 8),
    "Big": (5, 6, 7, 8, 9),
    "Prime": (2, 3, 5, 7),
    "Loop": (0, 6, 8, 9),
    "Straight": (1, 4, 7),
}
PIXEL_ATTRIBUTES = ("Ink", "Thick", "Wide", "LeftHeavy", "TopHeavy", "Slanted")
ATTRIBUTES = (*DIGITS, *PIXEL_ATTRIBUTES)


def _idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes (magic 0x0801 labels, 0x0803 images) from a gzip file."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing (the MNIST test set: put {IMAGES_FILE} and {LABELS_FILE} in that "
            f"folder, or pass another with --source)"
        )
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a complete gzip file ({e}); download it again") from None
    head = np.frombuffer(data[: 4 + 4 * ndim], dtype=">u4")
    if len(head) != 1 + ndim or head[0] != magic:
        raise DataError(
            f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic {magic:#06x}); is it the right file?"
        )
    shape = tuple(int(v) for v in head[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: the header says {shape} but the file holds {body.size} bytes; download it again")
    return body.reshape(shape)


def read_mnist_test(source: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], digits uint8 [10000]) of the MNIST test set in `source`."""
    source = Path(source)
    images = _idx(source / IMAGES_FILE, 0x0803, 3)
    digits = _idx(source / LABELS_FILE, 0x0801, 1)
    if len(images) != len(digits):
        raise DataError(f"{source}: {len(images)} images but {len(digits)} labels (use the two files of one release)")
    return images, digits


def digit_attributes(digits: np.ndarray) -> np.ndarray:
    """bool [N, 6]: the digit attributes (DIGITS, in order) of each digit."""
    return np.stack([np.isin(digits, ds) for ds in DIGITS.values()], axis=1)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """float [N, 6]: the measures behind PIXEL_ATTRIBUTES (in order), of 28x28 uint8 images."""
    x = images.astype(np.float64) / 255.0
    _, h, w = x.shape
    ink = x.sum(axis=(1, 2))
    mass = np.maximum(ink, 1e-12)  # a blank image: its shares and slant are 0, not NaN
    rows_on, cols_on = (x > 0).any(axis=2), (x > 0).any(axis=1)
    height = h - rows_on.argmax(1) - rows_on[:, ::-1].argmax(1)
    width = w - cols_on.argmax(1) - cols_on[:, ::-1].argmax(1)
    thick = ink / np.maximum(height * width, 1)
    wide = width / np.maximum(height, 1)
    left = x[:, :, : w // 2].sum(axis=(1, 2)) / mass
    top = x[:, : h // 2, :].sum(axis=(1, 2)) / mass
    r = (h - 1 - np.arange(h, dtype=np.float64))[None, :, None]  # rows counted upwards
    c = np.arange(w, dtype=np.float64)[None, None, :]
    r_mean = (x * r).sum(axis=(1, 2)) / mass
    c_mean = (x * c).sum(axis=(1, 2)) / mass
    dr, dc = r - r_mean[:, None, None], c - c_mean[:, None, None]
    var_r = (x * dr**2).sum(axis=(1, 2)) / mass
    slant = (x * dr * dc).sum(axis=(1, 2)) / mass / np.maximum(var_r, 1e-12)
    return np.stack([ink, thick, wide, left, top, slant], axis=1)


def mnist_attributes(images: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """bool [N, 12]: every attribute (ATTRIBUTES, in order); pixel ones split at their median over these images."""
    features = pixel_features(images)
    return np.concatenate([digit_attributes(digits), features > np.median(features, axis=0)], axis=1)


def make_mnist_attributes(
    out: str | Path,
    n_images: int = N_TEST,
    size: tuple[int, int] = (SIDE, SIDE),
    seed: int = SEED,
    source: str | Path = DEFAULT_SOURCE,
    noisy: float = 0.0,
) -> Path:
    """Write ROOT/img_align_celeba/*.png and both list files (CelebA layout) from MNIST test digits; return ROOT.

    `source`: the folder holding the two MNIST test files. `noisy` > 0 appends `Noisy`: Big's labels with
    that share flipped at random (a subjective annotation, on which annotators disagree), a partner whose
    gradients conflict with what the images show."""
    if not 0 <= noisy <= 0.5:
        raise ValueError(f"--noisy must be a flip rate between 0 and 0.5, got {noisy}")
    if not 10 <= n_images <= N_TEST:
        raise ValueError(f"--images must be between 10 and {N_TEST} (the MNIST test set), got {n_images}")
    h, w = size
    if min(h, w) < 8:
        raise ValueError(f"--size must be at least 8 8, got {h} {w}")
    from PIL import Image  # here, not at the top: the CLI's parser imports this module for its defaults

    images, digits = read_mnist_test(source)
    chosen = np.random.default_rng(seed).permutation(len(images))[:n_images]
    images, digits = images[chosen], digits[chosen]
    labels = mnist_attributes(images, digits)
    names = list(ATTRIBUTES)
    if noisy:  # drawn after everything else, so a dataset without it is unchanged
        big = labels[:, names.index("Big")]
        labels = np.concatenate(
            [labels, (big ^ (np.random.default_rng([seed, 2]).random(n_images) < noisy))[:, None]], 1
        )
        names.append("Noisy")
    out = Path(out)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    files = [f"t10k_{i:05d}.png" for i in chosen]
    for name, img in zip(files, images):
        picture = Image.fromarray(img)  # uint8 [28, 28]: greyscale ("L")
        if (h, w) != (SIDE, SIDE):
            picture = picture.resize((w, h), Image.BILINEAR)
        picture.save(out / IMAGE_DIR / name)
    write_lists(out, names, files, labels, split_codes(n_images, SPLITS))
    return out
