"""Your own attributes: a CSV or Parquet table of labels beside a folder of images (`dataset.format: table`).

    ROOT/labels.csv       image,split,Smiling,Male,...      (dataset.labels; .csv or .parquet)
    ROOT/images/0001.jpg ...                                 (the image column's paths, relative to ROOT)

One row per image. Columns: the image path (`image_column`), binary attributes (1/0, 1/-1 or true/false;
`attributes` picks and orders them, by default every column but the image, split and group columns), and
optionally a split (`split_column`: train / val / test or 0 / 1 / 2) and a group (`group_column`, or
`group_pattern`: a regex whose match in the image path is the group, e.g. CheXpert's `patient[0-9]+`).
`labels` may also map splits to files (`{train: train.csv, test: valid.csv}`): each file's images are that
split. A split no file and no split column gives is carved from the training images by a seeded draw of
whole groups (`val_fraction`, `test_fraction`, `split_seed`; each image its own group when none is named),
so a patient stays inside one split.

Missing labels: a cell whose value is in `missing_values` (by default only a blank cell; CheXpert adds -1,
"uncertain") is unknown, and the attribute's policy decides: `ignore` keeps it UNKNOWN (-1: the image then
counts for no loss, accuracy or statistic of that attribute), `negative` makes it 0 (U-Zeros), `positive`
1 (U-Ones). Labels become int8 in {UNKNOWN, 0, 1} here, once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from aal_sweep.data.types import UNKNOWN, DatasetIndex, DatasetSource, by_split, label_notes, unlabelled
from aal_sweep.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet", ".pq")
SPLIT_CODES = {"train": "train", "val": "val", "test": "test", "0": "train", "1": "val", "2": "test"}
POSITIVE, NEGATIVE = ("1", "true"), ("0", "false", "-1")
POLICY_LABEL = {"ignore": UNKNOWN, "negative": 0, "positive": 1}


def cell_token(value) -> str:
    """A cell (or a dataset.missing value) as one comparable text: "" for a blank or null cell, a number in
    its shortest integer form ("1.0" and 1 are "1"), true / false for booleans, other text lower-cased."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    if number != number:  # "nan" written as text: a blank
        return ""
    return str(int(number)) if number.is_integer() else repr(number)


# ---- reading the label files ---------------------------------------------------------------------


def label_files(source: DatasetSource) -> list[tuple[str | None, Path]]:
    """[(split or None, path)]: the label file(s), relative to the dataset root unless absolute."""
    if source.labels is None:
        raise DataError(
            "dataset.labels: missing (the table format reads a CSV or Parquet file of labels: set "
            "dataset.labels to its path, relative to dataset.root; check it with aal-sweep dataset --config)"
        )
    pairs = [(None, source.labels)] if isinstance(source.labels, (str, Path)) else list(source.labels)
    return [(split, source.path / Path(f).expanduser()) for split, f in pairs]


def read_table(path: Path, columns: list[str] | None = None, header: bool = False):
    """The label file as a pandas DataFrame (a CSV's cells as text, blanks as ""); DataError, one line.
    `columns`: only those (the others are not parsed); `header`: no row, only the column names."""
    import pandas as pd

    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: not a .csv or .parquet file (dataset.labels takes a CSV or Parquet table)")
    if not path.is_file():
        raise DataError(f"{path}: missing (the label table dataset.labels names; place it there or fix the path)")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                usecols=columns,
                nrows=0 if header else None,
            )
        if header:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)  # less the index pandas stored beside the columns, as read_parquet does
            index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
            return pd.DataFrame(columns=[n for n in schema.names if n not in index])
        return pd.read_parquet(path, columns=columns)
    except Exception as e:  # pandas and pyarrow raise many types for a damaged or empty file
        text = " ".join(str(e).split())[:160]
        raise DataError(f"{path}: not a readable table ({type(e).__name__}: {text}); write it again") from None


def _columns_needed(source: DatasetSource) -> list[str]:
    return [c for c in (source.image_column, source.split_column, source.group_column) if c]


def _attributes_of(source: DatasetSource, columns: list[str]) -> list[str]:
    special = set(_columns_needed(source))
    return [str(c) for c in columns if c not in special]


def _check_columns(path: Path, columns: list[str], source: DatasetSource, attributes) -> None:
    for key, name in (("image_column", source.image_column), ("split_column", source.split_column)):
        if name and name not in columns:
            raise DataError(f"{path}: no column {name!r} (dataset.{key}; columns: {', '.join(map(str, columns))})")
    if source.group_column and source.group_column not in columns:
        raise DataError(
            f"{path}: no column {source.group_column!r} (dataset.group_column; columns: {', '.join(map(str, columns))})"
        )
    unknown = [a for a in attributes if a not in columns]
    if unknown:
        raise DataError(
            f"{path}: no column {unknown[0]!r} for attribute(s) {unknown} (dataset.attributes; columns: "
            f"{', '.join(map(str, columns))})"
        )


