"""The CelebA on-disk layout, exactly as distributed.

    ROOT/img_align_celeba/000001.jpg ...
    ROOT/list_attr_celeba.txt      line 1: image count; line 2: attribute names; then "name v1 ... vA" (1 / -1)
    ROOT/list_eval_partition.txt   "name split" with split 0 train / 1 val / 2 test

CRLF or LF line ends and runs of spaces are accepted. Labels become 0/1 here, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aal_sweep.errors import DataError

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = ("train", "val", "test")


def read_attribute_names(path: Path) -> list[str]:
    """The names on line 2 of list_attr_celeba.txt, without reading the rows."""
    with open(path, encoding="utf-8", newline=None) as f:
        f.readline()
        return f.readline().split()


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse list_attr_celeba.txt into (attribute names, image names, labels uint8 [N, A] in {0, 1})."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (the CelebA attribute file; place {ATTR_FILE} in the dataset root)")
    with open(path, encoding="utf-8", newline=None) as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a names line, found {len(lines)} line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}:1: expected the image count, got {lines[0].strip()[:40]!r}") from None
    names = lines[1].split()
    rows = [ln for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise DataError(f"{path}:1: the count line says {count} images but the file has {len(rows)} rows "
                        f"(the file is truncated or edited; restore the original)")
    files: list[str] = []
    labels = np.empty((count, len(names)), dtype=np.int8)
    for i, line in enumerate(rows):
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{i + 3}: expected an image name and {len(names)} values, got {len(parts)} fields")
        files.append(parts[0])
        try:
            labels[i] = [int(v) for v in parts[1:]]
        except (ValueError, OverflowError):
            raise DataError(f"{path}:{i + 3}: values must be 1 or -1, got {' '.join(parts[1:])[:60]!r}") from None
    bad = np.argwhere((labels != 1) & (labels != -1))
    if len(bad):
        r, c = bad[0]
        raise DataError(f"{path}:{r + 3}: value {labels[r, c]} for {names[c]!r}; values must be 1 or -1")
    return names, files, (labels == 1).astype(np.uint8)


def read_partition(path: Path) -> dict[str, int]:
    """Parse list_eval_partition.txt into {image name: 0 | 1 | 2}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (the CelebA split file; place {PARTITION_FILE} in the dataset root)")
    split: dict[str, int] = {}
    with open(path, encoding="utf-8", newline=None) as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{path}:{i}: expected 'image_name 0|1|2', got {line.strip()[:60]!r}")
            split[parts[0]] = int(parts[1])
    return split


@dataclass(frozen=True)
class CelebAIndex:
    """The checked annotations of one dataset folder: per split the image files and 0/1 labels."""

    root: Path
    attributes: tuple[str, ...]
    files: dict[str, list[str]]  # split -> image names
    labels: dict[str, np.ndarray]  # split -> uint8 [N, len(attributes)]

    def image_path(self, name: str) -> Path:
        return self.root / IMAGE_DIR / name


def load_index(root: str | Path, attributes: list[str] | tuple[str, ...] | None = None,
               check_images: bool = True) -> CelebAIndex:
    """Read and cross-check both list files; `attributes` picks and orders a subset by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (pass the dataset root holding {IMAGE_DIR}/ and the list files)")
    names, files, labels = read_attributes(root / ATTR_FILE)
    partition = read_partition(root / PARTITION_FILE)
    if attributes is not None:
        unknown = [a for a in attributes if a not in names]
        if unknown:
            raise DataError(f"{root / ATTR_FILE}: unknown attribute(s) {unknown} (valid: {', '.join(names)})")
        labels = labels[:, [names.index(a) for a in attributes]]
        names = list(attributes)
    no_split = [f for f in files if f not in partition]
    if no_split or len(partition) != len(files):
        extra = len(partition) - (len(files) - len(no_split))
        raise DataError(f"{root / PARTITION_FILE}: disagrees with {ATTR_FILE}: {len(no_split)} attribute row(s) "
                        f"without a split (first: {no_split[:1]}), {extra} split row(s) without attributes "
                        f"(use the two files of one release)")
    if check_images:
        image_dir = root / IMAGE_DIR
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: missing (unpack the aligned images there)")
        present = set(os.listdir(image_dir))
        missing = [f for f in files if f not in present]
        if missing:
            raise DataError(f"{image_dir}: {len(missing)} image(s) listed in {ATTR_FILE} are missing "
                            f"(first: {missing[0]}); unpack the complete image set")
    code = np.array([partition[f] for f in files], dtype=np.int8)
    out_files, out_labels = {}, {}
    for k, split in enumerate(SPLITS):
        idx = np.flatnonzero(code == k)
        out_files[split] = [files[i] for i in idx]
        out_labels[split] = labels[idx]
    return CelebAIndex(root=root, attributes=tuple(names), files=out_files, labels=out_labels)


def describe(index: CelebAIndex) -> dict:
    """Images per split and each attribute's positive rate per split (the `dataset` command's JSON)."""
    return {
        "splits": {s: len(index.files[s]) for s in SPLITS},
        "attributes": {
            a: {s: (float(index.labels[s][:, j].mean()) if len(index.files[s]) else None) for s in SPLITS}
            for j, a in enumerate(index.attributes)
        },
    }
