"""Datasets: the on-disk formats (celeba, duke, market) read into a DatasetIndex, a decode-once cache, synthetic data.

The decode cache (data/cache.py: open_decoded) and the synthetic writers are imported from their modules:
they load numpy and PIL, which the config (it imports data.types) does without.
"""

from aal_sweep.data.index import attribute_names, fingerprint_inputs, load_index
from aal_sweep.data.types import (
    FORMATS,
    SPLIT_SEED,
    SPLITS,
    VAL_FRACTION,
    DatasetIndex,
    DatasetSource,
    default_cache_dir,
    describe,
)

__all__ = [
    "FORMATS",
    "SPLITS",
    "SPLIT_SEED",
    "VAL_FRACTION",
    "DatasetIndex",
    "DatasetSource",
    "attribute_names",
    "default_cache_dir",
    "describe",
    "fingerprint_inputs",
    "load_index",
]
