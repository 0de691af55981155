"""Decode once: every split's JPEGs become one uint8 array [N, H, W, 3] in a memory-mapped file.

The cache entry is keyed by a fingerprint of the dataset files (annotation files' bytes, each image's name, size
and mtime) and the image size, so an edited dataset or another size gets its own entry. It is built under
a file lock, into a temporary folder renamed into place when complete, so concurrent trials on one node
build it once and a killed build leaves nothing half-written behind. Trainings then read the arrays only.

A build decodes every image and names every one that fails (zero bytes, truncated, not an image, a folder,
a dangling link) in one BadImagesError; it then removes its build folder and remembers the failure for that
key (KEY.bad.json), so the next attempt on the same files fails at once. The next build also removes the
folders of builds that were killed. `verify_images` is the same decoding without an entry (`dataset --verify`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image, UnidentifiedImageError

from aal_sweep.data.index import fingerprint_inputs, load_index
from aal_sweep.data.types import SPLITS, DatasetIndex, DatasetSource, default_cache_dir
from aal_sweep.errors import AalError, BadImagesError, DataError
from aal_sweep.paths import require_folder
from aal_sweep.progress import Progress

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass(frozen=True)
class DecodedDataset:
    """Decoded images and 0/1 labels of every split; `images[split]` is a read-only memmap."""

    attributes: tuple[str, ...]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    path: Path

    def columns(self, attributes: list[str] | tuple[str, ...]) -> list[int]:
        return [self.attributes.index(a) for a in attributes]


def fingerprint(source: DatasetSource | str | Path, image_size: tuple[int, int]) -> str:
    """The cache key: the format's annotation files, its image folders' listings, its split settings, the size."""
    files, folders, settings = fingerprint_inputs(source)
    missing = [p for p in files + folders if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}: missing (the dataset folder is incomplete; `aal-sweep dataset` checks it)")
    h = hashlib.sha256(f"v{CACHE_VERSION} {image_size[0]}x{image_size[1]}".encode())
    for path in files:
        h.update(path.read_bytes())
    for folder in folders:
        with os.scandir(folder) as it:
            entries = sorted((e.name, st.st_size, st.st_mtime_ns) for e in it if e.is_file() for st in [e.stat()])
        h.update(json.dumps(entries).encode())
    if settings:  # empty for CelebA, so its keys are unchanged from before the other formats
        h.update(settings.encode())
    return h.hexdigest()[:16]


def _problem(path: str, error: Exception, on_disk: bool = True) -> str:
    """What is wrong with an image file that failed to decode, in a few words (one line). on_disk=False:
    the image's bytes came from the index's reader (a dataset's Arrow cell), not from a file."""
    if on_disk and os.path.islink(path) and not os.path.exists(path):
        return f"a dangling link to {os.readlink(path)}"
    if on_disk and os.path.isdir(path):
        return "a folder, not an image file"
    if on_disk and os.path.isfile(path) and os.path.getsize(path) == 0:
        return "zero bytes"
    if isinstance(error, UnidentifiedImageError):
        return "not an image: PIL cannot identify it"
    text = " ".join(str(error).split())[:120]
    if "truncated" in text.lower():
        return f"truncated: {text}"
    if isinstance(error, PermissionError):
        return "not readable: permission denied"
    return f"cannot be decoded: {type(error).__name__}: {text}"


def _decode_into(args: tuple) -> list[tuple[str, str]]:
    """Worker: decode `files` into rows [start, start + len) of the memmap at `path` (None: decode only, to
    verify). Returns (file, problem) for each file that fails, so one pass names every bad file. A fifth
    item, `reader`, gives each file's bytes by name (images that are not files)."""
    path, files, start, shape = args[:4]
    reader = args[4] if len(args) > 4 else None
    out = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape) if path else None
    h, w = shape[1], shape[2]
    bad = []
    for i, f in enumerate(files):
        try:
            with Image.open(io.BytesIO(reader(f)) if reader else f) as img:
                img.draft("RGB", (w, h))  # JPEG DCT-domain downscale when shrinking by 2x or more: much faster
                img = img.convert("RGB")  # decodes every byte: a truncated file fails here
                if out is not None:
                    if img.size != (w, h):
                        img = img.resize((w, h), Image.BILINEAR)
                    out[start + i] = np.asarray(img)
        except Exception as e:  # noqa: BLE001 - any decoder error is this file's problem; report it, go on
            bad.append((f, _problem(f, e, reader is None)))
    if out is not None:
        out.flush()
    return bad


