"""The Parquet store: one atomic file per finished trial, long format (one row per trial and head).

    RESULTS/sweep.yaml            the resolved config and its training hash
    RESULTS/trials/<id>.parquet   the rows of one trial (pandas.read_parquet("RESULTS/trials") reads them all)
    RESULTS/partners.parquet      per attribute: the chosen partner, single and pair accuracy, the drop

Rows hold plain values only. A file appears whole or not at all (temporary file + rename), so concurrent
trials never lose a row and a kill never leaves half a file.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRIALS_DIR = "trials"
SWEEP_FILE = "sweep.yaml"
PARTNERS_FILE = "partners.parquet"

_floats = pa.list_(pa.float64())
SCHEMA = pa.schema([
    ("trial_id", pa.string()),
    ("kind", pa.string()),  # single | pair | adversarial
    ("attribute", pa.string()),  # this head's attribute
    ("partner", pa.string()),  # the other attribute of a pair / adversarial trial, else null
    ("lambda", pa.float64()),  # null unless adversarial
    ("method", pa.string()),  # grl | gan | wgan for adversarial, else null
    ("seed", pa.int64()),
    ("status", pa.string()),  # ok | failed
    ("error", pa.string()),
    ("best_epoch", pa.int64()),  # 0-based
    ("val_acc", pa.float64()),  # fraction, of the best validation epoch
    ("test_acc", pa.float64()),  # fraction, of the best validation epoch
    ("val_acc_by_epoch", _floats),
    ("val_loss_by_epoch", _floats),
    ("test_acc_by_epoch", _floats),
    ("epochs_run", pa.int64()),
    ("attempts", pa.int64()),
    ("train_seconds", pa.float64()),
    ("n_val", pa.int64()),
    ("n_test", pa.int64()),
    ("backbone", pa.string()),
    ("config_hash", pa.string()),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    # numpy.packbits (big bit order) of "image i classified correctly at the best epoch", split order
    ("val_correct", pa.binary()),
    ("test_correct", pa.binary()),
    ("node_id", pa.string()),  # Ray's node id of the worker that finished the trial
])
COLUMNS = SCHEMA.names


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def trial_path(results: str | Path, trial_id: str) -> Path:
    return Path(results) / TRIALS_DIR / f"{trial_id}.parquet"


def write_trial(results: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write one trial's rows (missing columns become null) as RESULTS/trials/<trial_id>.parquet."""
    if not rows or len({r["trial_id"] for r in rows}) != 1:
        raise ValueError("write_trial takes the rows of exactly one trial")
    now = dt.datetime.now(dt.timezone.utc)
    full = [{c: r.get(c) for c in COLUMNS} | {"finished_at": r.get("finished_at") or now} for r in rows]
    path = trial_path(results, rows[0]["trial_id"])
    write_table(path, pa.Table.from_pylist(full, schema=SCHEMA))
    return path


def read_trials(results: str | Path) -> pd.DataFrame:
    """Every stored row, as one DataFrame with the store's columns (empty, typed, when there are none)."""
    files = sorted((Path(results) / TRIALS_DIR).glob("*.parquet"))
    if not files:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]).to_pandas()

