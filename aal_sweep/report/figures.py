"""The report's figures (matplotlib, no pyplot state): drop matrix, Fig. 2's bars, Fig. 3's scatter, large-M overview.

Figures follow the paper: the drop matrix (from Table 4), per-attribute bars (Fig. 2) and label
correlation against accuracy change (Fig. 3). Above LARGE_M attributes a labelled cell grid stops being
readable (a figure 0.32 in per attribute grows to 7,500 px at 200 attributes): the drop matrix becomes an
overview in clustered order, without labels, and Fig. 2's three bars per attribute become the
TOP_EFFECTS strongest effects beside the distributions of the changes (accuracy_overview).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

LARGE_M = 60  # above this many attributes: overview + top pairs instead of the labelled grid
TOP_EFFECTS = 30  # Fig. 2 above LARGE_M: the attributes with the most negative partner effect, by name
COLOURS = {"single": "#8c8c8c", "multi": "#d6604d", "adversarial": "#2166ac"}
_DIAGONAL, _MISSING_CELL = "#4d4d4d", "#e0e0e0"
_FADE = 0.7  # white over a cell that is not significant: its colour keeps 30% of its strength


def _fontsize(m: int) -> float:
    """Tick labels shrink with M so 40 names fit along an axis without overlapping."""
    return 10 if m <= 12 else max(7.0, 10 - (m - 12) * 0.1)


def drop_heatmap(matrix: pd.DataFrame, partners: pd.DataFrame, significant: np.ndarray | None = None) -> Figure:
    """P[a][b] - P[a][a] in percentage points; red = b lowers a. Chosen partners boxed. With `significant`
    (M x M bool), only cells significant after adjustment keep their strong colour; the rest are faded.
    Above LARGE_M attributes: the clustered overview without labels (overview_figure)."""
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
    faded = (
        [Patch(facecolor="#f4c3a9", label="faded: not significant after adjustment")] if significant is not None else []
    )
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor="black", linewidth=2, label="chosen partner"),
            *faded,
            Patch(facecolor=_DIAGONAL, label="diagonal (single task)"),
            Patch(
                facecolor=_MISSING_CELL,
                hatch="///",
                edgecolor="#999999",
                label="missing (cell or its row's single task)",
            ),
        ],
        loc="outside lower center",
        ncol=3,
        frameon=False,
        fontsize=9,
    )
    return fig


def _mark_cells(ax, matrix: pd.DataFrame, partners: pd.DataFrame, drop: np.ndarray, norm) -> None:
    """Diagonal dark, missing cells hatched, chosen partners boxed, values written when they fit."""
    m = len(matrix)
    names = list(matrix.columns)
    for i in range(m):
        for j in range(m):
            if i == j and pd.notna(matrix.iat[i, i]):
                ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor=_DIAGONAL, edgecolor="none"))
            elif i == j or np.isnan(drop[i, j]):  # the cell or its row's single-task baseline is missing
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, facecolor=_MISSING_CELL, hatch="///", edgecolor="#999999", linewidth=0
                    )
                )
            elif m <= 12:
                dark = abs(norm(drop[i, j]) - 0.5) > 0.3  # white text on the saturated ends of RdBu
                ax.text(
                    j, i, f"{drop[i, j]:+.2f}", ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
    rows = partners[partners["attribute"].isin(matrix.index) & partners["partner"].notna()]
    for a, b in zip(rows["attribute"], rows["partner"]):
        i, j = list(matrix.index).index(a), names.index(b)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2))
        # a white inner line keeps the box visible on the darkest red, which is where partners sit
        ax.add_patch(Rectangle((j - 0.4, i - 0.4), 0.8, 0.8, fill=False, edgecolor="white", linewidth=0.8))


def accuracy_bars(table: pd.DataFrame, matrix: pd.DataFrame, gains: pd.DataFrame | None = None) -> Figure:
    """Fig. 2: per attribute single / multi-with-partner / adversarial, and their change from single.
    The changes carry their paired confidence intervals as whiskers where known: the drop's (the table's
    ci_low / ci_high) and the adversarial gain over single (`gains`, validation split).
    Above LARGE_M attributes: the strongest effects and the distributions instead (accuracy_overview)."""
    rows = table[table["attribute"] != "mean"].reset_index(drop=True)
    m = len(rows)
    if m > LARGE_M:
        return accuracy_overview(table, gains)
    x = np.arange(m)
    # 0.32 in per attribute, capped: past LARGE_M the names go (unreadable) and the bars stay
    fig = Figure(figsize=(max(7.0, 0.32 * m + 3), 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    width = 0.27
    for k, col in enumerate(("single", "multi", "adversarial")):
        label = {"multi": "multi-task with partner"}.get(col, col)
        top.bar(x + (k - 1) * width, rows[col] * 100, width, color=COLOURS[col], label=label)
    _zoom(top, rows[["single", "multi", "adversarial"]].to_numpy(float) * 100)
    top.set_ylabel("validation accuracy (%)")
    top.set_title("Single task, multi-task with the most negative partner, adversarial")
    for k, col in enumerate(("multi_minus_single", "adv_minus_single")):
        bottom.bar(
            x + (k - 0.5) * width,
            rows[col] * 100,
            width,
            color=COLOURS["multi" if k == 0 else "adversarial"],
            yerr=_whiskers(rows, col, gains),
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "black"},
        )
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("change from single (points)")
    for i, note in _bar_notes(rows, matrix).items():
        x_note = i + width / 2 if note == "adversarial missing" else i  # where the missing bar would be
        bottom.text(
            x_note,
            0.5,
            note,
            rotation=90,
            ha="center",
            va="center",
            fontsize=8,
            color="#555555",
            transform=bottom.get_xaxis_transform(),
        )
    # one legend outside the axes: inside it would hide bars, which fill the zoomed panel
    fig.legend(*top.get_legend_handles_labels(), loc="outside upper center", ncol=3, frameon=False, fontsize=9)
    bottom.set_xticks(x, list(rows["attribute"]), rotation=90 if m > 6 else 0, fontsize=_fontsize(m))
    bottom.set_xlim(-0.6, m - 0.4)
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_overview(table: pd.DataFrame, gains: pd.DataFrame | None = None, top: int = TOP_EFFECTS) -> Figure:
    """Fig. 2 above LARGE_M attributes, where three bars per attribute cannot be read: left, the `top`
    attributes whose partner lowers them most, each with its drop (interval whiskers) and its adversarial
    model's change from single; right, the distributions of both changes over every attribute with a
    partner, and of the single-task accuracies."""
    rows = table[table["attribute"] != "mean"].reset_index(drop=True)
    has = rows[rows["partner"].notna() & rows["multi_minus_single"].notna()]
    strongest = has.nsmallest(top, "multi_minus_single", keep="first").reset_index(drop=True)
    fig = Figure(figsize=(12.0, 8.0), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[3, 2])
    bars, changes, singles = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])
    y = np.arange(len(strongest))
    height = 0.38
    for k, col in enumerate(("multi_minus_single", "adv_minus_single")):
        colour = COLOURS["multi" if k == 0 else "adversarial"]
        label = "multi-task with partner − single" if k == 0 else "adversarial − single"
        err = _whiskers(strongest, col, gains)
        bars.barh(
            y + (k - 0.5) * height,
            strongest[col] * 100,
            height,
            color=colour,
            label=label,
            xerr=err,
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "black"},
        )
    bars.set_yticks(
        y,
        [f"{a} (with {b})" for a, b in zip(strongest["attribute"], strongest["partner"])],
        fontsize=_fontsize(len(strongest)),
    )
    bars.invert_yaxis()  # the strongest effect on top
    bars.axvline(0, color="black", linewidth=0.8)
    bars.set_xlabel("change from single (percentage points)")
    bars.set_title(f"The {len(strongest)} attributes their partner lowers most (of {len(rows)})", fontsize=10)
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, fontsize=8, frameon=False)
    bars.grid(axis="x", alpha=0.3)
    for col, colour, label in (
        ("multi_minus_single", COLOURS["multi"], "multi-task with partner − single"),
        ("adv_minus_single", COLOURS["adversarial"], "adversarial − single"),
    ):
        values = has[col].to_numpy(float) * 100
        values = values[np.isfinite(values)]
        if values.size:
            changes.hist(
                values, bins=40, histtype="step", linewidth=1.5, color=colour, label=f"{label} ({values.size})"
            )
    changes.axvline(0, color="black", linewidth=0.8)
    changes.set_xlabel("change from single (percentage points)")
    changes.set_ylabel("attributes")
    changes.set_title(f"All {len(has)} attributes with a partner", fontsize=10)
    if changes.get_legend_handles_labels()[0]:
        changes.legend(fontsize=8)
    single = rows["single"].to_numpy(float) * 100
    single = single[np.isfinite(single)]
    if single.size:
        singles.hist(single, bins=40, color=COLOURS["single"])
    singles.set_xlabel("single-task validation accuracy (%)")
    singles.set_ylabel("attributes")
    singles.set_title(f"Single task, {single.size} attributes", fontsize=10)
    for ax in (changes, singles):
        ax.grid(alpha=0.3)
    fig.suptitle(
        "Single task, multi-task with the most negative partner, adversarial: "
        f"{len(rows)} attributes, strongest effects and distributions"
    )
    return fig


def _whiskers(rows: pd.DataFrame, col: str, gains: pd.DataFrame | None) -> np.ndarray | None:
    """(2, m) distances from each bar's top to its interval's ends, in points; None when none is known."""
    value = rows[col].to_numpy(float)
    if col == "multi_minus_single" and "ci_low" in rows:
        has = rows["partner"].notna().to_numpy()
        lo = np.where(has, rows["ci_low"].to_numpy(float), np.nan)
        hi = np.where(has, rows["ci_high"].to_numpy(float), np.nan)
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


def label_points(matrix: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per ordered pair (a, b) with both cells: label correlation and relative accuracy change (%)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant label column has no correlation
        if (labels < 0).any():  # unknown labels (-1): each pair on the images labelled for both
            corr = pd.DataFrame(np.where(labels < 0, np.nan, labels.astype(float))).corr().to_numpy()
        else:
            corr = np.corrcoef(labels.astype(float), rowvar=False)
    p = matrix.to_numpy(float)
    single = np.diag(p)[:, None]
    keep = ~np.eye(len(p), dtype=bool) & np.isfinite(p) & np.isfinite(single) & np.isfinite(corr) & (single > 0)
    i, j = np.nonzero(keep)  # row-major: the order the pairs were listed in before
    names = np.array(list(matrix.index), dtype=object)
    return pd.DataFrame(
        {
            "attribute": names[i],
            "partner": np.array(list(matrix.columns), dtype=object)[j],
            "label_corr": corr[i, j],
            "relative_change": 100 * (p[i, j] - p[i, i]) / p[i, i],
        },
        columns=["attribute", "partner", "label_corr", "relative_change"],
    )


def label_scatter(matrix: pd.DataFrame, labels: np.ndarray) -> Figure:
    """Fig. 3: does label correlation predict transfer? The title gives the scatter's own Pearson r."""
    pts = label_points(matrix, labels)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if len(matrix) > LARGE_M:  # thousands of points overlap into a blot: show their density instead
        bins = ax.hexbin(
            pts["label_corr"], pts["relative_change"], gridsize=60, bins="log", mincnt=1, cmap=colormaps["viridis"]
        )
        fig.colorbar(bins, ax=ax, label="ordered pairs per hexagon (log)")
    else:
        ax.scatter(
            pts["label_corr"],
            pts["relative_change"],
            s=12 if len(pts) > 200 else 25,
            alpha=0.6,
            color=COLOURS["adversarial"],
            edgecolors="none",
        )
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