def _where(path: Path, row: int) -> str:
    """A row as its file's line (CSV: the header is line 1) or its row number (Parquet)."""
    return f"{path}:{row + 2}" if path.suffix.lower() == ".csv" else f"{path} row {row}"


def _labels(path: Path, column, name: str, missing: set[str], policy: str) -> np.ndarray:
    """One attribute column as int8 in {UNKNOWN, 0, 1}: missing values by `policy`, the rest binary."""
    import pandas as pd

    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    tokens = [cell_token(u) for u in uniques] + [""]  # code -1 (a null cell) is the last entry
    known = {t for t in tokens[:-1] if t not in missing}
    if "-1" in known and known & {"0", "false"}:
        raise DataError(
            f"{path}: column {name!r} holds 1, 0 and -1; a binary attribute is 1/0 or 1/-1 (list -1 in "
            f"dataset.missing.values if it means unknown, as CheXpert's uncertain)"
        )
    lookup = np.empty(len(tokens), dtype=np.int8)
    for k, t in enumerate(tokens):
        if t in missing:
            lookup[k] = POLICY_LABEL[policy]
        elif t in POSITIVE:
            lookup[k] = 1
        elif t in NEGATIVE:
            lookup[k] = 0
        else:
            row = int(np.flatnonzero(codes == (k if k < len(tokens) - 1 else -1))[0])
            shown = "a blank cell" if t == "" else repr(str(uniques[k]) if k < len(uniques) else t)
            raise DataError(
                f"{_where(path, row)}: {shown} in column {name!r} is not binary (1/0, 1/-1 or true/false); "
                f"list it in dataset.missing.values if it means unknown"
            )
    return lookup[codes]


def _groups(source: DatasetSource, images: list[str], frame) -> np.ndarray:
    if source.group_column:
        return np.array([cell_token(v) for v in frame[source.group_column]], dtype=object)
    if source.group_pattern:
        pattern = re.compile(source.group_pattern)
        out = []
        for name in images:
            m = pattern.search(name)
            if m is None:
                raise DataError(
                    f"dataset.group_pattern: {source.group_pattern!r} does not match the image path {name!r} "
                    f"(the group, e.g. a patient id, must be found in every path)"
                )
            out.append(m.group(0))
        return np.array(out, dtype=object)
    return np.array(images, dtype=object)  # each image its own group


def _carve(groups: np.ndarray, wanted: dict[str, float], seed: int, where: str) -> np.ndarray:
    """Split names per row: whole groups (sorted, then permuted by `seed`) go to each wanted split in turn,
    `wanted[split]` of them (rounded, at least one); the rest stay train."""
    distinct = sorted(set(groups.tolist()))
    perm = np.random.default_rng(seed).permutation(len(distinct))
    counts = {s: max(1, round(share * len(distinct))) for s, share in wanted.items()}
    if sum(counts.values()) >= len(distinct):
        raise DataError(
            f"{where}: {len(distinct)} group(s) (images, or groups of dataset.group_column / group_pattern) are "
            f"too few to carve {' and '.join(wanted)} ({', '.join(f'{s} {n}' for s, n in counts.items())}) and "
            f"keep some to train on (lower dataset.val_fraction / test_fraction, or add a split column)"
        )
    assigned, start = {}, 0
    for s, n in counts.items():
        for k in perm[start : start + n]:
            assigned[distinct[k]] = s
        start += n
    return np.array([assigned.get(g, "train") for g in groups.tolist()], dtype=object)


