"""Dispatch by dataset format: `load_index`, `attribute_names`, `fingerprint_inputs` of any DatasetSource.

    source = DatasetSource("/data/DukeMTMC-reID", format="duke")     # aal_sweep.data.types
    index = load_index(source, ["backpack", "gender"])   # DataError (one line) on bad input
    index.files["val"][0], index.labels["val"][0], index.image_path(index.files["val"][0])

A format module (celeba.py, reid.py, table.py, huggingface.py) reads its on-disk layout into a DatasetIndex
(data/types.py); this module picks the one of `source.format`, so the decode cache and the CLI work for every
format without knowing any. No heavy import at module level: the config imports this module.
"""

from __future__ import annotations

from pathlib import Path

from aal_sweep.data.types import FORMATS, DatasetIndex, DatasetSource


def _module(fmt: str):
    from aal_sweep.errors import DataError

    # imported here, by module path: the format modules load numpy (and scipy for the .mat files)
    if fmt == "celeba":
        import aal_sweep.data.celeba as celeba

        return celeba
    if fmt in ("duke", "market"):
        import aal_sweep.data.reid as reid

        return reid
    if fmt == "table":
        import aal_sweep.data.table as table

        return table
    if fmt == "huggingface":
        import aal_sweep.data.huggingface as huggingface

        return huggingface
    raise DataError(f"dataset format {fmt!r} is not one of {', '.join(FORMATS)}")


def load_index(
    source: DatasetSource | str | Path, attributes: list[str] | tuple[str, ...] | None = None, check_images: bool = True
) -> DatasetIndex:
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
