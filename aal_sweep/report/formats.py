"""Output formats (table | csv | json | markdown): the renderers of the matrix, partners and pairs, and their helpers.

Machine formats (csv, json) carry fractions at full precision, with missing values empty (csv) or null
(json); they are for other programs. Human formats (table, markdown) show percent with two decimals, like
the paper's Tables 3 and 4, missing values as "—" (never 0), and a mean row.

    matrix csv      attribute,Disc,Square,...      one row per attribute, no mean row (a mean is not a cell)
    matrix json     {"metric": "val_acc", "unit": "fraction", "attributes": [...],
                     "matrix": {row: {column: value | null}}}      row = measured, column = trained with
    partners csv    the columns of summary.PARTNER_COLUMNS and partners.PARTNER_STAT_COLUMNS, the mean row last
                    (attribute "mean"); flags are true / false
    partners json   a list of records with those keys, the mean record last; NaN and no partner are null
    pairs csv       pairs.PAIR_COLUMNS, one row per ordered pair (attribute, partner); json: records
    matrix --metric drop --format json   {"metric": "drop", ..., "matrix": {row: {column: drop}},
                     "cells": {row: {column: {every pairs column}}}}

Human matrices number their columns (1..M, the row numbers) so that 40 attributes fit on a screen.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pandas as pd

from aal_sweep.errors import AalError

FORMATS = ("table", "csv", "json", "markdown")  # the CLI's --format choices
MISSING = "—"
_PERCENT = ("single", "multi", "adversarial", "multitask_all", "adversarial_multiple", "adversarial_shared")
_POINTS = ("multi_minus_single", "adv_minus_single", "adv_minus_multi")
PARTNER_HEADERS = {
    "attribute": "attribute",
    "partner": "partner",
    "single": "single %",
    "multi": "multi %",
    "adversarial": "adversarial %",
    "multitask_all": "multitask_all %",
    "adversarial_multiple": "adv multiple %",
    "adversarial_shared": "adv shared %",
    "lambda": "lambda",
    "multi_minus_single": "multi-single",
    "adv_minus_single": "adv-single",
    "adv_minus_multi": "adv-multi",
    "drop": "drop",
    "ci": "ci",
    "p_value": "p",
    "p_adjusted": "p adj",
    "significant": "sig",
    "n_seeds": "seeds",
    "single_above_majority": "above maj",
    "at_baseline": "at baseline",
    "majority": "majority %",
}


def render_matrix(matrix: pd.DataFrame, fmt: str) -> str:
    """The M x M pair matrix (row = measured attribute, column = partner) in one of FORMATS."""
    check_format(fmt)
    if fmt == "csv":  # csv_value once per distinct value: a 1,000-attribute matrix has a million cells
        cells = each_distinct(matrix.to_numpy(float).ravel(), csv_value, "").reshape(matrix.shape)
        return csv_text(["attribute", *map(str, matrix.columns)], [[a, *row] for a, row in zip(matrix.index, cells)])
    if fmt == "json":
        body = {str(a): {str(b): json_value(matrix.loc[a, b]) for b in matrix.columns} for a in matrix.index}
        return json.dumps(
            {
                "metric": matrix.attrs.get("metric"),
                "unit": "fraction",
                "attributes": [str(a) for a in matrix.index],
                "matrix": body,
            },
            indent=2,
        )
    shown = matrix_display(matrix)
    return text_table(shown) if fmt == "table" else markdown(shown)


def render_partners(partners: pd.DataFrame, fmt: str) -> str:
    """The partners table (summary.partners_table, mean row included) in one of FORMATS."""
    check_format(fmt)
    if fmt in ("csv", "json"):  # statistics columns hold flags, counts and names beside the fractions
        return machine(partners, fmt)
    shown = partners_display(partners)
    return text_table(shown) if fmt == "table" else markdown(shown)


# ---- what a person sees (also used by the HTML report) ------------------------------------------


def percent(v, signed: bool = False) -> str:
    """A fraction as percent (or a difference as percentage points), two decimals; missing as "—"."""
    if is_missing(v):
        return MISSING
    return f"{100 * float(v):+.2f}" if signed else f"{100 * float(v):.2f}"


def matrix_display(matrix: pd.DataFrame) -> pd.DataFrame:
    """Strings: columns #, attribute, 1..M (percent), the rows numbered, a mean row (column means) last."""
    numbers = [str(i) for i in range(1, len(matrix.columns) + 1)]
    rows = [
        [str(i), str(a), *(percent(v) for v in row)]
        for i, (a, row) in enumerate(zip(matrix.index, matrix.to_numpy()), 1)
    ]
    rows.append(["", "mean", *(percent(matrix[c].mean()) for c in matrix.columns)])
    return pd.DataFrame(rows, columns=["#", "attribute", *numbers])


