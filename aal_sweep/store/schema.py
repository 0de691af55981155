"""The store's columns (long format: one row per trial and evaluated head) and how a file is checked.

A file written by another version may lack newer columns (they read as null); a file whose columns have
other types, or that lacks the identifying columns, is damaged: `conform` says why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

_floats = pa.list_(pa.float64())
SCHEMA = pa.schema(
    [
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
        # the head attribute's majority-class rate on the validation split (what predicting one class scores),
        # from the labels by the trial, so the statistics need only the results folder
        ("val_majority", pa.float64()),
    ]
)
COLUMNS = SCHEMA.names
# Without these a row cannot be placed in the matrix or the plan: a file lacking them is not ours.
IDENTITY = ("trial_id", "kind", "attribute", "status")
# Few distinct values in a million rows: narrow reads keep them dictionary-encoded (as Parquet stores them),
# so filters and the matrix's lookups work on small dictionaries; Store.trials() decodes them to strings.
DICTIONARY = ("kind", "attribute", "partner", "method", "status", "config_hash", "backbone", "node_id")


class DamagedFile(Exception):
    """A file under trials/ that cannot be read as trial rows; the message says what is wrong."""


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """One trial's rows as a table of SCHEMA (missing columns null, finished_at now unless given)."""
    if not rows or len({r["trial_id"] for r in rows}) != 1:
        raise ValueError("write_trial takes the rows of exactly one trial")
    now = dt.datetime.now(dt.UTC)
    full = [{c: r.get(c) for c in COLUMNS} | {"finished_at": r.get("finished_at") or now} for r in rows]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def schema_of(columns: list[str] | None) -> pa.Schema:
    return SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])


def _family(t: pa.DataType) -> str:
    """A type's kind, for telling a damaged column from one an older writer typed narrower (int for float)."""
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list of " + _family(t.value_type)
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def check_schema(schema: pa.Schema) -> None:
    """DamagedFile unless every store column the file has is of the right kind (a file's footer suffices)."""
    missing = [c for c in IDENTITY if c not in schema.names]
    if missing:
        raise DamagedFile(f"no column {', '.join(missing)}: not a trial file of this store")
    for field in SCHEMA:
        if field.name in schema.names:
            have = schema.field(field.name).type
            if _family(have) not in (_family(field.type), "null"):
                raise DamagedFile(f"column {field.name} is {have}, expected {field.type}")


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`table` with exactly the store's columns (or `columns`) and types, or DamagedFile naming the fault."""
    missing = [c for c in IDENTITY if c not in table.column_names]
    if missing:
        raise DamagedFile(f"no column {', '.join(missing)}: not a trial file of this store")
    if table.num_rows == 0:
        raise DamagedFile("no rows")
    for c in IDENTITY:
        if table.column(c).null_count:
            raise DamagedFile(f"null {c}")
    out = []
    for field in schema_of(columns):
        if field.name not in table.column_names:  # written before the column existed
            narrow = columns is not None and field.name in DICTIONARY  # typed as the narrow reads type it
            out.append(pa.nulls(table.num_rows, pa.dictionary(pa.int32(), field.type) if narrow else field.type))
            continue
        col = table.column(field.name)
        if col.type == field.type or (pa.types.is_dictionary(col.type) and col.type.value_type == field.type):
            out.append(col)
            continue
        try:
            out.append(col.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise DamagedFile(f"column {field.name} is {col.type}, expected {field.type}") from None
    return pa.Table.from_arrays(out, names=schema_of(columns).names)


def decoded(table: pa.Table) -> pa.Table:
    """`table` with dictionary-encoded columns turned back into plain values."""
    if not any(pa.types.is_dictionary(t) for t in table.schema.types):
        return table
    return table.cast(
        pa.schema(
            [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in table.schema]
        )
    )
