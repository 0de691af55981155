"""Decode once: the cache equals PIL's decode, is built once, and concurrent builders agree."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from PIL import Image

from aal_sweep.data.cache import open_decoded
from aal_sweep.data.celeba import load_index


def test_cache_matches_decoded_jpegs(tiny_root, tmp_path):
    data = open_decoded(tiny_root, (16, 16), tmp_path / "c", workers=1)
    index = load_index(tiny_root)
    assert data.attributes == index.attributes
    for split in ("train", "val", "test"):
        assert data.images[split].shape == (len(index.files[split]), 16, 16, 3)
        np.testing.assert_array_equal(data.labels[split], index.labels[split])
    first = np.asarray(Image.open(index.image_path(index.files["val"][0])).convert("RGB"))
    np.testing.assert_array_equal(data.images["val"][0], first)


def test_resize_and_reuse(tiny_root, tmp_path):
    a = open_decoded(tiny_root, (8, 12), tmp_path / "c", workers=2)
    assert a.images["train"].shape[1:] == (8, 12, 3)
    stamp = (a.path / "meta.json").stat().st_mtime_ns
    b = open_decoded(tiny_root, (8, 12), tmp_path / "c")
    assert b.path == a.path and (b.path / "meta.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert open_decoded(tiny_root, (16, 16), tmp_path / "c").path != a.path  # another size, another entry


def _open(args):
    root, cache = args
    return str(open_decoded(root, (16, 16), cache, workers=1).path)


def test_concurrent_builders_build_once(tiny_root, tmp_path):
    cache = tmp_path / "c"
    with mp.get_context("spawn").Pool(3) as pool:
        paths = pool.map(_open, [(str(tiny_root), str(cache))] * 3)
    assert len(set(paths)) == 1
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [Path(paths[0]).name]  # no temp folder left


def test_edited_dataset_gets_a_new_entry(tmp_path):
    from aal_sweep.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "d", 2, 20, (8, 8))
    first = open_decoded(root, (8, 8), tmp_path / "c").path
    Image.new("RGB", (8, 8)).save(root / "img_align_celeba" / "000001.jpg")
    assert open_decoded(root, (8, 8), tmp_path / "c").path != first
