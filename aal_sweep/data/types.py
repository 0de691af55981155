"""What every dataset format gives the rest of the tool: DatasetSource, DatasetIndex, the splits and their defaults.

No heavy import at module level: the config and the CLI's parser import this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("celeba", "duke", "market", "table", "huggingface")
SPLITS = ("train", "val", "test")
# The reID datasets have no validation split: this share of the training identities becomes one
# (identity-disjoint, seeded). CelebA ignores both: it has an official split. A table without a split
# column carves val (and test, TEST_FRACTION) the same way, by group.
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
SPLIT_SEED = 0
# The table format's defaults (DatasetConfig takes them from here: written once). A label is 1, 0 or
# UNKNOWN after loading; UNKNOWN counts for no loss, accuracy or statistic of its attribute.
UNKNOWN = -1
IMAGE_COLUMN = "image"
MISSING_VALUES = ("",)  # the cells that mean "no label": by default only a blank one
MISSING_POLICIES = ("ignore", "negative", "positive")  # ignore the image for that attribute; U-Zeros; U-Ones
MISSING_POLICY = "ignore"


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is and how to read it: everything that decides its index (and so its cache entry)."""

    root: str | Path
    format: str = "celeba"
    val_fraction: float = VAL_FRACTION
    split_seed: int = SPLIT_SEED
    # the table format only (data/table.py); the other formats ignore them
    labels: str | tuple[tuple[str, str], ...] | None = None  # one file, or (split, file) pairs
    image_column: str = IMAGE_COLUMN
    split_column: str | None = None
    group_column: str | None = None
    group_pattern: str | None = None  # a regex on the image path whose match is the group (a patient id)
    test_fraction: float = TEST_FRACTION
    attributes: tuple[str, ...] | None = None  # the label columns that are attributes (None: all others)
    missing_values: tuple[str, ...] = MISSING_VALUES  # normalised cell texts (data/table.py: cell_token)
    missing_policy: str | tuple[tuple[str, str], ...] = MISSING_POLICY  # one policy, or (attribute, policy)

    def policy(self, attribute: str) -> str:
        """The missing-label policy of `attribute`: ignore, negative or positive."""
        if isinstance(self.missing_policy, str):
            return self.missing_policy
        return dict(self.missing_policy).get(attribute, MISSING_POLICY)

    @classmethod
    def of(cls, source: DatasetSource | str | Path) -> DatasetSource:
        """A bare path means a CelebA folder, as before the other formats existed."""
        return source if isinstance(source, DatasetSource) else cls(Path(source))

    @property
    def path(self) -> Path:
        return Path(self.root)

    def __str__(self) -> str:  # messages and logs name the folder
        return str(self.root)


@dataclass(frozen=True)
class DatasetIndex:
    """The checked annotations of one dataset folder: per split the image files and 0/1 labels (the table
    format: int8, UNKNOWN where an image has no label for an attribute).

    `files` are relative to `root / image_dir`. `identities` (reID formats) lists each split's identities, so
    the validation identities are on record; `excluded` maps an identity left out to the reason.
    """

    root: Path
    attributes: tuple[str, ...]
    files: dict[str, list[str]]  # split -> image names
    labels: dict[str, np.ndarray]  # split -> uint8 (table: int8, UNKNOWN = -1) [N, len(attributes)]
    image_dir: str = ""
    identities: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    # name -> the image file's bytes, for images that are not files (the huggingface format's Arrow cells);
    # None: `image_path(name)` is the file
    reader: Callable[[str], bytes] | None = field(default=None, compare=False, repr=False)

    def image_path(self, name: str) -> Path:
        return self.root / self.image_dir / name


def by_split(files: list, labels: np.ndarray, split_of: np.ndarray, empty: Callable[[str], str]) -> tuple[dict, dict]:
    """({split: files}, {split: labels}) of the rows whose `split_of` is that split's name, in SPLITS order.
    An empty split raises DataError(empty(split)): an empty val or test split would be stored as accuracy
    0.0, silently wrong."""
    import numpy as np

    from aal_sweep.errors import DataError

    out_files, out_labels = {}, {}
    for s in SPLITS:
        idx = np.flatnonzero(split_of == s)
        if not len(idx):
            raise DataError(empty(s))
        out_files[s], out_labels[s] = [files[i] for i in idx], labels[idx]
    return out_files, out_labels


def unlabelled(labels: dict, names) -> tuple[str, str] | None:
    """The first (split, attribute) with no labelled image (every label unknown, -1), or None."""
    for s in SPLITS:
        for j, a in enumerate(names):
            if not (labels[s][:, j] >= 0).any():
                return s, a
    return None


def default_cache_dir() -> Path:
    """The decode cache's folder when dataset.cache is not set: $AAL_SWEEP_CACHE, else ~/.cache/aal_sweep."""
    return Path(os.environ.get("AAL_SWEEP_CACHE", Path.home() / ".cache" / "aal_sweep"))


def labelled(index: DatasetIndex) -> dict[str, dict[str, int]]:
    """{attribute: {split: images labelled for it}}."""
    return {a: {s: int((index.labels[s][:, j] >= 0).sum()) for s in SPLITS} for j, a in enumerate(index.attributes)}


def label_notes(index: DatasetIndex) -> list[str]:
    """One line per attribute and split with no positive (or no labelled) image: its accuracy there can only
    be the majority rate, and no statistic of it can tell a learned model from a constant one."""
    notes = []
    for j, a in enumerate(index.attributes):
        for s in SPLITS:
            y = index.labels[s][:, j]
            known = y[y >= 0]
            if not len(known):
                notes.append(f"{a}: no labelled image in {s}")
            elif not known.any():
                notes.append(f"{a}: no positive image in {s} ({len(known)} labelled, all negative)")
    return notes


def describe(index: DatasetIndex) -> dict:
    """Images per split and each attribute's positive rate per split (the `dataset` command's JSON); with
    unknown labels (table format) also each attribute's labelled count per split, the rate among them."""
    has_unknown = any((index.labels[s] < 0).any() for s in SPLITS if index.labels[s].dtype.kind == "i")

    def rate(y: np.ndarray) -> float | None:
        known = y[y >= 0] if has_unknown else y
        return float(known.mean()) if len(known) else None

    info = {
        "splits": {s: len(index.files[s]) for s in SPLITS},
        "attributes": {a: {s: rate(index.labels[s][:, j]) for s in SPLITS} for j, a in enumerate(index.attributes)},
    }
    if has_unknown:
        info["labelled"] = labelled(index)
    notes = label_notes(index)
    if notes:
        info["notes"] = notes
    if index.identities:
        info["identities"] = {s: len(index.identities[s]) for s in SPLITS}
        info["val_identities"] = list(index.identities["val"])
        info["excluded"] = dict(index.excluded)
    return info
