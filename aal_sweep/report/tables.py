"""The paper's tables: Table 1 rendered (and beside the paper's means), Tables 3 and 6 compared by attribute.

    aal-sweep table RESULTS [--format table|csv|json|markdown] [--compare paper-celeba|paper-duke]

COMPARE names every --compare choice once (the CLI's choices, the report's and `table`'s checks): the
paper's dataset in table1_means.csv and its per-attribute table. The reference CSVs are package data
(aal_sweep/report/reference/).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from aal_sweep.errors import AalError
from aal_sweep.kinds import ADVERSARIAL
from aal_sweep.report.formats import check_format, csv_text, csv_value, json_value, markdown, percent, text_table


@dataclass(frozen=True)
class Paper:
    """One --compare choice: the dataset's rows of Table 1 (table1_means.csv), its per-attribute table."""

    dataset: str
    table: str  # a file of reference/
    title: str


COMPARE = {
    "paper-celeba": Paper("celeba", "celeba_table3_val.csv", "the paper's Table 3 (CelebA, validation)"),
    "paper-duke": Paper("duke", "duke_table6_val.csv", "the paper's Table 6 (DukeMTMC-attribute, validation)"),
}
PAPER_COLUMNS = ["paper_n_attributes", "paper_val_mean", "paper_test_mean"]
REFERENCE_FILE = "table1_means.csv"
NOT_RUN = "not run"


def check_compare(name: str) -> None:
    if name not in COMPARE:
        raise AalError(f"--compare: {name!r} is not one of {', '.join(COMPARE)}")


def _reference_text(file: str) -> str:
    return resources.files("aal_sweep.report").joinpath("reference", file).read_text(encoding="utf-8")


# ---- Table 1 ----------------------------------------------------------------------------------------


def load_paper(compare: str) -> pd.DataFrame:
    """The paper's Table 1 means (percent) of one dataset, from aal_sweep/report/reference/table1_means.csv."""
    check_compare(compare)
    ref = pd.read_csv(io.StringIO(_reference_text(REFERENCE_FILE)), dtype={"method": object})
    return ref[ref["dataset"] == COMPARE[compare].dataset].reset_index(drop=True)


def with_paper(table: pd.DataFrame, compare: str, method: str) -> pd.DataFrame:
    """`table` plus PAPER_COLUMNS (fractions; NaN where the paper gives none). The adversarial row
    compares with the paper's row of the sweep's adversarial.method (GRL, GAN or WGAN loss)."""
    ref = load_paper(compare)
    out = table.copy()
    for col in PAPER_COLUMNS:
        out[col] = np.nan
    for k, variant in enumerate(out["variant"]):
        hit = ref[(ref["variant"] == variant) & ((ref["method"] == method) | (variant != ADVERSARIAL))]
        if len(hit):
            r = hit.iloc[0]
            # percent with two decimals -> fractions, rounded so 91.19 reads 0.9119, not 0.9118999999999999
            out.loc[k, PAPER_COLUMNS] = [
                float(r["n_attributes"]),
                round(r["val_mean"] / 100, 6),
                round(r["test_mean"] / 100, 6),
            ]
    out["paper_n_attributes"] = out["paper_n_attributes"].astype("Int64")
    return out


def render_table(table: pd.DataFrame, fmt: str, method: str = "grl") -> str:
    """`table` (analysis.variants.variants_table, optionally with_paper) in one of formats.FORMATS. Machine
    formats carry fractions; human formats percent with two decimals and "not run" / "—"."""
    check_format(fmt)
    run = table["n_attributes"] > 0
    records = table.astype(object).to_dict("records")  # ints stay ints (iterrows would make them floats)
    if fmt == "csv":
        cols = list(table.columns)
        rows = [
            [r["variant"], *(_cell(r[c]) if ok or c in PAPER_COLUMNS else "" for c in cols[1:])]
            for ok, r in zip(run, records)
        ]
        return csv_text(cols, rows)
    if fmt == "json":
        records = [
            {
                "variant": r["variant"],
                "run": bool(ok),
                **{c: (_json(r[c]) if ok or c in PAPER_COLUMNS else None) for c in table.columns[1:]},
            }
            for ok, r in zip(run, records)
        ]
        return json.dumps({"unit": "fraction", "adversarial_method": method, "variants": records}, indent=2)
    shown = display(table, method)
    return text_table(shown) if fmt == "table" else markdown(shown)


