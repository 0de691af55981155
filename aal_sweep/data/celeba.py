"""The CelebA on-disk layout, exactly as distributed.

    ROOT/img_align_celeba/000001.jpg ...
    ROOT/list_attr_celeba.txt      line 1: image count; line 2: attribute names; then "name v1 ... vA" (1 / -1)
    ROOT/list_eval_partition.txt   "name split" with split 0 train / 1 val / 2 test

CRLF or LF line ends and runs of spaces are accepted. Labels become 0/1 here, once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aal_sweep.data.types import SPLITS, DatasetIndex, DatasetSource, by_split
from aal_sweep.errors import DataError

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"


def _text(path: Path, data: bytes) -> list[str]:
    """`data` as lines of UTF-8 text (CRLF, LF or CR ends; a leading byte-order mark is dropped); a byte
    that is not UTF-8 names its line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = 1 + data.count(b"\n", 0, e.start)
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); image names and attribute "
            f"names must be UTF-8 (re-encode the file or rename the images)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _check_names(path: Path, names: list[str]) -> list[str]:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"{path}:2: attribute name(s) {dupes} appear more than once on the names line "
            f"(each attribute needs its own name; restore the original file)"
        )
    return names


def read_attribute_names(path: Path) -> list[str]:
    """The names on line 2 of list_attr_celeba.txt, without reading the rows."""
    with open(path, "rb") as f:
        head = f.readline() + f.readline()
    lines = _text(path, head)
    return _check_names(path, lines[1].split() if len(lines) > 1 else [])


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse list_attr_celeba.txt into (attribute names, image names, labels uint8 [N, A] in {0, 1})."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (the CelebA attribute file; place {ATTR_FILE} in the dataset root)")
    lines = _text(path, path.read_bytes())
    if lines and not lines[-1]:
        lines.pop()  # the last line's end
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a names line, found {len(lines)} line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}:1: expected the image count, got {lines[0].strip()[:40]!r}") from None
    names = _check_names(path, lines[1].split())
    rows = [(k + 1, ln) for k, ln in enumerate(lines) if k >= 2 and ln.strip()]  # (line number, text)
    if len(rows) != count:
        raise DataError(
            f"{path}:1: the count line says {count} images but the file has {len(rows)} rows "
            f"(the file is truncated or edited; restore the original)"
        )
    files: list[str] = []
    first_line: dict[str, int] = {}
    labels = np.empty((count, len(names)), dtype=np.int8)
    for i, (n, line) in enumerate(rows):
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{n}: expected an image name and {len(names)} values, got {len(parts)} fields")
        if parts[0] in first_line:
            raise DataError(_twice(path, n, parts[0], first_line[parts[0]]))
        first_line[parts[0]] = n
        files.append(parts[0])
        try:
            labels[i] = [int(v) for v in parts[1:]]
        except (ValueError, OverflowError):
            raise DataError(f"{path}:{n}: values must be 1 or -1, got {' '.join(parts[1:])[:60]!r}") from None
    bad = np.argwhere((labels != 1) & (labels != -1))
    if len(bad):
        r, c = bad[0]
        raise DataError(f"{path}:{rows[r][0]}: value {labels[r, c]} for {names[c]!r}; values must be 1 or -1")
    return names, files, (labels == 1).astype(np.uint8)


