"""What every dataset format gives the rest of the tool: a checked index of image files and 0/1 labels per split.

    source = DatasetSource("/data/DukeMTMC-reID", format="duke")
    index = load_index(source, ["backpack", "gender"])   # DataError (one line) on bad input
    index.files["val"][0], index.labels["val"][0], index.image_path(index.files["val"][0])

A format module (celeba.py, reid.py) reads its on-disk layout into a DatasetIndex; `load_index`,
`attribute_names` and `fingerprint_inputs` dispatch on `source.format`, so the decode cache and the CLI work
for every format without knowing any. No heavy import at module level: the config imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("celeba", "duke", "market")
SPLITS = ("train", "val", "test")
# The reID datasets have no validation split: this share of the training identities becomes one
# (identity-disjoint, seeded). CelebA ignores both: it has an official split.
VAL_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is and how to read it: everything that decides its index (and so its cache entry)."""

    root: str | Path
    format: str = "celeba"
    val_fraction: float = VAL_FRACTION
    split_seed: int = SPLIT_SEED

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
    """The checked annotations of one dataset folder: per split the image files and 0/1 labels.

    `files` are relative to `root / image_dir`. `identities` (reID formats) lists each split's identities, so
    the validation identities are on record; `excluded` maps an identity left out to the reason.
    """

    root: Path
    attributes: tuple[str, ...]
    files: dict[str, list[str]]  # split -> image names
    labels: dict[str, np.ndarray]  # split -> uint8 [N, len(attributes)]
    image_dir: str = ""
    identities: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def image_path(self, name: str) -> Path:
        return self.root / self.image_dir / name


def _module(fmt: str):
    from aal_sweep.errors import DataError

    if fmt == "celeba":
        from aal_sweep.data import celeba
        return celeba
    if fmt in ("duke", "market"):
        from aal_sweep.data import reid
        return reid
    raise DataError(f"dataset format {fmt!r} is not one of {', '.join(FORMATS)}")


def load_index(source: DatasetSource | str | Path, attributes: list[str] | tuple[str, ...] | None = None,
               check_images: bool = True) -> DatasetIndex:
    """Read and check a dataset folder; `attributes` picks and orders a subset by name."""
    source = DatasetSource.of(source)
    return _module(source.format).load_source(source, attributes, check_images)


def attribute_names(source: DatasetSource | str | Path) -> list[str]:
    """The dataset's attribute names in file order, read from the annotations only (no image listing)."""
    source = DatasetSource.of(source)
    return _module(source.format).source_attribute_names(source)


def fingerprint_inputs(source: DatasetSource | str | Path) -> tuple[list[Path], list[Path], str]:
    """(annotation files, image folders, extra text): what the decode cache hashes to key an entry."""
    source = DatasetSource.of(source)
    return _module(source.format).fingerprint_inputs(source)


def describe(index: DatasetIndex) -> dict:
    """Images per split and each attribute's positive rate per split (the `dataset` command's JSON)."""
    info = {
        "splits": {s: len(index.files[s]) for s in SPLITS},
        "attributes": {
            a: {s: (float(index.labels[s][:, j].mean()) if len(index.files[s]) else None) for s in SPLITS}
            for j, a in enumerate(index.attributes)
        },
    }
    if index.identities:
        info["identities"] = {s: len(index.identities[s]) for s in SPLITS}
        info["val_identities"] = list(index.identities["val"])
        info["excluded"] = dict(index.excluded)
    return info
