"""Figures (PNG) and one self-contained index.html for a results folder.

    write_report(open_results("results/demo"), "report/", compare="paper-celeba")   # or s3://bucket/prefix

The page embeds its figures as base64 data URIs, so it can be mailed or attached as one file; the PNGs
are written beside it for slides. Figures follow the paper: the drop matrix (from Table 4), per-attribute
bars (Fig. 2) and label correlation against accuracy change (Fig. 3). Everything reads validation accuracy,
as the protocol selects on it; the test accuracy of the same models appears in the means table.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from aal_sweep.errors import AalError
from aal_sweep.report.formats import MISSING, matrix_display, partners_display, percent, render_matrix
from aal_sweep.report.overview import LARGE_M, TOP_K, overview_figure, strongest_negative_pairs
from aal_sweep.analysis.pairs import (UNAVAILABLE, adversarial_gains, baseline_table, choose_partners, pairs_table,
                             significance_summary, with_statistics)
from aal_sweep.analysis.partners import derive_partners, mean_row, pair_matrix, partners_table, select_adversarial
from aal_sweep.store import Store

REFERENCES = {
    "paper-celeba": ("celeba_table3_val.csv", "the paper's Table 3 (CelebA, validation)"),
    "paper-duke": ("duke_table6_val.csv", "the paper's Table 6 (DukeMTMC-attribute, validation)"),
}
COLOURS = {"single": "#8c8c8c", "multi": "#d6604d", "adversarial": "#2166ac"}
_DIAGONAL, _MISSING_CELL = "#4d4d4d", "#e0e0e0"
_FADE = 0.7  # white over a cell that is not significant: its colour keeps 30% of its strength


def write_report(results: Store, out: str | Path, compare: str | None = None) -> Path:
    """Write the figures and index.html into `out` (created if needed); return the index.html path."""
    if compare is not None and compare not in REFERENCES:
        raise AalError(f"--compare: {compare!r} is not one of {', '.join(REFERENCES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = results.trials()  # read once: a 40-attribute store is a thousand files
    attrs, selection = results.attributes, results.config.adversarial.lambda_selection
    matrix = pair_matrix(trials, attrs, "val_acc")
    sig = significance(results, trials, matrix)
    table = with_statistics(partners_table(trials, attrs, "val_acc", selection, partners=sig["chosen"]), sig["chosen"])
    test_table = partners_table(trials, attrs, "test_acc", selection, partners=sig["chosen"])

    figures = {"drop_matrix.png": drop_heatmap(matrix, table, sig["significant"]),
               "accuracy_bars.png": accuracy_bars(table, matrix, sig["val_gains"])}
    labels, label_note = train_labels(results)
    if labels is not None:
        figures["label_correlation.png"] = label_scatter(matrix, labels)
    images = {name: _save(fig, out / name) for name, fig in figures.items()}

    parts = [_header(results, matrix, trials), _means_section(table, test_table, trials),
             _variants_section(results, trials, sig["chosen"], compare),
             _figures_section(images, label_note), _significance_section(sig, results.config.partners),
             _section("Partners (Table 3)", _partners_caption(selection), _html_table(partners_display(table)))]
    if compare:
        parts.append(_compare_section(compare, table, matrix))
    parts += [_matrix_section(matrix, out),
              _section("Run times", "Per trial wall-clock training time (<code>train_seconds</code>).",
                       _html_table(run_times(trials))),
              _section("Config", f"The resolved config from <code>{html.escape(results.show('sweep.yaml'))}</code>.",
                       f"<pre>{html.escape(yaml.safe_dump(results.config.to_dict(), sort_keys=False))}</pre>")]
    index = out / "index.html"
    index.write_text(_page(f"AAL sweep report: {results.config.name}", "\n".join(parts)), encoding="utf-8")
    return index


def significance(results: Store, trials: pd.DataFrame, matrix: pd.DataFrame) -> dict:
    """Everything the report says about significance, computed once from the rows already read: the
    pairs table, the rule's partners with their statistics, an M x M mask of significant cells, the
    adversarial gains (test split, for the table; validation, for Fig. 2's whiskers) and the summary."""
    rule, attrs = results.config.partners, results.attributes
    selection = results.config.adversarial.lambda_selection
    pairs = pairs_table(trials, attrs, rule.alpha, rule.correction)
    derived = derive_partners(matrix)
    baseline = baseline_table(trials, attrs, rule.alpha)
    chosen = choose_partners(derived, pairs, baseline, rule.rule, rule.alpha)
    adversarial = select_adversarial(trials, chosen, selection)
    gains = adversarial_gains(trials, adversarial, rule.alpha, rule.correction)
    val_gains = adversarial_gains(trials, adversarial, rule.alpha, rule.correction, split="val")
    mask = (pairs.pivot(index="attribute", columns="partner", values="significant")
            .reindex(index=attrs, columns=attrs).fillna(False).astype(bool).to_numpy())
    available = bool((pairs["test"] != UNAVAILABLE).any() and pairs["p_value"].notna().any())
    return {"pairs": pairs, "chosen": chosen, "gains": gains, "val_gains": val_gains,
            "significant": mask if available else None,  # unknown significance fades nothing
            "summary": significance_summary(derived, pairs, baseline, gains, rule.alpha), "available": available}


# ---- figures ------------------------------------------------------------------------------------


def _fontsize(m: int) -> float:
    """Tick labels shrink with M so 40 names fit along an axis without overlapping."""
    return 10 if m <= 12 else max(7.0, 10 - (m - 12) * 0.1)


def drop_heatmap(matrix: pd.DataFrame, partners: pd.DataFrame, significant: np.ndarray | None = None) -> Figure:
    """P[a][b] - P[a][a] in percentage points; red = b lowers a. Chosen partners boxed. With `significant`
    (M x M bool), only cells significant after adjustment keep their strong colour; the rest are faded.
    Above overview.LARGE_M attributes: the clustered overview without labels (overview.overview_figure)."""
    if len(matrix) > LARGE_M:
        return overview_figure(matrix, partners)
    m = len(matrix)
    diag = pd.Series(np.diag(matrix.to_numpy(float)), index=matrix.index)
    drop = matrix.sub(diag, axis=0).to_numpy(float) * 100
    np.fill_diagonal(drop, np.nan)
    finite = drop[np.isfinite(drop)]
    # symmetric limits: with one slope per side, a gain of 0.01 would look as strong as a drop of 1 point
    span = max(float(np.abs(finite).max()), 0.01) if finite.size else 1.0
    side = max(6.5, 0.32 * m + 3)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    norm = TwoSlopeNorm(0.0, -span, span)
    im = ax.imshow(drop, cmap=colormaps["RdBu"].with_extremes(bad="white"), norm=norm, interpolation="nearest")
    if significant is not None:  # a wash of white over the cells that are not significant
        for i, j in zip(*np.nonzero(~significant & np.isfinite(drop))):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white", alpha=_FADE, edgecolor="none"))
    _mark_cells(ax, matrix, partners, drop, norm)
    fs = _fontsize(m)
    ax.set_xticks(range(m), list(matrix.columns), rotation=90, fontsize=fs)
    ax.set_yticks(range(m), list(matrix.index), fontsize=fs)
    ax.set_xlabel("partner (trained with)")
    ax.set_ylabel("attribute (measured)")
    ax.set_title("Accuracy change when trained with a partner (validation)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="P[a][b] − P[a][a] (percentage points)")
    faded = [Patch(facecolor="#f4c3a9", label="faded: not significant after adjustment")] if significant is not None else []
    fig.legend(handles=[Patch(facecolor="none", edgecolor="black", linewidth=2, label="chosen partner"), *faded,
                        Patch(facecolor=_DIAGONAL, label="diagonal (single task)"),
                        Patch(facecolor=_MISSING_CELL, hatch="///", edgecolor="#999999", label="missing (cell or its row's single task)")],
               loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    return fig


def _mark_cells(ax, matrix: pd.DataFrame, partners: pd.DataFrame, drop: np.ndarray, norm) -> None:
    """Diagonal dark, missing cells hatched, chosen partners boxed, values written when they fit."""
    m = len(matrix)
    names = list(matrix.columns)
    for i in range(m):
        for j in range(m):
            if (i == j and pd.notna(matrix.iat[i, i])):
                ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor=_DIAGONAL, edgecolor="none"))
            elif i == j or np.isnan(drop[i, j]):  # the cell or its row's single-task baseline is missing
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_MISSING_CELL, hatch="///",
                                       edgecolor="#999999", linewidth=0))
            elif m <= 12:
                dark = abs(norm(drop[i, j]) - 0.5) > 0.3  # white text on the saturated ends of RdBu
                ax.text(j, i, f"{drop[i, j]:+.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    rows = partners[partners["attribute"].isin(matrix.index) & partners["partner"].notna()]
    for a, b in zip(rows["attribute"], rows["partner"]):
        i, j = list(matrix.index).index(a), names.index(b)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
        # a white inner line keeps the box visible on the darkest red, which is where partners sit
        ax.add_patch(Rectangle((j - 0.4, i - 0.4), 0.8, 0.8, fill=False, edgecolor="white", linewidth=0.8))


def accuracy_bars(table: pd.DataFrame, matrix: pd.DataFrame, gains: pd.DataFrame | None = None) -> Figure:
    """Fig. 2: per attribute single / multi-with-partner / adversarial, and their change from single.
    The changes carry their paired confidence intervals as whiskers where known: the drop's (the table's
    ci_low / ci_high) and the adversarial gain over single (`gains`, validation split)."""
    rows = table[table["attribute"] != "mean"].reset_index(drop=True)
    m = len(rows)
    x = np.arange(m)
    # 0.32 in per attribute, capped: past LARGE_M the names go (unreadable) and the bars stay
    fig = Figure(figsize=(min(max(7.0, 0.32 * m + 3), 0.32 * LARGE_M + 3), 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    width = 0.27
    for k, col in enumerate(("single", "multi", "adversarial")):
        label = {"multi": "multi-task with partner"}.get(col, col)
        top.bar(x + (k - 1) * width, rows[col] * 100, width, color=COLOURS[col], label=label)
    _zoom(top, rows[["single", "multi", "adversarial"]].to_numpy(float) * 100)
    top.set_ylabel("validation accuracy (%)")
    top.set_title("Single task, multi-task with the most negative partner, adversarial")
    for k, col in enumerate(("multi_minus_single", "adv_minus_single")):
        bottom.bar(x + (k - 0.5) * width, rows[col] * 100, width, color=COLOURS["multi" if k == 0 else "adversarial"],
                   yerr=_whiskers(rows, col, gains), capsize=2, error_kw={"elinewidth": 0.8, "ecolor": "black"})
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("change from single (points)")
    for i, note in _bar_notes(rows, matrix).items():
        x_note = i + width / 2 if note == "adversarial missing" else i  # where the missing bar would be
        bottom.text(x_note, 0.5, note, rotation=90, ha="center", va="center", fontsize=8, color="#555555",
                    transform=bottom.get_xaxis_transform())
    # one legend outside the axes: inside it would hide bars, which fill the zoomed panel
    fig.legend(*top.get_legend_handles_labels(), loc="outside upper center", ncol=3, frameon=False, fontsize=9)
    fs = _fontsize(m)
    if m > LARGE_M:
        bottom.set_xticks([])
        bottom.set_xlabel(f"{m} attributes in the sweep's order")
    else:
        bottom.set_xticks(x, list(rows["attribute"]), rotation=90 if m > 6 else 0, fontsize=fs)
    bottom.set_xlim(-0.6, m - 0.4)
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    return fig


def _whiskers(rows: pd.DataFrame, col: str, gains: pd.DataFrame | None) -> np.ndarray | None:
    """(2, m) distances from each bar's top to its interval's ends, in points; None when none is known."""
    value = rows[col].to_numpy(float)
    if col == "multi_minus_single" and "ci_low" in rows:
        has = rows["partner"].notna().to_numpy()
        lo, hi = np.where(has, rows["ci_low"].to_numpy(float), np.nan), np.where(has, rows["ci_high"].to_numpy(float), np.nan)
    elif col == "adv_minus_single" and gains is not None and len(gains):
        g = gains[gains["versus"] == "single"].set_index("attribute")
        lo = rows["attribute"].map(g["ci_low"]).to_numpy(float)
        hi = rows["attribute"].map(g["ci_high"]).to_numpy(float)
    else:
        return None
    if not np.isfinite(lo).any():
        return None
    err = np.vstack([value - lo, hi - value]) * 100
    return np.where(np.isfinite(err), np.maximum(err, 0), 0)  # no interval: no whisker


def _bar_notes(rows: pd.DataFrame, matrix: pd.DataFrame) -> dict[int, str]:
    """Why an attribute has no multi / adversarial bars: no partner at all, or cells still missing."""
    complete = matrix.notna().all(axis=1)
    notes = {}
    for i, r in rows.iterrows():
        if pd.isna(r["partner"]):
            notes[i] = "no partner" if complete.get(r["attribute"], False) else "cells missing"
        elif pd.isna(r["adversarial"]):
            notes[i] = "adversarial missing"
    return notes


def _zoom(ax, values: np.ndarray) -> None:
    """Y-limits around the data, not from 0: the differences are tenths of a point."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center")
        return
    lo, hi = finite.min(), finite.max()
    pad = max(0.1 * (hi - lo), 0.2)
    ax.set_ylim(lo - pad, min(hi + pad, 100.0) if hi <= 100 else hi + pad)


def train_labels(results: Store) -> tuple[np.ndarray | None, str | None]:
    """The training split's 0/1 labels in the sweep's attribute order, or None and why not."""
    from aal_sweep.data.index import load_index

    root = Path(results.config.dataset.root)
    if not root.is_dir():
        return None, (f"The label-correlation figure (Fig. 3) is left out: the dataset folder {root} is not on "
                      f"this machine. Run the report where the dataset is to get it.")
    try:
        labels = load_index(results.config.dataset.source(), results.attributes, check_images=False).labels["train"]
    except (AalError, OSError) as e:
        return None, f"The label-correlation figure (Fig. 3) is left out: {e}"
    if len(labels) < 2:
        return None, f"The label-correlation figure (Fig. 3) is left out: {root} has {len(labels)} training image(s)."
    return labels, None


def label_points(matrix: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per ordered pair (a, b) with both cells: label correlation and relative accuracy change (%)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant label column has no correlation
        corr = np.corrcoef(labels.astype(float), rowvar=False)
    p = matrix.to_numpy(float)
    single = np.diag(p)[:, None]
    keep = ~np.eye(len(p), dtype=bool) & np.isfinite(p) & np.isfinite(single) & np.isfinite(corr) & (single > 0)
    i, j = np.nonzero(keep)  # row-major: the order the pairs were listed in before
    names = np.array(list(matrix.index), dtype=object)
    return pd.DataFrame({"attribute": names[i], "partner": np.array(list(matrix.columns), dtype=object)[j],
                         "label_corr": corr[i, j], "relative_change": 100 * (p[i, j] - p[i, i]) / p[i, i]},
                        columns=["attribute", "partner", "label_corr", "relative_change"])


def label_scatter(matrix: pd.DataFrame, labels: np.ndarray) -> Figure:
    """Fig. 3: does label correlation predict transfer? The title gives the scatter's own Pearson r."""
    pts = label_points(matrix, labels)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(pts["label_corr"], pts["relative_change"], s=12 if len(pts) > 200 else 25, alpha=0.6,
               color=COLOURS["adversarial"], edgecolors="none")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Pearson correlation of the two attributes' training labels")
    ax.set_ylabel("relative accuracy change (%)\n(P[a][b] − P[a][a]) / P[a][a]")
    r = _pearson(pts["label_corr"].to_numpy(), pts["relative_change"].to_numpy())
    shown = "undefined" if np.isnan(r) else f"{r:.3f}"
    ax.set_title(f"Label correlation vs accuracy change: r = {shown} over {len(pts)} ordered pairs", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _save(fig: Figure, path: Path) -> bytes:
    """Write the PNG and return its bytes for embedding (Figure.savefig needs no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


# ---- tables -------------------------------------------------------------------------------------


def run_times(trials: pd.DataFrame) -> pd.DataFrame:
    """Per phase: trials ok / failed and their training time; a pair trial's two rows count once."""
    per_trial = trials.drop_duplicates("trial_id")
    rows = []
    variants = [k for k in ("multitask_all", "adversarial_multiple", "adversarial_shared") if (per_trial["kind"] == k).any()]
    for kind in ("single", "pair", "adversarial", *variants, "total"):
        t = per_trial if kind == "total" else per_trial[per_trial["kind"] == kind]
        secs = t["train_seconds"].dropna()
        rows.append({"phase": kind, "ok": int((t["status"] == "ok").sum()), "failed": int((t["status"] != "ok").sum()),
                     "total time": _duration(secs.sum()) if len(secs) else MISSING,
                     "median per trial": _duration(secs.median()) if len(secs) else MISSING,
                     "longest": _duration(secs.max()) if len(secs) else MISSING})
    return pd.DataFrame(rows)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def load_reference(name: str) -> pd.DataFrame:
    """A paper table shipped in aal_sweep/reference/, percent, with the partner's name resolved."""
    file, _ = REFERENCES[name]
    text = resources.files("aal_sweep.report").joinpath("reference", file).read_text(encoding="utf-8")
    ref = pd.read_csv(io.StringIO(text))
    names = list(ref["att_name"])
    ref["partner"] = [names[int(i) - 1] if pd.notna(i) else None for i in ref["neg_att"]]
    return ref


def _key(name: str) -> str:
    """Match names across spellings: "Light-color shoes" = "light_color_shoes"."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def comparison(table: pd.DataFrame, matrix: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """This sweep beside the paper, in percent, rows matched by name, the means over matched rows last."""
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
    rows = [_compare_row(a, pr, orow) for a, pr, orow in zip(o["attribute"], p_frac.to_dict("records"), o.to_dict("records"))]
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


# ---- HTML ---------------------------------------------------------------------------------------


def _header(results: Store, matrix: pd.DataFrame, trials: pd.DataFrame) -> str:
    m = len(matrix)
    singles = int(np.isfinite(np.diag(matrix.to_numpy(float))).sum())
    pairs = int(matrix.notna().to_numpy().sum()) - singles
    ok = trials[trials["status"] == "ok"]
    adv = ok.loc[ok["kind"] == "adversarial", "attribute"].nunique()
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    facts = [f"results <code>{html.escape(results.uri)}</code>",
             f"training hash <code>{html.escape(str(results.training_hash))}</code>",
             f"{m} attributes", f"single-task cells {singles} of {m}", f"pair cells {pairs} of {m * (m - 1)}",
             f"attributes with adversarial runs {adv}", f"generated {when}"]
    partial = "" if singles == m and pairs == m * (m - 1) else (
        "<p class=note>The store is partial: missing cells are blank (—), never 0, and partners may change "
        "as cells arrive.</p>")
    return f"<h1>AAL sweep report: {html.escape(results.config.name)}</h1><p>{' · '.join(facts)}</p>{partial}"


def _means_section(table: pd.DataFrame, test_table: pd.DataFrame, trials: pd.DataFrame) -> str:
    cols = ("single", "multi", "adversarial")
    rows = [{"split": split, **{c: percent(t.iloc[-1][c]) for c in cols}}
            for split, t in (("validation", table), ("test", test_table))]
    note = "Mean accuracy (%) over attributes; an attribute without a partner counts with its single-task accuracy."
    n_val = trials["n_val"].dropna()
    single = table.iloc[-1]["single"]
    if len(n_val) and pd.notna(single):
        se = 100 * np.sqrt(single * (1 - single) / n_val.median())
        note += (f" One standard error of one accuracy at {100 * single:.1f}% on {int(n_val.median())} validation "
                 f"images is {se:.2f} points: single-seed differences smaller than that are noise.")
    return _section("Means", note, _html_table(pd.DataFrame(rows), mean_last=False))


def _variants_section(results: Store, trials: pd.DataFrame, chosen: pd.DataFrame, compare: str | None) -> str:
    """Table 1: every variant's mean accuracy (aal_sweep.analysis.variants), beside the paper's with --compare."""
    from aal_sweep.analysis.variants import display, variants_table, with_paper

    cfg = results.config
    t = variants_table(trials, results.attributes, chosen, cfg.adversarial.lambda_selection)
    if compare:
        t = with_paper(t, compare, cfg.adversarial.method)
    note = ("Mean accuracy (%) of each variant over the attributes it covers (an attribute no partner lowers "
            "counts with its single-task accuracy, as in the paper's mean rows); lambda chosen on validation. "
            "<i>not run</i>: the results hold none of that variant. Also <code>aal-sweep table</code>.")
    return _section("Variants (Table 1)", note, _html_table(display(t, cfg.adversarial.method), mean_last=False))


def _figures_section(images: dict[str, bytes], label_note: str | None) -> str:
    captions = {
        "drop_matrix.png": "Accuracy of the row attribute when trained with the column attribute, minus its "
                           "single-task accuracy. Red: negative transfer. Boxed: the most negative partner.",
        "accuracy_bars.png": "Like the paper's Fig. 2. Attributes without a partner show only the single bar.",
        "label_correlation.png": "Like the paper's Fig. 3 (the paper finds r = 0.004 on CelebA).",
    }
    body = "".join(f"<figure><img alt='{n}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
                   f"<figcaption>{captions[n]} ({n})</figcaption></figure>" for n, b in images.items())
    if label_note:
        body += f"<p class=note>{html.escape(label_note)}</p>"
    return f"<h2>Figures</h2>{body}"


def _significance_section(sig: dict, rule) -> str:
    if not sig["available"]:
        return _section("Significance", "Unavailable: the store's rows carry no per-image correctness "
                        "(<code>val_correct</code>), as results written before it was recorded do; rerun the "
                        "sweep with this version to get intervals and tests.", "")
    note = (f"Partner rule <code>{rule.rule}</code>, alpha {rule.alpha:g}, {rule.correction} adjustment within "
            f"each attribute's row of candidates. One seed: percentile bootstrap interval over images and the "
            f"exact McNemar test; several seeds: a t test whose variance adds the image-level and the seed-level "
            f"parts (see docs/statistics.md). Adversarial gains are tested on the test split (lambda was chosen "
            f"on validation), adjusted across attributes.")
    return _section("Significance", note, _html_table(sig["summary"], mean_last=False))


def _partners_caption(selection: str) -> str:
    return (f"Validation accuracy (%); differences in percentage points; lambda chosen {selection.replace('_', ' ')} "
            "on validation accuracy. — : no partner lowers the attribute, or the cell is not trained yet.")


def _matrix_section(matrix: pd.DataFrame, out: Path) -> str:
    """Table 4 as a grid up to LARGE_M attributes; above, the strongest negative pairs and the full
    matrix as pair_matrix.csv beside the page (a million-cell HTML table helps nobody)."""
    if len(matrix) <= LARGE_M:
        return _section("Pair matrix (Table 4)", _matrix_caption(), _html_table(matrix_display(matrix), wide=True))
    (out / "pair_matrix.csv").write_text(render_matrix(matrix, "csv") + "\n", encoding="utf-8")
    top = strongest_negative_pairs(matrix, TOP_K)
    shown = pd.DataFrame({"attribute": top["attribute"], "partner": top["partner"],
                          "single %": top["single"].map(percent), "multi %": top["multi"].map(percent),
                          "multi-single": top["drop"].map(lambda v: percent(v, signed=True))})
    caption = (f"The {len(top)} most negative cells of the {len(matrix)} x {len(matrix)} pair matrix (validation "
               f"accuracy, %), most negative first. The whole matrix is in <code>pair_matrix.csv</code> beside "
               f"this page (fractions), and `aal-sweep matrix RESULTS --format csv` prints it.")
    return _section("Strongest negative pairs (pair matrix, Table 4)", caption, _html_table(shown, mean_last=False))


def _matrix_caption() -> str:
    return ("Validation accuracy (%). Row: the attribute measured; column <i>j</i>: trained with attribute "
            "<i>j</i>; diagonal: single task. The mean row averages each column.")


def _compare_section(name: str, table: pd.DataFrame, matrix: pd.DataFrame) -> str:
    ref = load_reference(name)
    cmp = comparison(table, matrix, ref)
    matched = cmp[cmp["attribute"] != "mean"]
    agree = int((matched["partner (paper)"] == matched["partner (ours)"]).sum())
    title = REFERENCES[name][1]
    note = (f"{len(matched)} of this sweep's {len(table) - 1} attributes matched the {len(ref)} rows of {title} by "
            f"name (case, spaces and punctuation ignored); {agree} of those have the paper's partner (or, like the paper, none). The mean row "
            f"averages the matched rows only, on both sides.")
    return _section(f"Compared with {title}", note, _html_table(cmp))


def _section(title: str, caption: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2><p>{caption}</p>{body}"


def _html_table(df: pd.DataFrame, wide: bool = False, mean_last: bool = True) -> str:
    """`mean_last`: the last row is a mean or total row, set in bold."""
    table = df.to_html(index=False, escape=True, border=0, na_rep=MISSING)
    classes = " ".join(c for c, on in (("wide", wide), ("meanlast", mean_last)) if on)
    return f"<div class='{classes}'>{table}</div>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.meanlast tr:last-child td{font-weight:bold;border-top:2px solid #888}
.wide{overflow-x:auto} .wide table{font-size:11px} .wide td,.wide th{padding:1px 4px}
figure{margin:1em 0} img{max-width:100%} figcaption{font-size:13px;color:#555}
pre{background:#f7f7f7;padding:1em;font-size:12px;overflow-x:auto} .note{color:#8a4b00}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
