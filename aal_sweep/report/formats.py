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
    if fmt == "csv":
        return csv_text(
            ["attribute", *map(str, matrix.columns)],
            [[a, *(csv_value(v) for v in row)] for a, row in zip(matrix.index, matrix.to_numpy())],
        )
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
    shown = stats_display(pairs)
    return text_table(shown) if fmt == "table" else markdown(shown)


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
    out = pd.DataFrame(index=t.index)
    for col in t.columns:
        v = t[col]
        if col in _PERCENT or col in ("majority", "reference"):
            shown = each_distinct(v, percent)
        elif col in _POINTS or col in ("drop", "gain", "ci_low", "ci_high"):
            shown = each_distinct(v, lambda x: percent(x, signed=True))
        elif col in ("drop_sd", "single_sd", "multi_sd"):  # a spread, not a change: no sign
            shown = each_distinct(v, percent)
        elif col in ("p_value", "p_adjusted"):
            shown = each_distinct(v, lambda x: f"{float(x):.3g}")
        elif col == "lambda":
            shown = each_distinct(v, lambda x: f"{float(x):g}")
        elif str(v.dtype) in ("bool", "boolean"):
            shown = each_distinct(v, lambda x: "yes" if x else "no")
        else:
            shown = each_distinct(v, str)
        out[col] = pd.Series(shown, index=t.index, dtype=object)  # object: no conversion to a string dtype
    if "ci_low" in out and "ci_high" in out:  # one column: the interval reads as one thing
        lo, hi = out["ci_low"].to_numpy(dtype=object), out["ci_high"].to_numpy(dtype=object)
        joined = np.where(lo == MISSING, MISSING, "[" + lo + ", " + hi + "]")
        out.insert(out.columns.get_loc("ci_low"), "ci", pd.Series(joined, index=t.index, dtype=object))
        out = out.drop(columns=["ci_low", "ci_high"])
    if "attribute" in out and len(out) and t["attribute"].iloc[-1] == "mean":
        out.iloc[-1] = out.iloc[-1].where(out.iloc[-1] != MISSING, "")  # no "—" clutter on the mean row
    return out.rename(columns=PARTNER_HEADERS).reset_index(drop=True)


def each_distinct(values, fn, missing: str = MISSING) -> np.ndarray:
    """fn(value) for every value that is not missing, `missing` for the rest, calling fn once per
    distinct value: a 1,000-attribute pairs table has 17M cells but far fewer distinct values per column."""
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
    uniques = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
    strings = np.array([*(fn(u) for u in uniques), missing], dtype=object)  # uniques hold no missing value
    return strings[codes]  # code -1 (missing) takes the last


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


def _is_text_column(col: pd.Series) -> bool:
    """Left-align names; right-align numbers (a column is text if any cell is neither number nor blank)."""

    def numeric(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return s in ("", MISSING)

    return not all(numeric(str(s)) for s in pd.unique(col.to_numpy(dtype=object)))


def text_table(df: pd.DataFrame) -> str:
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = [_strings(df[c]) for c in df.columns]
    widths = [
        max(len(str(c)), pc.max(pc.utf8_length(a)).as_py() or 0) if len(df) else len(str(c))
        for c, a in zip(df.columns, cells)
    ]
    left = [_is_text_column(df[c]) for c in df.columns]

    def line(cells) -> str:
        return "  ".join(s.ljust(w) if is_left else s.rjust(w) for s, w, is_left in zip(cells, widths, left)).rstrip()

    if not len(df):
        return line(map(str, df.columns))
    padded = [
        (pc.utf8_rpad if is_left else pc.utf8_lpad)(a, width=w, padding=" ")
        for a, w, is_left in zip(cells, widths, left)
    ]
    rows = pc.utf8_rtrim_whitespace(pc.binary_join_element_wise(*padded, pa.scalar("  ", pa.large_string())))
    return "\n".join([line(map(str, df.columns)), *rows.to_pylist()])


def _strings(column: pd.Series):
    """A column as a pyarrow large_string array: directly where it holds strings (display tables)."""
    import pyarrow as pa

    try:
        return pa.array(column.to_numpy(dtype=object), pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array(each_distinct(column, str, "nan"), pa.large_string())


def markdown(df: pd.DataFrame) -> str:
    left = [_is_text_column(df[c]) for c in df.columns]

    def line(cells) -> str:
        return "| " + " | ".join(str(s).replace("|", "\\|") for s in cells) + " |"

    rule = "|" + "|".join(":---" if is_left else "---:" for is_left in left) + "|"
    return "\n".join([line(df.columns), rule, *(line(r) for r in df.itertuples(index=False))])
