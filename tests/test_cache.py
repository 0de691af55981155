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


# ---- broken images: every bad file named once, nothing left behind ----------------------------------

import os  # noqa: E402

import pytest  # noqa: E402

from aal_sweep.errors import DataError  # noqa: E402


def break_images(root: Path) -> dict[str, str]:
    """Damage five listed images in five ways; return {file name: words its problem must contain}."""
    images = root / "img_align_celeba"
    good = (images / "000001.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(b"")
    (images / "000003.jpg").write_bytes(good[:-2])  # the end-of-image marker cut off
    (images / "000004.jpg").write_bytes(b"not a jpeg at all")
    (images / "000005.jpg").unlink()
    (images / "000005.jpg").mkdir()
    (images / "000006.jpg").unlink()
    (images / "000006.jpg").symlink_to(images / "gone.jpg")
    return {
        "000002.jpg": "zero bytes",
        "000003.jpg": "truncated",
        "000004.jpg": "not an image",
        "000005.jpg": "a folder",
        "000006.jpg": "dangling link",
    }


@pytest.fixture
def broken_root(tmp_path):
    from aal_sweep.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "d", 2, 30, (16, 16))
    return root, break_images(root)


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_build_names_every_bad_file_and_leaves_nothing(broken_root, tmp_path, workers):
    root, bad = broken_root
    cache = tmp_path / "c"
    with pytest.raises(DataError) as e:
        open_decoded(root, (16, 16), cache, workers=workers)
    message = str(e.value)
    assert "\n" not in message and "5 of 30 image(s)" in message
    for name, words in bad.items():
        assert name in message
        assert words in message.split(name, 1)[1].split(")", 1)[0], (name, message)
    assert "000001.jpg" not in message
    assert e.value.bad and len(e.value.bad) == 5
    # no entry and no build folder: only the (empty) lock file and the failure's record (no image data) stay
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".lock"]


def test_dead_build_folders_are_removed(tiny_root, tmp_path):
    from aal_sweep.data.cache import fingerprint

    cache = tmp_path / "c"
    key = fingerprint(tiny_root, (16, 16))
    for dead in (f"{key}.tmp-999999", "0123456789abcdef.tmp-999998"):  # a killed build of this and another key
        (cache / dead).mkdir(parents=True)
        (cache / dead / "train.u8").write_bytes(b"\0" * 1000)
    data = open_decoded(tiny_root, (16, 16), cache, workers=1)
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [data.path.name]


def test_verify_lists_every_bad_image(broken_root):
    from aal_sweep.data.cache import verify_images
    from aal_sweep.data.celeba import load_index

    root, bad = broken_root
    index = load_index(root)
    paths = [str(index.image_path(f)) for s in ("train", "val", "test") for f in index.files[s]]
    seen = []
    found = verify_images(paths, workers=2, chunk=4, progress=lambda done, total: seen.append((done, total)))
    assert sorted(Path(p).name for p, _ in found) == sorted(bad)
    assert seen[-1] == (30, 30) and len(seen) > 1


def test_live_build_of_another_entry_is_kept(tiny_root, tmp_path):
    from filelock import FileLock

    cache = tmp_path / "c"
    cache.mkdir()
    live = cache / "0123456789abcdef.tmp-1"
    live.mkdir()
    with FileLock(str(cache / "0123456789abcdef.lock")):  # its builder is alive: it holds the lock
        open_decoded(tiny_root, (16, 16), cache, workers=1)
        assert live.is_dir()
    open_decoded(tiny_root, (12, 12), cache, workers=1)  # the next build after that builder ended removes it
    assert not live.exists()


def test_build_killed_midway_is_cleaned_by_the_next(tmp_path):
    """kill -9 of a real build while its folder exists; the next build removes it and succeeds."""
    import signal
    import subprocess
    import sys
    import time

    from aal_sweep.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "d", 2, 1500, (24, 24))
    cache = tmp_path / "c"
    code = (
        f"from aal_sweep.data.cache import open_decoded; "
        f"open_decoded({str(root)!r}, (24, 24), {str(cache)!r}, workers=1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("*.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert list(cache.glob("*.tmp-*")), "the build ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and list(cache.glob("*.tmp-*"))
    data = open_decoded(root, (24, 24), cache, workers=1)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [data.path.name]
    assert data.images["train"].shape == (1050, 24, 24, 3)


def test_a_failed_build_is_remembered_until_a_file_changes(broken_root, tmp_path):
    """A second attempt on the same files fails at once with the same line, without decoding: proven by a
    good image damaged behind the fingerprint's back (same size and mtime), which it does not name."""
    root, bad = broken_root
    cache = tmp_path / "c"
    with pytest.raises(DataError) as first:
        open_decoded(root, (16, 16), cache, workers=1)
    assert [p.name for p in cache.glob("*.bad.json")]  # the record: no image data
    sneaky = root / "img_align_celeba" / "000009.jpg"
    original, st = sneaky.read_bytes(), sneaky.stat()
    sneaky.write_bytes(b"x" * st.st_size)
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError) as again:
        open_decoded(root, (16, 16), cache, workers=1)
    assert str(again.value) == str(first.value) and "000009.jpg" not in str(again.value)
    sneaky.write_bytes(original)
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    good = (root / "img_align_celeba" / "000001.jpg").read_bytes()
    (root / "img_align_celeba" / "000002.jpg").write_bytes(good)  # a fix changes the key: decoded again
    with pytest.raises(DataError) as fixed:
        open_decoded(root, (16, 16), cache, workers=1)
    assert "4 of 30 image(s)" in str(fixed.value) and "000002.jpg" not in str(fixed.value)
    assert not [p for p in cache.iterdir() if p.is_dir()]


def test_no_space_for_the_cache_is_one_line_and_leaves_nothing(tiny_root, tmp_path):
    """A build that cannot get its disk space (a file-size limit stands in for a full disk) fails before
    decoding, in one line naming the folder and the space it needs, and removes its build folder."""
    import subprocess
    import sys

    cache = tmp_path / "c"
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from aal_sweep.data.cache import open_decoded
from aal_sweep.errors import AalError
try:
    open_decoded({str(tiny_root)!r}, (16, 16), {str(cache)!r}, workers=1)
except AalError as e:
    print(e)
    sys.exit(2)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert f"{cache}: cannot write the decode cache (File too large); it needs 307.2 kB there" in p.stdout
    assert "Traceback" not in p.stderr
    assert not [q for q in cache.iterdir() if q.is_dir()]


# The decoding pool must never fork the calling process: callers are often multi-threaded (a Ray worker, a
# test process), and a child forked while another thread holds a lock waits for it forever. Seen: `dataset
# verify` hung in a test process, its pool worker stuck in an import of PIL's. os.register_at_fork's
# `before` hook runs in a process each time Python forks it.
NO_FORK = """
import json, os, sys
from aal_sweep.data.cache import verify_images

forks = []
os.register_at_fork(before=lambda: forks.append(os.getpid()))
paths = json.loads(sys.argv[1])
print(json.dumps({"bad": verify_images(paths, workers=2, chunk=len(paths) // 2), "forks": len(forks)}))
"""


def test_decoding_pool_never_forks_the_calling_process(tiny_root):
    import json
    import subprocess
    import sys

    index = load_index(tiny_root)
    paths = [str(index.image_path(f)) for f in index.files["train"][:40]]
    proc = subprocess.run(
        [sys.executable, "-c", NO_FORK, json.dumps(paths)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"bad": [], "forks": 0}
