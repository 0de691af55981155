"""The MNIST attribute dataset: written in the CelebA layout from the real MNIST test files, read back by the
real reader and decode cache, every label recomputed here from its definition."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from aal_sweep.cli import main
from aal_sweep.data.index import load_index
from aal_sweep.data.mnist import ATTRIBUTES, make_mnist_attributes
from aal_sweep.errors import DataError

MNIST = SHARED / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"the MNIST test files are not in {MNIST}"
)


def _raw():
    """The test set read independently of the module: 16-byte / 8-byte IDX headers."""
    images = np.frombuffer(gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    digits = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    images = images.reshape(-1, 28, 28)
    return images, digits


def _definitions(img: np.ndarray, d: int) -> list[float]:
    """One image's six digit attributes (0/1) and six pixel measures, by the docstring's words, with loops."""
    x = img.astype(float) / 255
    on = np.argwhere(x > 0)
    (r0, c0), (r1, c1) = on.min(0), on.max(0)
    ink = x.sum()
    rows, cols = np.indices(x.shape)
    up = 27 - rows
    ru, cm = (x * up).sum() / ink, (x * cols).sum() / ink
    slant = (x * (up - ru) * (cols - cm)).sum() / (x * (up - ru) ** 2).sum()
    return [
        d == 0,
        d % 2 == 0,
        d >= 5,
        d in (2, 3, 5, 7),
        d in (0, 6, 8, 9),
        d in (1, 4, 7),
        ink,
        ink / ((r1 - r0 + 1) * (c1 - c0 + 1)),
        (c1 - c0 + 1) / (r1 - r0 + 1),
        x[:, :14].sum() / ink,
        x[:14].sum() / ink,
        slant,
    ]


@needs_mnist
def test_written_tree_reads_back_with_labels_by_definition(tmp_path):
    root = make_mnist_attributes(tmp_path / "m", n_images=300, seed=3, source=MNIST)
    index = load_index(root)
    assert index.attributes == ATTRIBUTES and len(ATTRIBUTES) >= 10
    assert {s: len(f) for s, f in index.files.items()} == {"train": 210, "val": 45, "test": 45}
    files = [f for s in ("train", "val", "test") for f in index.files[s]]
    labels = np.concatenate([index.labels[s] for s in ("train", "val", "test")])
    images, digits = _raw()
    source = [int(f[len("t10k_") : -len(".png")]) for f in files]
    assert len(set(source)) == 300
    for f, k in zip(files[:20], source):  # lossless PNGs of the original pixels
        assert np.array_equal(np.asarray(Image.open(index.image_path(f))), images[k])
    raw = np.array([_definitions(images[k], int(digits[k])) for k in source])
    expected = np.concatenate([raw[:, :6] > 0.5, raw[:, 6:] > np.median(raw[:, 6:], axis=0)], axis=1)
    assert np.array_equal(labels.astype(bool), expected)
    rates = labels.mean(0)
    assert 0.03 < rates[ATTRIBUTES.index("Zero")] < 0.2  # one digit in ten
    for name in ("Ink", "Thick", "LeftHeavy", "TopHeavy", "Slanted"):  # continuous: split at the median
        assert rates[ATTRIBUTES.index(name)] == pytest.approx(0.5, abs=0.01)


@needs_mnist
def test_seeded_resized_and_decodable_by_the_cache(tmp_path):
    from aal_sweep.data.cache import open_decoded

    a = make_mnist_attributes(tmp_path / "a", n_images=40, size=(16, 20), seed=1, source=MNIST)
    b = make_mnist_attributes(tmp_path / "b", n_images=40, size=(16, 20), seed=1, source=MNIST)
    c = make_mnist_attributes(tmp_path / "c", n_images=40, size=(16, 20), seed=2, source=MNIST)
    text = lambda root: (root / "list_attr_celeba.txt").read_bytes()  # noqa: E731
    assert text(a) == text(b) and text(a) != text(c)
    decoded = open_decoded(a, (16, 20), tmp_path / "cache")
    assert decoded.images["train"].shape == (28, 16, 20, 3)
    assert decoded.images["train"].max() > 200  # the strokes, not a blank picture


def test_missing_source_names_the_file(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: missing"):
        make_mnist_attributes(tmp_path / "m", n_images=20, source=tmp_path)
    with pytest.raises(DataError, match="pass another with --source"):
        make_mnist_attributes(tmp_path / "m", n_images=20, source=tmp_path / "none")


def test_damaged_file_is_named(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8)))
    with pytest.raises(DataError, match="not an IDX file of 3-d"):
        make_mnist_attributes(tmp_path / "m", n_images=20, source=tmp_path)


@needs_mnist
def test_cli_make_mnist(tmp_path, capsys):
    assert main(["make-mnist", str(tmp_path / "m"), "--images", "30", "--source", str(MNIST)]) == 0
    assert "30 MNIST test images with 12 attributes" in capsys.readouterr().out
    assert len(load_index(tmp_path / "m").files["train"]) == 21
    assert main(["make-mnist", str(tmp_path / "n"), "--images", "5", "--source", str(MNIST)]) == 2
    assert "--images must be between 10 and 10000" in capsys.readouterr().err
    assert main(["make-mnist", str(tmp_path / "o"), "--source", str(tmp_path / "none")]) == 2
    assert "missing" in capsys.readouterr().err
