"""aal_sweep: the Adversarial Attribute Learning protocol as Ray Tune sweeps.

import aal_sweep
res = aal_sweep.open_results("results/demo")   # or "s3://bucket/sweeps/demo"
res.matrix("val_acc")   # M x M pair matrix, diagonal = single-task accuracy
"""

from importlib import metadata as _metadata
from pathlib import Path as _Path


def _own_version() -> str:
    """pyproject.toml's version: from the installed metadata, else from the checkout's pyproject.toml."""
    try:
        return _metadata.version("aal_sweep")
    except _metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
        import tomllib

        try:
            with open(_Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _own_version()
VERSIONED = ("ray", "torch", "pyarrow")  # what a bug report and sweep.yaml name beside our own version


def versions() -> dict[str, str | None]:
    """{"aal_sweep": ..., "ray": ..., "torch": ..., "pyarrow": ...} from the installed packages' metadata,
    so neither Ray nor torch is imported; None for a package that is not installed."""
    out: dict[str, str | None] = {"aal_sweep": __version__}
    for name in VERSIONED:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            out[name] = None
    return out


def open_results(uri):
    """Open a results folder (local path or s3://bucket/prefix) for queries: an `aal_sweep.analysis.Results`."""
    from aal_sweep.analysis.results import Results

    return Results.open(uri)