def _cell(v) -> str:
    """A csv field: counts as integers, fractions at full precision, empty where missing."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return csv_value(v)


def _json(v):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return json_value(v)


def display(table: pd.DataFrame, method: str = "grl") -> pd.DataFrame:
    """Strings for people (the CLI's table and markdown, the report): percent, "not run" where not run."""
    rows = []
    for _, r in table.iterrows():
        run = r["n_attributes"] > 0
        name = f"{r['variant']} ({method})" if r["variant"] == ADVERSARIAL else r["variant"]
        row = {
            "variant": name,
            "attributes": str(int(r["n_attributes"])) if run else NOT_RUN,
            "val %": percent(r["val_mean"]) if run else NOT_RUN,
            "test %": percent(r["test_mean"]) if run else NOT_RUN,
        }
        if "paper_val_mean" in table:
            n = r["paper_n_attributes"]
            row |= {
                "paper attributes": "—" if pd.isna(n) else str(int(n)),
                "paper val %": percent(r["paper_val_mean"]),
                "paper test %": percent(r["paper_test_mean"]),
            }
        rows.append(row)
    return pd.DataFrame(rows)


# ---- Tables 3 and 6: per attribute, beside the paper ------------------------------------------------


def load_reference(name: str) -> pd.DataFrame:
    """The paper's per-attribute table (Table 3 or 6, in reference/), percent, with the partner's name resolved."""
    check_compare(name)
    ref = pd.read_csv(io.StringIO(_reference_text(COMPARE[name].table)))
    names = list(ref["att_name"])
    ref["partner"] = [names[int(i) - 1] if pd.notna(i) else None for i in ref["neg_att"]]
    return ref


def _key(name: str) -> str:
    """Match names across spellings: "Light-color shoes" = "light_color_shoes"."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def comparison(table: pd.DataFrame, matrix: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """This sweep beside the paper, in percent, rows matched by name, the means over matched rows last."""
    from aal_sweep.analysis.summary import mean_row  # here: the CLI's parser imports this module for COMPARE

    ours = table[table["attribute"] != "mean"].reset_index(drop=True)
    # a reference may also carry the dataset file's names (`name`: Duke's "downblack" for "Black lower-body clothes")
    spellings = [ref["att_name"]] + ([ref["name"]] if "name" in ref else [])
    by_key = {_key(n): k for column in spellings for k, n in enumerate(column)}
    hits = [(k, by_key[_key(a)]) for k, a in enumerate(ours["attribute"]) if _key(a) in by_key]
    o = ours.iloc[[k for k, _ in hits]].reset_index(drop=True)
    p = ref.iloc[[j for _, j in hits]].reset_index(drop=True)
    # the paper's partner in this sweep's spelling where the sweep has it, so the two partner columns compare
    spelled = {j: ours["attribute"][k] for k, j in hits}
    p["partner"] = [spelled.get(int(i) - 1, q) if pd.notna(i) else q for i, q in zip(p["neg_att"], p["partner"])]
    complete = matrix.notna().all(axis=1)
    o_settled = o["partner"].isna() & o["single"].notna() & o["attribute"].map(complete).fillna(False).astype(bool)
    p_frac = p.rename(columns={"att_name": "attribute"}).copy()
    for c in ("single", "multi", "adversarial", "multi_minus_single", "adv_minus_single", "adv_minus_multi"):
        p_frac[c] = p_frac[c] / 100
    p_frac["lambda"] = np.nan
    p_settled = p_frac["partner"].isna() & p_frac["single"].notna()
    o_mean, p_mean = mean_row(o, o_settled), mean_row(p_frac, p_settled)
    rows = [
        _compare_row(a, pr, orow)
        for a, pr, orow in zip(o["attribute"], p_frac.to_dict("records"), o.to_dict("records"))
    ]
    rows.append(_compare_row("mean", p_mean, o_mean))
    return pd.DataFrame(rows)


def _compare_row(attribute: str, paper: dict, ours: dict) -> dict:
    def name(v) -> str:
        return "" if v is None or pd.isna(v) else str(v)

    row = {"attribute": attribute, "partner (paper)": name(paper["partner"]), "partner (ours)": name(ours["partner"])}
    if attribute == "mean":
        row["partner (paper)"] = row["partner (ours)"] = ""
    for col in ("single", "multi", "adversarial"):
        row[f"{col} (paper)"], row[f"{col} (ours)"] = percent(paper[col]), percent(ours[col])
    row["adv-single (paper)"] = percent(paper["adv_minus_single"], signed=True)
    row["adv-single (ours)"] = percent(ours["adv_minus_single"], signed=True)
    return row