def load(source: DatasetSource, attributes=None, check_images: bool = True) -> DatasetIndex:
    """The per-image index of a label table (or one table per split)."""
    root = source.path
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (dataset.root: the folder the image paths are relative to)")
    files = label_files(source)
    names = list(attributes) if attributes is not None else source.attributes
    frames, file_split = [], []
    for split, path in files:
        frame = read_table(path)
        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        want = names if names is not None else _attributes_of(source, columns)
        _check_columns(path, columns, source, want)
        if names is None:
            names = want
        frames.append((path, frame))
        file_split.append(split)
    if len(names) < 1:
        raise DataError(f"{files[0][1]}: no attribute column beside {', '.join(_columns_needed(source))}")
    missing = set(source.missing_values)
    images: list[str] = []
    labels, splits, groups = [], [], []
    for (path, frame), split in zip(frames, file_split):
        paths = [cell_token(v) and str(v).strip() for v in frame[source.image_column]]
        blank = [i for i, p in enumerate(paths) if not p]
        if blank:
            raise DataError(f"{_where(path, blank[0])}: blank image path in column {source.image_column!r}")
        images += paths
        labels.append(
            np.stack([_labels(path, frame[a], a, missing, source.policy(a)) for a in names], axis=1).reshape(
                len(frame), len(names)
            )
        )
        if split is not None:
            splits.append(np.full(len(frame), split, dtype=object))
        elif source.split_column:
            tokens = [cell_token(v) for v in frame[source.split_column]]
            bad = [i for i, t in enumerate(tokens) if t not in SPLIT_CODES]
            if bad:
                raise DataError(
                    f"{_where(path, bad[0])}: split {str(frame[source.split_column].iloc[bad[0]])!r} in column "
                    f"{source.split_column!r} is not train, val, test, 0, 1 or 2"
                )
            splits.append(np.array([SPLIT_CODES[t] for t in tokens], dtype=object))
        else:
            splits.append(np.full(len(frame), None, dtype=object))
        groups.append(_groups(source, paths, frame))
    seen: dict[str, int] = {}
    for i, name in enumerate(images):
        if name in seen:
            raise DataError(f"{files[0][1]}: image {name!r} is listed twice; each image needs one row")
        seen[name] = i
    label = np.concatenate(labels) if labels else np.zeros((0, len(names)), np.int8)
    split_of = np.concatenate(splits)
    group = np.concatenate(groups)
    # A split column (or a file per split) is taken as it is; what neither gives is carved from train.
    carve = {
        s: share
        for s, share in (("val", source.val_fraction), ("test", source.test_fraction))
        if not source.split_column and s not in file_split
    }
    pool = np.flatnonzero(np.array([s is None or s == "train" for s in split_of.tolist()], dtype=bool))
    if carve:
        split_of[pool] = _carve(group[pool], carve, source.split_seed, str(files[0][1]))
    else:
        split_of[pool] = "train"
    if check_images:
        absent = [n for n in images if not (root / n).is_file()]
        if absent:
            raise DataError(
                f"{root / absent[0]}: no such image ({len(absent)} of the {len(images)} image paths in "
                f"{source.image_column!r} do not exist under {root}); fix dataset.root or the paths"
            )
    out_files, out_labels = by_split(
        images,
        label,
        split_of,
        lambda s: (
            f"{files[0][1]}: the {s} split has no image; training and measuring need images in train, val "
            f"and test (fix the split column, or drop it to carve val and test)"
        ),
    )
    gap = unlabelled(out_labels, names)
    if gap:
        raise DataError(
            f"{files[0][1]}: attribute {gap[1]!r} has no labelled image in {gap[0]} (every one is "
            f"{'blank' if missing == {''} else 'in dataset.missing.values'}); leave it out of "
            f"dataset.attributes or set its dataset.missing.policy"
        )
    index = DatasetIndex(root=root, attributes=tuple(names), files=out_files, labels=out_labels, image_dir="")
    for note in label_notes(index):
        log.warning("%s: %s", files[0][1], note)
    return index


# ---- the hooks aal_sweep.data.index dispatches to --------------------------------------------------


def load_source(source: DatasetSource, attributes, check_images: bool) -> DatasetIndex:
    return load(source, attributes, check_images)


def source_attribute_names(source: DatasetSource) -> list[str]:
    """The attributes: dataset.attributes, else every column of the (first) file but the special ones."""
    if source.attributes is not None:
        return list(source.attributes)
    _, path = label_files(source)[0]
    columns = [str(c) for c in read_table(path, header=True).columns]
    _check_columns(path, columns, source, [])
    return _attributes_of(source, columns)


def settings(source: DatasetSource, attributes: list[str] | None = None) -> str:
    """Every table setting that changes the index (so the decode cache's key);
    `attributes`: the resolved list (so a listed dataset.attributes equal to the default is the same entry)."""
    attributes = attributes if attributes is not None else source.attributes
    return (
        f"table image_column={source.image_column} split_column={source.split_column} "
        f"group_column={source.group_column} group_pattern={source.group_pattern} "
        f"val_fraction={source.val_fraction} test_fraction={source.test_fraction} split_seed={source.split_seed} "
        f"attributes={list(attributes) if attributes is not None else None} "
        f"missing_values={list(source.missing_values)} missing_policy={source.missing_policy}"
    )


def fingerprint_inputs(source: DatasetSource) -> tuple[list[Path], list[Path], str]:
    """The label files, and the folders of the images they name (so an edited image changes the key)."""
    files = [path for _, path in label_files(source)]
    if not all(p.is_file() for p in files):
        return files, [], settings(source)  # the cache names the missing file
    folders: set[Path] = set()
    attributes = None
    for path in files:  # the header and the image column only: the labels are the index's to parse
        columns = [str(c) for c in read_table(path, header=True).columns]
        _check_columns(path, columns, source, [])
        attributes = attributes or (list(source.attributes) if source.attributes else _attributes_of(source, columns))
        images = read_table(path, columns=[source.image_column])[source.image_column]
        folders |= {(source.path / str(v).strip()).parent for v in images}
    return files, sorted(folders), settings(source, attributes)
