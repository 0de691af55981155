"""What every dataset format gives the rest of the tool: DatasetSource, DatasetIndex, the splits and their defaults.

No heavy import at module level: the config and the CLI's parser import this module.
"""

from __future__ import annotations

import os
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


def default_cache_dir() -> Path:
    """The decode cache's folder when dataset.cache is not set: $AAL_SWEEP_CACHE, else ~/.cache/aal_sweep."""
    return Path(os.environ.get("AAL_SWEEP_CACHE", Path.home() / ".cache" / "aal_sweep"))


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