def _run_jobs(jobs: list, workers: int, progress=None) -> list[tuple[str, str]]:
    """Run `_decode_into` over `jobs` (in a thread pool when it pays); return every bad file, in job order."""
    total, done, results = sum(len(j[1]) for j in jobs), 0, {}
    if progress:
        progress(0, total)  # a first line at once: the first chunks take a while on a large dataset
    if workers > 1 and len(jobs) > 1:
        # Threads, never a fork: callers are often multi-threaded (a Ray worker, a driver beside Ray's
        # threads), and a child forked while another thread holds a lock waits for it forever (it hung
        # `make test`). Costs and the pools tried: docs/benchmarks.md, "The decode pool".
        with ThreadPoolExecutor(min(workers, len(jobs)), thread_name_prefix="aal-decode") as pool:
            futures = {pool.submit(_decode_into, job): k for k, job in enumerate(jobs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                done += len(jobs[futures[fut]][1])
                if progress:
                    progress(done, total)
    else:
        for k, job in enumerate(jobs):
            results[k] = _decode_into(job)
            done += len(job[1])
            if progress:
                progress(done, total)
    return [b for k in range(len(jobs)) for b in results[k]]


def verify_images(
    paths: list[str], workers: int | None = None, chunk: int = 256, progress=None, reader=None
) -> list[tuple[str, str]]:
    """Decode every image (at 1/8 scale: every byte is still read) and return (path, problem) for the bad
    ones. `progress(done, total)` is called after each chunk; `reader`: as DatasetIndex.reader."""
    jobs = [(None, paths[i : i + chunk], i, (0, 8, 8, 3), reader) for i in range(0, len(paths), chunk)]
    return _run_jobs(jobs, workers or default_workers(), progress)


def default_workers() -> int:
    return max(1, min(16, len(os.sched_getaffinity(0))))


def _allocate(path: Path, nbytes: int) -> None:
    """Create a split's array file with its disk space reserved now: a full disk then fails here, before any
    decoding, instead of killing a decoder with SIGBUS when it writes a page of a sparse file that has no
    block. Filesystems without fallocate get a sparse file, as before."""
    with open(path, "wb") as f:
        if nbytes:
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                f.truncate(nbytes)


def _build(index: DatasetIndex, image_size: tuple[int, int], dest: Path, workers: int, progress=None) -> None:
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    # images that are not files (index.reader) are named, and read, by their names
    paths = {split: [f if index.reader else str(index.image_path(f)) for f in index.files[split]] for split in SPLITS}
    shapes = {split: (len(paths[split]), image_size[0], image_size[1], 3) for split in SPLITS}
    try:
        try:
            tmp.mkdir(parents=True)
            for split in SPLITS:
                _allocate(tmp / f"{split}.u8", int(np.prod(shapes[split])))
        except OSError as e:
            need = sum(int(np.prod(shape)) for shape in shapes.values())
            size = (
                f"{need / 1e9:.1f} GB"
                if need >= 1e9
                else f"{need / 1e6:.1f} MB"
                if need >= 1e6
                else f"{need / 1e3:.1f} kB"
            )
            raise AalError(
                f"{dest.parent}: cannot write the decode cache ({e.strerror or e}); it needs {size} "
                f"there: free space, or set dataset.cache (or $AAL_SWEEP_CACHE) to another folder"
            ) from None
        meta = {
            "attributes": list(index.attributes),
            "image_size": list(image_size),
            "splits": {},
            "identities": index.identities,
            "excluded": index.excluded,
        }  # reID: the validation identities
        chunk = 512
        # every split's chunks in one pool: one progress count over all images, no pool start per split
        jobs = [
            (str(tmp / f"{split}.u8"), paths[split][i : i + chunk], i, shapes[split], index.reader)
            for split in SPLITS
            for i in range(0, len(paths[split]), chunk)
        ]
        bad = _run_jobs(jobs, workers, progress)
        for split in SPLITS:
            np.save(tmp / f"{split}.labels.npy", index.labels[split])
            meta["splits"][split] = len(paths[split])
        if bad:
            raise BadImagesError(str(index.root), bad, sum(meta["splits"].values()))
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing (after success tmp is gone)


# Problems that only a change of the file fixes; such a change changes the entry's key (each image's size
# and mtime are in it), so a failure made only of these can be remembered for that key.
CONTENT_PROBLEMS = ("zero bytes", "truncated", "not an image", "a folder", "a dangling link")


def _build_once(index: DatasetIndex, image_size: tuple[int, int], dest: Path, workers: int, progress=None) -> None:
    """`_build`, unless a build of this very entry already failed on bad files: that failure is kept in
    KEY.bad.json (no image data) and raised again at once, so every later trial on the node fails in
    milliseconds, naming the same files, instead of decoding the whole dataset again first."""
    record = dest.with_name(dest.name + ".bad.json")
    known = _read_failure(record)
    if known is not None:
        raise known
    try:
        _build(index, image_size, dest, workers, progress)
    except BadImagesError as e:
        if all(problem.startswith(CONTENT_PROBLEMS) for _, problem in e.bad):
            part = record.with_name(f"{dest.name}.bad-{os.getpid()}.part")  # not *.tmp-*: no build folder
            part.write_text(json.dumps({"root": e.root, "bad": e.bad, "total": e.total}))
            os.replace(part, record)
        raise


def _read_failure(record: Path) -> BadImagesError | None:
    try:
        r = json.loads(record.read_text())
        return BadImagesError(r["root"], [(str(p), str(why)) for p, why in r["bad"]], int(r["total"]))
    except (OSError, ValueError, KeyError, TypeError):  # none, or damaged: decode again
        return None


def _remove_dead_builds(cache_dir: Path, key: str) -> None:
    """Delete build folders (KEY.tmp-PID) no live build owns. Called holding KEY's lock, so every build
    folder of KEY is dead; another key's is dead when its lock is free (a killed builder's lock is released
    by the kernel, which a pid test cannot tell apart from a reused pid)."""
    for tmp in cache_dir.glob("*.tmp-*"):
        other = tmp.name.split(".tmp-", 1)[0]
        if other == key:
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        try:
            with FileLock(str(cache_dir / f"{other}.lock"), timeout=0):
                shutil.rmtree(tmp, ignore_errors=True)
        except Timeout:
            pass  # a live build of another entry


def open_decoded(
    source: DatasetSource | str | Path,
    image_size: tuple[int, int],
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress=None,
) -> DecodedDataset:
    """Return the decoded dataset, building the cache entry first if no process has yet (a path: CelebA).

    `progress(done, total)` follows a build (e.g. an aal_sweep.progress.Progress's update, to a terminal);
    by default a build logs plain progress lines naming the node (worker logs)."""
    root = DatasetSource.of(source)  # passed on as `root`: load_index dispatches on it, str() is its folder
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        key = fingerprint(root, tuple(image_size))
    except OSError:
        load_index(root)  # names the missing folder or file in one line
        raise
    dest = cache_dir / key
    if not (dest / "meta.json").is_file():
        index = load_index(root)  # bad annotations fail here, before anything is written
        require_folder(cache_dir, "dataset.cache")
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir / f"{key}.lock")):
            _remove_dead_builds(cache_dir, key)
            if not (dest / "meta.json").is_file():  # another process may have built it while we waited
                n = workers or default_workers()
                log.info("decoding %s at %sx%s into %s (%d workers)", root, *image_size, dest, n)
                started = time.monotonic()
                if progress is None:
                    progress = Progress(f"decode cache on node {socket.gethostname()}", log).update
                _build_once(index, tuple(image_size), dest, n, progress)
                # one line per node and cache entry: concurrent trials of the node waited on the lock above
                log.info(
                    "decode cache built on node %s: %d images in %.1f s into %s",
                    socket.gethostname(),
                    sum(len(index.files[s]) for s in SPLITS),
                    time.monotonic() - started,
                    dest,
                )
    meta = json.loads((dest / "meta.json").read_text())
    images, labels = {}, {}
    for split in SPLITS:
        n = meta["splits"][split]
        shape = (n, image_size[0], image_size[1], 3)
        images[split] = (
            np.memmap(dest / f"{split}.u8", dtype=np.uint8, mode="r", shape=shape)
            if n
            else np.zeros(shape, dtype=np.uint8)
        )
        labels[split] = np.load(dest / f"{split}.labels.npy")
    return DecodedDataset(attributes=tuple(meta["attributes"]), images=images, labels=labels, path=dest)
