"""Checks on the folders a command will write, made before it writes anything."""

from __future__ import annotations

from pathlib import Path

from aal_sweep.errors import AalError


def require_folder(path: str | Path, what: str) -> None:
    """Refuse, in one line, a folder to be written that is a file or lies below a file (mkdir would fail
    halfway with a traceback). URLs (s3://...) are the store's to check."""
    if "://" in str(path):
        return
    p = Path(path).expanduser().absolute()
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise AalError(f"{what}: {q} is a file, not a folder (choose another path, or move the file away)")
        if q.is_dir():
            return