# ---- large M ---------------------------------------------------------------------------------------


def drops(matrix: pd.DataFrame) -> np.ndarray:
    """P[a][b] - P[a][a] in percentage points, NaN on the diagonal and where missing."""
    p = matrix.to_numpy(float)
    d = (p - np.diag(p)[:, None]) * 100
    np.fill_diagonal(d, np.nan)
    return d


def cluster_order(d: np.ndarray) -> np.ndarray:
    """Attributes ordered so that those hurt alike and hurting alike sit together (average-linkage
    clustering of each attribute's row and column of drops; missing cells count as no change)."""
    m = len(d)
    if m < 3:
        return np.arange(m)
    from scipy.cluster.hierarchy import leaves_list, linkage

    x = np.nan_to_num(d, nan=0.0)
    return leaves_list(linkage(np.hstack([x, x.T]), method="average"))


def overview_figure(matrix: pd.DataFrame, partners: pd.DataFrame) -> Figure:
    """The drop matrix in clustered order, fixed size, no per-cell labels; chosen partners dotted."""
    d = drops(matrix)
    order = cluster_order(d)
    shown = d[np.ix_(order, order)]
    finite = shown[np.isfinite(shown)]
    span = max(float(np.abs(finite).max()), 0.01) if finite.size else 1.0
    fig = Figure(figsize=(9.5, 8.0), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(
        shown,
        cmap=colormaps["RdBu"].with_extremes(bad=_MISSING_CELL),
        norm=TwoSlopeNorm(0.0, -span, span),
        interpolation="nearest",
        aspect="auto",
    )
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))
    names = pd.Index(list(matrix.index))
    chosen = partners[partners["attribute"].isin(names) & partners["partner"].notna()]
    rows, cols = names.get_indexer(chosen["attribute"]), names.get_indexer(chosen["partner"])
    keep = (rows >= 0) & (cols >= 0)
    ax.scatter(
        position[cols[keep]], position[rows[keep]], s=6, c="black", marker="s", linewidths=0, label="chosen partner"
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"partner (trained with), {len(order)} attributes in clustered order")
    ax.set_ylabel("attribute (measured), same order")
    ax.set_title("Accuracy change when trained with a partner (validation): overview")
    ax.legend(loc="upper right", fontsize=8, frameon=True)
    fig.colorbar(im, ax=ax, shrink=0.8, label="P[a][b] − P[a][a] (percentage points); grey: missing")
    return fig
