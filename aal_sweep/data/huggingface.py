"""A Hugging Face dataset (`dataset.format: huggingface`): a folder written by `save_to_disk`, or a Hub id
already in the local cache (nothing is downloaded: the Hub is never asked).

    ds = datasets.DatasetDict({"train": ..., "test": ...}); ds.save_to_disk("/data/mine")   # root: /data/mine

An image column (`image_column`, a `datasets.Image` feature) and the attributes: every column of 0/1, bool
or 1/-1 values is one, and a multi-label column (a sequence of `ClassLabel`s) is expanded into one attribute
per class name (the image has the attribute when the class is in its list). `attributes` picks and orders
them by name. The dataset's own splits are used (train; validation or val; test); a split it lacks is carved
from train as the table format carves it (data/table.py: `val_fraction`, `test_fraction`, `split_seed`,
`group_column`), and missing labels (a null cell) follow `dataset.missing` as there. The images stay in the
dataset's Arrow files: the decode cache reads each one's bytes through the index's `reader`.

`datasets` is an optional extra: pip install 'aal_sweep[hf]'.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from aal_sweep.data.table import _carve, _labels
from aal_sweep.data.types import DatasetIndex, DatasetSource, by_split, label_notes, unlabelled
from aal_sweep.errors import DataError

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "valid": "val", "test": "test"}
INSTALL = "pip install 'aal_sweep[hf]' (or pip install datasets)"


def _datasets():
    # Offline before the first import: a Hub id is read from the local cache only, never downloaded.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise DataError(f"dataset.format huggingface needs the datasets package: {INSTALL}") from None
    datasets.disable_progress_bars()
    return datasets


def open_splits(source: DatasetSource) -> dict[str, object]:
    """{the dataset's split name: datasets.Dataset}, from a save_to_disk folder or the local Hub cache."""
    datasets = _datasets()
    root = Path(str(source.root)).expanduser()
    if root.exists():
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as e:  # datasets raises several types for a folder it did not write
            text = " ".join(str(e).split())[:160]
            raise DataError(
                f"{root}: not a dataset written by datasets' save_to_disk ({type(e).__name__}: {text})"
            ) from None
    else:
        try:
            loaded = _offline_load(datasets, str(source.root))
        except Exception as e:
            raise DataError(
                f"dataset.root: {source.root!r} is neither a folder nor a Hub dataset in the local cache "
                f"({datasets.config.HF_DATASETS_CACHE}; {type(e).__name__}); nothing is downloaded at run "
                f'time: on a machine with internet run python -c "import datasets; '
                f"datasets.load_dataset('{source.root}').save_to_disk('DIR')\" and set dataset.root to DIR"
            ) from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:
        raise DataError(
            f"{source.root}: split(s) {unknown} are not train, validation (val) or test; save those three "
            f"(or train alone, to carve val and test)"
        )
    if "train" not in splits:
        raise DataError(f"{source.root}: no train split (splits: {', '.join(splits)})")
    return splits


def _offline_load(datasets, hub_id: str):
    """datasets.load_dataset(hub_id) from the local cache only: offline mode on for the call (set here too,
    not only by the environment: another library may have imported huggingface_hub before us)."""
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    hub.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        return datasets.load_dataset(hub_id)
    finally:
        hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = before


def _columns(dataset, source: DatasetSource) -> dict[str, tuple[str, int | None]]:
    """{attribute: (column, class index or None)}: value columns as they are, multi-label columns by class."""
    datasets = _datasets()
    out: dict[str, tuple[str, int | None]] = {}
    for name, feature in dataset.features.items():
        if name in (source.image_column, source.group_column):
            continue
        inner = getattr(feature, "feature", None)
        if isinstance(inner, datasets.ClassLabel):  # a sequence of class labels: one attribute per class
            for k, cls in enumerate(inner.names):
                out[cls] = (name, k)
        elif isinstance(feature, datasets.Value) and (feature.dtype == "bool" or "int" in feature.dtype):
            out[name] = (name, None)
    return out


def load(source: DatasetSource, attributes=None, check_images: bool = True) -> DatasetIndex:
    """The index of a Hugging Face dataset; its images are read through the returned index's `reader`."""
    datasets = _datasets()
    splits = open_splits(source)
    first = splits["train"]
    if source.image_column not in first.features or not isinstance(first.features[source.image_column], datasets.Image):
        images = [n for n, f in first.features.items() if isinstance(f, datasets.Image)]
        raise DataError(
            f"{source.root}: no image column {source.image_column!r} (dataset.image_column; image columns: "
            f"{', '.join(images) or 'none'})"
        )
    available = _columns(first, source)
    names = list(attributes) if attributes is not None else list(source.attributes or available)
    unknown = [a for a in names if a not in available]
    if unknown:
        raise DataError(
            f"{source.root}: no attribute {unknown[0]!r} (dataset.attributes; a 0/1, bool or 1/-1 column, or a "
            f"class of a multi-label column: {', '.join(available)})"
        )
    missing = set(source.missing_values)
    raw = {s: ds.cast_column(source.image_column, datasets.Image(decode=False)) for s, ds in splits.items()}
    files, labels, groups = {}, {}, {}
    for split, ds in raw.items():
        if any(c not in ds.column_names for c, _ in available.values()):
            raise DataError(f"{source.root}: split {split!r} lacks columns of train; save every split alike")
        table = ds.remove_columns([source.image_column]).to_pandas()
        columns = []
        for a in names:
            column, k = available[a]
            if k is None:
                columns.append(_labels(Path(f"{source.root}[{split}]"), table[column], a, missing, source.policy(a)))
            else:  # the class is in the image's list: 1; a null list: unknown
                col = table[column].map(lambda v, k=k: None if v is None else int(k in list(v)))
                columns.append(_labels(Path(f"{source.root}[{split}]"), col, a, missing, source.policy(a)))
        labels[split] = np.stack(columns, axis=1).astype(np.int8).reshape(len(table), len(names))
        files[split] = [f"{split}/{i}" for i in range(len(table))]
        groups[split] = (
            np.array([str(v) for v in table[source.group_column]], dtype=object)
            if source.group_column
            else np.array(files[split], dtype=object)
        )
    raw_of = np.array([split for split in raw for _ in files[split]], dtype=object)
    split_of = np.array([SPLIT_NAMES[split] for split in raw_of], dtype=object)
    present = set(split_of.tolist())
    carve = {
        s: share for s, share in (("val", source.val_fraction), ("test", source.test_fraction)) if s not in present
    }
    if carve and "train" in groups:  # the dataset's own train split gives the missing ones, by group
        split_of[raw_of == "train"] = _carve(groups["train"], carve, source.split_seed, str(source.root))
    out_files, index_labels = by_split(
        [f for split in raw for f in files[split]],
        np.concatenate([labels[split] for split in raw]) if raw else np.zeros((0, len(names)), np.int8),
        split_of,
        lambda s: f"{source.root}: the {s} split has no image; training and measuring need all three",
    )
    gap = unlabelled(index_labels, names)
    if gap:
        raise DataError(
            f"{source.root}: attribute {gap[1]!r} has no labelled image in {gap[0]}; leave it out of dataset.attributes"
        )
    reader = _Reader(raw, source.image_column)
    index = DatasetIndex(
        root=Path(str(source.root)),
        attributes=tuple(names),
        files=out_files,
        labels=index_labels,
        reader=reader,
    )
    for note in label_notes(index):
        log.warning("%s: %s", source.root, note)
    return index


class _Reader:
    """name "split/row" -> the image's encoded bytes (or its file's, when the dataset stores a path)."""

    def __init__(self, splits: dict, column: str):
        self.splits, self.column = splits, column

    def __call__(self, name: str) -> bytes:
        split, row = name.rsplit("/", 1)
        cell = self.splits[split][int(row)][self.column]
        if cell.get("bytes") is not None:
            return cell["bytes"]
        return Path(cell["path"]).read_bytes()


# ---- the hooks aal_sweep.data.index dispatches to --------------------------------------------------


def load_source(source: DatasetSource, attributes, check_images: bool) -> DatasetIndex:
    return load(source, attributes, check_images)


def source_attribute_names(source: DatasetSource) -> list[str]:
    if source.attributes is not None:
        return list(source.attributes)
    return list(_columns(open_splits(source)["train"], source))


def fingerprint_inputs(source: DatasetSource) -> tuple[list[Path], list[Path], str]:
    """The split folders' files (each Arrow file's name, size and mtime) and every setting; for a Hub id,
    the cached dataset's own fingerprints."""
    from aal_sweep.data.table import settings

    root = Path(str(source.root)).expanduser()
    text = "huggingface " + settings(source, source_attribute_names(source))
    if root.is_dir():
        files = sorted(root.rglob("*.json"))
        return files, sorted({p.parent for p in root.rglob("*.arrow")}), text
    fingerprints = {s: getattr(ds, "_fingerprint", "") for s, ds in open_splits(source).items()}
    return [], [], f"{text} hub={source.root} {fingerprints}"