def partners_display(partners: pd.DataFrame) -> pd.DataFrame:
    """Strings: the partners table in percent, differences in signed percentage points (and its
    statistics columns as `stats_display` shows them)."""
    return stats_display(partners)


# ---- the pairs' statistics (aal_sweep.analysis.pairs) ----------------------------------------------------


def render_pairs(pairs: pd.DataFrame, fmt: str) -> str:
    """The long table of ordered pairs (pairs.PAIR_COLUMNS), one row per (attribute, partner)."""
    check_format(fmt)
    if fmt in ("csv", "json"):
        return machine(pairs, fmt)
    if fmt == "table":  # straight from the coded columns: a million rows never become Python strings
        return coded_text_table({PARTNER_HEADERS.get(c, c): v for c, v in _stats_columns(pairs).items()})
    return markdown(stats_display(pairs))


def render_drop_matrix(pairs: pd.DataFrame, attributes: list[str], fmt: str, ci: bool = False) -> str:
    """The drop matrix P[a][b] - P[a][a] from the pairs table; human formats mark cells significant after
    adjustment with "*" and, with `ci`, show the interval; json carries every statistic of every cell."""
    check_format(fmt)
    grid = {
        c: pairs.pivot(index="attribute", columns="partner", values=c).reindex(index=attributes, columns=attributes)
        for c in ("drop", "ci_low", "ci_high")
    }
    drop = grid["drop"]
    drop.index.name = "attribute"
    if fmt == "csv":
        if not ci:
            return render_matrix(drop, "csv")
        values = [g.to_numpy(float) for g in grid.values()]  # cell (a, b): drop, ci_low, ci_high side by side
        rows = [
            [a] + [csv_value(v[i, j]) for j in range(len(attributes)) for v in values] for i, a in enumerate(attributes)
        ]
        header = [f"{b}{suffix}" for b in attributes for suffix in ("", ".ci_low", ".ci_high")]
        return csv_text(["attribute", *header], rows)
    if fmt == "json":
        cells = {str(a): {} for a in attributes}
        for rec in json.loads(machine(pairs, "json")):
            cell = {k: v for k, v in rec.items() if k not in ("attribute", "partner")}
            cells[rec["attribute"]][rec["partner"]] = cell
        body = {str(a): {str(b): json_value(drop.loc[a, b]) for b in attributes} for a in attributes}
        return json.dumps(
            {
                "metric": "drop",
                "unit": "fraction",
                "attributes": list(map(str, attributes)),
                "matrix": body,
                "cells": cells,
            },
            indent=2,
        )
    marks = pairs.set_index(["attribute", "partner"])
    numbers = [str(i) for i in range(1, len(attributes) + 1)]
    rows = []
    for i, a in enumerate(attributes, 1):
        row = [str(i), str(a)]
        for b in attributes:
            row.append("" if a == b else _drop_cell(marks, a, b, ci))
        rows.append(row)
    shown = pd.DataFrame(rows, columns=["#", "attribute", *numbers])
    return text_table(shown) if fmt == "table" else markdown(shown)


def _drop_cell(marks: pd.DataFrame, a: str, b: str, ci: bool) -> str:
    if (a, b) not in marks.index:
        return MISSING
    r = marks.loc[(a, b)]
    text = percent(r["drop"], signed=True)
    if ci and not is_missing(r["ci_low"]):
        text += f" [{percent(r['ci_low'], signed=True)}, {percent(r['ci_high'], signed=True)}]"
    return text + ("*" if _true(r["significant"]) else "")


