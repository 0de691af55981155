"""Render the pair matrix and the partners table as table | csv | json | markdown strings.

Machine formats (csv, json) carry fractions at full precision, with missing values empty (csv) or null
(json); they are for other programs. Human formats (table, markdown) show percent with two decimals, like
the paper's Tables 3 and 4, missing values as "—" (never 0), and a mean row.

    matrix csv      attribute,Disc,Square,...      one row per attribute, no mean row (a mean is not a cell)
    matrix json     {"metric": "val_acc", "unit": "fraction", "attributes": [...],
                     "matrix": {row: {column: value | null}}}      row = measured, column = trained with
    partners csv    the columns of query.PARTNER_COLUMNS, the mean row last (attribute "mean")
    partners json   a list of records with those keys, the mean record last; NaN and no partner are null

Human matrices number their columns (1..M, the row numbers) so that 40 attributes fit on a screen.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pandas as pd

FORMATS = ("table", "csv", "json", "markdown")
MISSING = "—"
_PERCENT = ("single", "multi", "adversarial")
_POINTS = ("multi_minus_single", "adv_minus_single", "adv_minus_multi")
PARTNER_HEADERS = {
    "attribute": "attribute", "partner": "partner", "single": "single %", "multi": "multi %",
    "adversarial": "adversarial %", "lambda": "lambda", "multi_minus_single": "multi-single",
    "adv_minus_single": "adv-single", "adv_minus_multi": "adv-multi",
}


def render_matrix(matrix: pd.DataFrame, fmt: str) -> str:
    """The M x M pair matrix (row = measured attribute, column = partner) in one of FORMATS."""
    _check_format(fmt)
    if fmt == "csv":
        return _csv(["attribute", *map(str, matrix.columns)],
                    [[a, *(_full(v) for v in row)] for a, row in zip(matrix.index, matrix.to_numpy())])
    if fmt == "json":
        body = {str(a): {str(b): _json_value(matrix.loc[a, b]) for b in matrix.columns} for a in matrix.index}
        return json.dumps({"metric": matrix.attrs.get("metric"), "unit": "fraction",
                           "attributes": [str(a) for a in matrix.index], "matrix": body}, indent=2)
    shown = matrix_display(matrix)
    return _text(shown) if fmt == "table" else _markdown(shown)


def render_partners(partners: pd.DataFrame, fmt: str) -> str:
    """The partners table (query.partners_table, mean row included) in one of FORMATS."""
    _check_format(fmt)
    if fmt == "csv":
        cols = list(partners.columns)
        return _csv(cols, [[_full(v) for v in row] for row in partners.itertuples(index=False)])
    if fmt == "json":
        records = [{c: _json_value(v) for c, v in zip(partners.columns, row)}
                   for row in partners.itertuples(index=False)]
        return json.dumps(records, indent=2)
    shown = partners_display(partners)
    return _text(shown) if fmt == "table" else _markdown(shown)


# ---- what a person sees (also used by the HTML report) ------------------------------------------


def percent(v, signed: bool = False) -> str:
    """A fraction as percent (or a difference as percentage points), two decimals; missing as "—"."""
    if _missing(v):
        return MISSING
    return f"{100 * float(v):+.2f}" if signed else f"{100 * float(v):.2f}"


def matrix_display(matrix: pd.DataFrame) -> pd.DataFrame:
    """Strings: columns #, attribute, 1..M (percent), the rows numbered, a mean row (column means) last."""
    numbers = [str(i) for i in range(1, len(matrix.columns) + 1)]
    rows = [[str(i), str(a), *(percent(v) for v in row)]
            for i, (a, row) in enumerate(zip(matrix.index, matrix.to_numpy()), 1)]
    rows.append(["", "mean", *(percent(matrix[c].mean()) for c in matrix.columns)])
    return pd.DataFrame(rows, columns=["#", "attribute", *numbers])


def partners_display(partners: pd.DataFrame) -> pd.DataFrame:
    """Strings: the partners table in percent, differences in signed percentage points."""
    out = pd.DataFrame(index=partners.index)
    for col in partners.columns:
        v = partners[col]
        if col in _PERCENT:
            out[col] = v.map(percent)
        elif col in _POINTS:
            out[col] = v.map(lambda x: percent(x, signed=True))
        elif col == "lambda":
            out[col] = v.map(lambda x: MISSING if _missing(x) else f"{float(x):g}")
        else:
            out[col] = v.map(lambda x: MISSING if _missing(x) else str(x))
    if "attribute" in out and len(out) and partners["attribute"].iloc[-1] == "mean":
        out.iloc[-1] = out.iloc[-1].where(out.iloc[-1] != MISSING, "")  # no "—" clutter on the mean row
    return out.rename(columns=PARTNER_HEADERS).reset_index(drop=True)


# ---- writers ------------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        from aal_sweep.errors import AalError

        raise AalError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))


def _full(v) -> str:
    """Full precision for csv: repr of the float (shortest round-trip), empty where missing."""
    if _missing(v):
        return ""
    if isinstance(v, str):
        return v
    return repr(float(v))


def _json_value(v):
    if _missing(v):
        return None
    return v if isinstance(v, str) else float(v)


def _csv(header: list[str], rows: list[list[str]]) -> str:
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

    return not all(numeric(s) for s in col)


def _text(df: pd.DataFrame) -> str:
    widths = [max(len(str(c)), *(len(s) for s in df[c])) if len(df) else len(str(c)) for c in df.columns]
    left = [_is_text_column(df[c]) for c in df.columns]

    def line(cells) -> str:
        return "  ".join(s.ljust(w) if l else s.rjust(w) for s, w, l in zip(cells, widths, left)).rstrip()

    return "\n".join([line(map(str, df.columns)), *(line(r) for r in df.itertuples(index=False))])


def _markdown(df: pd.DataFrame) -> str:
    left = [_is_text_column(df[c]) for c in df.columns]

    def line(cells) -> str:
        return "| " + " | ".join(str(s).replace("|", "\\|") for s in cells) + " |"

    rule = "|" + "|".join(":---" if l else "---:" for l in left) + "|"
    return "\n".join([line(df.columns), rule, *(line(r) for r in df.itertuples(index=False))])