def read_partition(path: Path) -> dict[str, int]:
    """Parse list_eval_partition.txt into {image name: 0 | 1 | 2}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (the CelebA split file; place {PARTITION_FILE} in the dataset root)")
    split: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for i, line in enumerate(_text(path, path.read_bytes()), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{i}: expected 'image_name 0|1|2', got {line.strip()[:60]!r}")
        if parts[0] in first_line:
            raise DataError(_twice(path, i, parts[0], first_line[parts[0]]))
        first_line[parts[0]] = i
        split[parts[0]] = int(parts[1])
    return split


def _twice(path: Path, line: int, name: str, first: int) -> str:
    return (
        f"{path}:{line}: image {name} is listed twice (first on line {first}); "
        f"each image must have one row (restore the original file)"
    )


def load_index(
    root: str | Path, attributes: list[str] | tuple[str, ...] | None = None, check_images: bool = True
) -> DatasetIndex:
    """Read and cross-check both list files; `attributes` picks and orders a subset by name."""
    root = Path(root)
    if root.is_file():
        raise DataError(
            f"{root}: is a file; expected the dataset folder holding {IMAGE_DIR}/ and the list files "
            f"(a sweep YAML goes to `aal-sweep run` or `plan`)"
        )
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
        raise DataError(
            f"{root / PARTITION_FILE}: disagrees with {ATTR_FILE}: {len(no_split)} attribute row(s) "
            f"without a split (first: {no_split[:1]}), {extra} split row(s) without attributes "
            f"(use the two files of one release)"
        )
    if check_images:
        image_dir = root / IMAGE_DIR
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: missing (unpack the aligned images there)")
        present = set(os.listdir(image_dir))
        missing = [f for f in files if f not in present]
        if missing:
            raise DataError(
                f"{image_dir}: {len(missing)} image(s) listed in {ATTR_FILE} are missing "
                f"(first: {missing[0]}); unpack the complete image set"
            )
    split_of = np.array(SPLITS)[np.array([partition[f] for f in files], dtype=np.int8)]
    out_files, out_labels = by_split(
        files,
        labels,
        split_of,
        lambda s: (
            f"{root / PARTITION_FILE}: the {s} split is empty (no image has split {SPLITS.index(s)}); "
            f"training and measuring need images in train, val and test (use the official file)"
        ),
    )
    return DatasetIndex(root=root, attributes=tuple(names), files=out_files, labels=out_labels, image_dir=IMAGE_DIR)


# ---- writing the layout (synthetic.py, mnist.py) ----------------------------------------------------


def split_codes(n: int, splits: tuple[float, float]) -> np.ndarray:
    """The partition column for `n` images in file order: the first share `splits[0]` train (0), the next
    `splits[1]` val (1), the rest test (2)."""
    n_train = int(round(n * splits[0]))
    n_val = int(round(n * splits[1]))
    code = np.zeros(n, dtype=int)
    code[n_train : n_train + n_val] = 1
    code[n_train + n_val :] = 2
    return code


def write_lists(root: Path, names: list[str], files: list[str], labels: np.ndarray, partition: np.ndarray) -> None:
    """Write both list files for `files` (images already under root/IMAGE_DIR): `labels` [N, A] truthy = 1,
    else -1; `partition` [N] in 0 / 1 / 2. CRLF line ends, like the official files."""
    signed = np.where(np.asarray(labels).astype(bool), 1, -1)
    with open(root / ATTR_FILE, "w", newline="\r\n") as f:
        f.write(f"{len(files)}\n{' '.join(names)} \n")
        for name, row in zip(files, signed):
            f.write(name + " " + " ".join(f"{v:2d}" for v in row) + "\n")
    with open(root / PARTITION_FILE, "w", newline="\r\n") as f:
        for name, p in zip(files, partition):
            f.write(f"{name} {p}\n")


# ---- the hooks aal_sweep.data.index dispatches to --------------------------------------------------


def load_source(source: DatasetSource, attributes, check_images: bool) -> DatasetIndex:
    return load_index(source.path, attributes, check_images)


def source_attribute_names(source: DatasetSource) -> list[str]:
    path = source.path / ATTR_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing (the CelebA attribute file; place {ATTR_FILE} in the dataset root)")
    return read_attribute_names(path)


def fingerprint_inputs(source: DatasetSource) -> tuple[list[Path], list[Path], str]:
    root = source.path
    return [root / ATTR_FILE, root / PARTITION_FILE], [root / IMAGE_DIR], ""