def stats_display(t: pd.DataFrame) -> pd.DataFrame:
    """Strings for a table with statistics columns: accuracies in percent, differences and intervals in
    signed points, p-values in 3 significant digits, flags as yes / no, unknown as "—"."""
    out = pd.DataFrame(
        {c: pd.Series(strings[codes], dtype=object) for c, (codes, strings) in _stats_columns(t).items()}
    )  # object: no conversion to a string dtype
    if "attribute" in out and len(out) and t["attribute"].iloc[-1] == "mean":
        out.iloc[-1] = out.iloc[-1].where(out.iloc[-1] != MISSING, "")  # no "—" clutter on the mean row
    return out.rename(columns=PARTNER_HEADERS)


def _stats_columns(t: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stats_display's columns coded: column c shows strings[codes[i]] in row i, each string made once per
    distinct value (a 1,000-attribute pairs table has 17M cells, a few thousand distinct strings)."""
    out = {}
    for col in t.columns:
        v = t[col]
        if col in _PERCENT or col in ("majority", "reference"):
            fn = percent
        elif col in _POINTS or col in ("drop", "gain", "ci_low", "ci_high"):
            fn = lambda x: percent(x, signed=True)  # noqa: E731
        elif col in ("drop_sd", "drop_se", "single_sd", "multi_sd"):  # a spread, not a change: no sign
            fn = percent
        elif col in ("p_value", "p_adjusted"):
            fn = lambda x: f"{float(x):.3g}"  # noqa: E731
        elif col == "lambda":
            fn = lambda x: f"{float(x):g}"  # noqa: E731
        elif str(v.dtype) in ("bool", "boolean"):
            fn = lambda x: "yes" if x else "no"  # noqa: E731
        else:
            fn = str
        out[col] = distinct_strings(v, fn)
    if "ci_low" in out and "ci_high" in out:  # one column: the interval reads as one thing
        (lo, lo_s), (hi, hi_s) = out.pop("ci_low"), out.pop("ci_high")
        codes, pairs = pd.factorize(lo.astype(np.int64) * len(hi_s) + hi)  # each distinct (low, high) once
        lows, highs = lo_s[pairs // len(hi_s)], hi_s[pairs % len(hi_s)]
        strings = np.array([MISSING if a == MISSING else f"[{a}, {b}]" for a, b in zip(lows, highs)], dtype=object)
        at = [c for c in t.columns if c != "ci_high"].index("ci_low")
        items = list(out.items())
        out = dict(items[:at] + [("ci", (codes, strings))] + items[at:])
    return out


def each_distinct(values, fn, missing: str = MISSING) -> np.ndarray:
    """fn(value) for every value that is not missing, `missing` for the rest, calling fn once per
    distinct value: a 1,000-attribute pairs table has 17M cells but far fewer distinct values per column."""
    codes, strings = distinct_strings(values, fn, missing)
    return strings[codes]


def distinct_strings(values, fn, missing: str = MISSING) -> tuple[np.ndarray, np.ndarray]:
    """(codes, strings): value i shows as strings[codes[i]]: fn(value) once per distinct value that is not
    missing; `missing` (the last string) for the rest."""
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
    uniques = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
    strings = np.array([*(fn(u) for u in uniques), missing], dtype=object)  # uniques hold no missing value
    return np.where(codes < 0, len(strings) - 1, codes), strings


def machine(t: pd.DataFrame, fmt: str) -> str:
    """csv / json of any table: floats at full precision, flags as true / false, unknown empty / null."""

    def value(v):
        if is_missing(v):
            return None
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        return v if isinstance(v, str) else float(v)

    if fmt == "json":
        records = [[value(v) for v in row] for row in t.itertuples(index=False)]
        return json.dumps([dict(zip(map(str, t.columns), r)) for r in records], indent=2)

    def text(v) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v) if isinstance(v, (str, int)) else repr(v)

    columns = [each_distinct(t[c].astype(object), lambda v: _csv_field(text(value(v))), "") for c in t.columns]
    return "\n".join([csv_text(list(map(str, t.columns)), []), *_joined(columns, ",")])


def _csv_field(s: str) -> str:
    """One csv field as csv.writer (QUOTE_MINIMAL) writes it inside a row."""
    return f'"{s.replace(chr(34), chr(34) * 2)}"' if any(ch in s for ch in ',"\n\r') else s


def _joined(columns: list[np.ndarray], sep: str) -> list[str]:
    """Row i: the i-th strings of `columns` joined by `sep` (pyarrow's string kernels, no per-row Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not columns or not len(columns[0]):
        return []
    arrays = [pa.array(c, pa.large_string()) for c in columns]
    return pc.binary_join_element_wise(*arrays, pa.scalar(sep, pa.large_string())).to_pylist()


def _true(v) -> bool:
    return not is_missing(v) and bool(v)


# ---- writers ------------------------------------------------------------------------------------


def check_format(fmt: str) -> None:
    """AalError naming the valid formats (the CLI's argparse checks the same FORMATS first)."""
    if fmt not in FORMATS:
        raise AalError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))


def csv_value(v) -> str:
    """Full precision for csv: repr of the float (shortest round-trip), empty where missing."""
    if is_missing(v):
        return ""
    if isinstance(v, str):
        return v
    return repr(float(v))


def json_value(v):
    if is_missing(v):
        return None
    return v if isinstance(v, str) else float(v)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().rstrip("\n")


def text_table(df: pd.DataFrame) -> str:
    """Aligned columns (text left, numbers right), two spaces apart, a header line first."""
    return coded_text_table({str(c): _coded(df[c]) for c in df.columns})


def coded_text_table(columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """text_table of columns given as (codes, strings) (see distinct_strings): each distinct string is
    measured and padded once, and the rows are assembled by pyarrow's kernels, so a million-row table
    costs no Python step per row or cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    headers = list(columns)
    widths, left, padded = [], [], []
    for header, (codes, strings) in columns.items():
        shown = [str(s) for s in strings[np.bincount(codes, minlength=len(strings)) > 0]]  # what rows show
        width = max([len(header), *map(len, shown)])
        is_left = _is_text(shown)
        widths.append(width)
        left.append(is_left)
        if len(codes):
            pad = str.ljust if is_left else str.rjust
            dictionary = pa.array([pad(str(s), width) for s in strings], pa.large_string())
            padded.append(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary).dictionary_decode())
    head = "  ".join(h.ljust(w) if is_left else h.rjust(w) for h, w, is_left in zip(headers, widths, left)).rstrip()
    if not padded:
        return head
    rows = pc.utf8_rtrim_whitespace(pc.binary_join_element_wise(*padded, pa.scalar("  ", pa.large_string())))
    body = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array([0, len(rows)], pa.int64()), rows), pa.scalar("\n", pa.large_string())
    )
    return head + "\n" + body[0].as_py()


def _coded(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A display column (strings; anything else shown by str, missing as "nan") as (codes, strings)."""
    return distinct_strings(column.astype(object), str, "nan")


def _is_text(strings: list[str]) -> bool:
    """Left-align names; right-align numbers (a column is text if any cell is neither number nor blank)."""
    import pyarrow as pa

    try:  # a column of numbers (or blanks) parses as floats in one call: 700,000 distinct p-values
        pa.array([s for s in strings if s not in ("", MISSING)], pa.string()).cast(pa.float64())
        return False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass

    def numeric(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return s in ("", MISSING)

    return not all(numeric(s) for s in strings)


def markdown(df: pd.DataFrame) -> str:
    left = [_is_text([str(v) for v in pd.unique(df[c].to_numpy(dtype=object))]) for c in df.columns]

    def line(cells) -> str:
        return "| " + " | ".join(str(s).replace("|", "\\|") for s in cells) + " |"

    rule = "|" + "|".join(":---" if is_left else "---:" for is_left in left) + "|"
    return "\n".join([line(df.columns), rule, *(line(r) for r in df.itertuples(index=False))])
