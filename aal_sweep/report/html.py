"""One self-contained index.html (and its figures as PNG) for a results folder: `write_report(results, out)`.

    write_report(open_results("results/demo"), "report/", compare="paper-celeba")   # or s3://bucket/prefix

The page embeds its figures as base64 data URIs, so it can be mailed or attached as one file; the PNGs
are written beside it for slides. Everything reads validation accuracy, as the protocol selects on it;
the test accuracy of the same models appears in the means table.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from aal_sweep.analysis.matrix import pair_matrix, strongest_negative_pairs
from aal_sweep.analysis.pairs import UNAVAILABLE, adversarial_gains
from aal_sweep.analysis.partners import derive_partners, partner_statistics, select_adversarial, significance_summary
from aal_sweep.analysis.results import Results, expected_of
from aal_sweep.analysis.summary import partners_table, with_statistics
from aal_sweep.analysis.variants import variants_table
from aal_sweep.errors import AalError
from aal_sweep.report.figures import LARGE_M, TOP_EFFECTS, accuracy_bars, drop_heatmap, label_scatter
from aal_sweep.report.formats import MISSING, matrix_display, partners_display, percent, render_matrix
from aal_sweep.report.tables import COMPARE, check_compare, comparison, display, load_reference, with_paper
from aal_sweep.store.layout import SWEEP_FILE

TOP_K = 30  # the strongest negative pairs listed above LARGE_M attributes


def write_report(results: Results, out: str | Path, compare: str | None = None, progress=None) -> Path:
    """Write the figures and index.html into `out` (created if needed); return the index.html path.
    `progress(done, total)` follows its REPORT_STEPS steps (seconds each at 1,000 attributes)."""
    if compare is not None:
        check_compare(compare)
    step = progress or (lambda done, total: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step(0, REPORT_STEPS)
    # read once each: the narrow rows the tables use, and the rows with per-image bits the statistics use
    # (at 1,000 attributes the bits are 5 GB: never turned into Python objects, never read twice)
    trials = results.store.query_rows()
    rows = results.store.stats_rows()
    step(1, REPORT_STEPS)
    attrs, selection = results.attributes, results.config.adversarial.lambda_selection
    matrix = pair_matrix(trials, attrs, "val_acc")
    sig = significance(results, rows, matrix)
    step(2, REPORT_STEPS)
    table = with_statistics(partners_table(trials, attrs, "val_acc", selection, partners=sig["chosen"]), sig["chosen"])
    test_table = partners_table(trials, attrs, "test_acc", selection, partners=sig["chosen"])

    figures = {
        "drop_matrix.png": drop_heatmap(matrix, table, sig["significant"]),
        "accuracy_bars.png": accuracy_bars(table, matrix, sig["val_gains"]),
    }
    labels, label_note = train_labels(results)
    if labels is not None:
        figures["label_correlation.png"] = label_scatter(matrix, labels)
    images = {name: _save(fig, out / name) for name, fig in figures.items()}
    captions = {"accuracy_bars.png": _bars_caption(len(attrs))}
    step(3, REPORT_STEPS)

    parts = [
        _header(results, matrix, trials),
        _means_section(table, test_table, rows),
        _variants_section(results, trials, sig["chosen"], compare),
        _figures_section(images, label_note, captions),
        _significance_section(sig, results.config.partners),
        _section("Partners (Table 3)", _partners_caption(selection), _html_table(partners_display(table))),
    ]
    screening = results.screening()
    if screening is not None:
        parts.append(_screening_section(screening))
    if compare:
        parts.append(_compare_section(compare, table, matrix))
    parts += [
        _matrix_section(matrix, out),
        _section(
            "Run times",
            "Per trial wall-clock training time (<code>train_seconds</code>).",
            _html_table(run_times(results.trials(["trial_id", "kind", "status", "train_seconds"]))),
        ),
        _section(
            "Config",
            f"The resolved config from <code>{html.escape(results.show(SWEEP_FILE))}</code>.",
            f"<pre>{html.escape(yaml.safe_dump(results.config.to_dict(), sort_keys=False))}</pre>",
        ),
    ]
    index = out / "index.html"
    index.write_text(_page(f"AAL sweep report: {results.config.name}", "\n".join(parts)), encoding="utf-8")
    step(REPORT_STEPS, REPORT_STEPS)
    return index


REPORT_STEPS = 4  # read the rows, the statistics, the figures, the page


def significance(results: Results, trials: pd.DataFrame, matrix: pd.DataFrame) -> dict:
    """Everything the report says about significance, computed once from the rows already read: the
    pairs table, the rule's partners with their statistics, an M x M mask of significant cells, the
    adversarial gains (test split, for the table; validation, for Fig. 2's whiskers) and the summary."""
    rule, attrs = results.config.partners, results.attributes
    selection = results.config.adversarial.lambda_selection
    expected = expected_of(results.store, attrs)  # a screened sweep decides from the cells it trained
    choice = partner_statistics(derive_partners(matrix, expected=expected), trials, attrs, rule)
    pairs, chosen = choice.pairs, choice.chosen
    adversarial = select_adversarial(trials, chosen, selection)
    gains = adversarial_gains(trials, adversarial, rule.alpha, rule.correction)
    val_gains = adversarial_gains(trials, adversarial, rule.alpha, rule.correction, split="val")
    # the M x M mask by position (a pivot of a million rows costs seconds); unknown is not significant
    index = pd.Index(attrs)
    mask = np.zeros((len(attrs), len(attrs)), dtype=bool)
    sig_rows = pairs["significant"].fillna(False).to_numpy(dtype=bool)
    a, b = index.get_indexer(pairs["attribute"][sig_rows]), index.get_indexer(pairs["partner"][sig_rows])
    mask[a[(a >= 0) & (b >= 0)], b[(a >= 0) & (b >= 0)]] = True
    available = bool((pairs["test"] != UNAVAILABLE).any() and pairs["p_value"].notna().any())
    return {
        "pairs": pairs,
        "chosen": chosen,
        "gains": gains,
        "val_gains": val_gains,
        "significant": mask if available else None,  # unknown significance fades nothing
        "summary": significance_summary(choice.derived, pairs, choice.baseline, gains, rule.alpha),
        "available": available,
    }


# ---- what the page shows beside the figures ---------------------------------------------------


def train_labels(results: Results) -> tuple[np.ndarray | None, str | None]:
    """The training split's 0/1 labels in the sweep's attribute order, or None and why not."""
    from aal_sweep.data.index import load_index

    root = Path(results.config.dataset.root)
    if not root.is_dir():
        return None, (
            f"The label-correlation figure (Fig. 3) is left out: the dataset folder {root} is not on "
            f"this machine. Run the report where the dataset is to get it."
        )
    try:
        labels = load_index(results.config.dataset.source(), results.attributes, check_images=False).labels["train"]
    except (AalError, OSError) as e:
        return None, f"The label-correlation figure (Fig. 3) is left out: {e}"
    if len(labels) < 2:
        return None, f"The label-correlation figure (Fig. 3) is left out: {root} has {len(labels)} training image(s)."
    return labels, None


def _save(fig: Figure, path: Path) -> bytes:
    """Write the PNG and return its bytes for embedding (Figure.savefig needs no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def run_times(trials: pd.DataFrame) -> pd.DataFrame:
    """Per phase: trials ok / failed and their training time; a pair trial's two rows count once."""
    per_trial = trials.drop_duplicates("trial_id")
    rows = []
    variants = [
        k for k in ("multitask_all", "adversarial_multiple", "adversarial_shared") if (per_trial["kind"] == k).any()
    ]
    for kind in ("single", "pair", "adversarial", *variants, "total"):
        t = per_trial if kind == "total" else per_trial[per_trial["kind"] == kind]
        secs = t["train_seconds"].dropna()
        rows.append(
            {
                "phase": kind,
                "ok": int((t["status"] == "ok").sum()),
                "failed": int((t["status"] != "ok").sum()),
                "total time": _duration(secs.sum()) if len(secs) else MISSING,
                "median per trial": _duration(secs.median()) if len(secs) else MISSING,
                "longest": _duration(secs.max()) if len(secs) else MISSING,
            }
        )
    return pd.DataFrame(rows)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


# ---- HTML ---------------------------------------------------------------------------------------


def _header(results: Results, matrix: pd.DataFrame, trials: pd.DataFrame) -> str:
    m = len(matrix)
    singles = int(np.isfinite(np.diag(matrix.to_numpy(float))).sum())
    pairs = int(matrix.notna().to_numpy().sum()) - singles
    ok = trials[trials["status"] == "ok"]
    adv = ok.loc[ok["kind"] == "adversarial", "attribute"].nunique()
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    facts = [
        f"results <code>{html.escape(results.uri)}</code>",
        f"training hash <code>{html.escape(str(results.training_hash))}</code>",
        f"{m} attributes",
        f"single-task cells {singles} of {m}",
        f"pair cells {pairs} of {m * (m - 1)}",
        f"attributes with adversarial runs {adv}",
        f"generated {when}",
    ]
    partial = (
        ""
        if singles == m and pairs == m * (m - 1)
        else (
            "<p class=note>The store is partial: missing cells are blank (—), never 0, and partners may change "
            "as cells arrive.</p>"
        )
    )
    return f"<h1>AAL sweep report: {html.escape(results.config.name)}</h1><p>{' · '.join(facts)}</p>{partial}"


def _means_section(table: pd.DataFrame, test_table: pd.DataFrame, trials: pd.DataFrame) -> str:
    cols = ("single", "multi", "adversarial")
    rows = [
        {"split": split, **{c: percent(t.iloc[-1][c]) for c in cols}}
        for split, t in (("validation", table), ("test", test_table))
    ]
    note = "Mean accuracy (%) over attributes; an attribute without a partner counts with its single-task accuracy."
    n_val = trials["n_val"].dropna()
    single = table.iloc[-1]["single"]
    if len(n_val) and pd.notna(single):
        se = 100 * np.sqrt(single * (1 - single) / n_val.median())
        note += (
            f" One standard error of one accuracy at {100 * single:.1f}% on {int(n_val.median())} validation "
            f"images is {se:.2f} points: single-seed differences smaller than that are noise."
        )
    return _section("Means", note, _html_table(pd.DataFrame(rows), mean_last=False))


def _variants_section(results: Results, trials: pd.DataFrame, chosen: pd.DataFrame, compare: str | None) -> str:
    """Table 1: every variant's mean accuracy (aal_sweep.analysis.variants), beside the paper's with --compare."""
    cfg = results.config
    t = variants_table(trials, results.attributes, chosen, cfg.adversarial.lambda_selection)
    if compare:
        t = with_paper(t, compare, cfg.adversarial.method)
    note = (
        "Mean accuracy (%) of each variant over the attributes it covers (an attribute no partner lowers "
        "counts with its single-task accuracy, as in the paper's mean rows); lambda chosen on validation. "
        "<i>not run</i>: the results hold none of that variant. Also <code>aal-sweep table</code>."
    )
    return _section("Variants (Table 1)", note, _html_table(display(t, cfg.adversarial.method), mean_last=False))


def _bars_caption(m: int) -> str | None:
    """Fig. 2's caption above LARGE_M attributes, where it shows the strongest effects, not every bar."""
    if m <= LARGE_M:
        return None
    return (
        f"Like the paper's Fig. 2, for {m} attributes: three bars per attribute cannot be read above {LARGE_M}, "
        f"so the left panel shows the {TOP_EFFECTS} attributes whose partner lowers them most (multi-task with "
        f"partner minus single, with its interval, and the adversarial model's change), the right panels the "
        f"distributions of both changes over every attribute with a partner and of the single-task accuracies. "
        f"Every attribute's numbers are in the partners table below and in <code>aal-sweep partners</code>."
    )


def _figures_section(images: dict[str, bytes], label_note: str | None, override: dict | None = None) -> str:
    captions = {
        "drop_matrix.png": "Accuracy of the row attribute when trained with the column attribute, minus its "
        "single-task accuracy. Red: negative transfer. Boxed: the most negative partner.",
        "accuracy_bars.png": "Like the paper's Fig. 2. Attributes without a partner show only the single bar.",
        "label_correlation.png": "Like the paper's Fig. 3 (the paper finds r = 0.004 on CelebA).",
    } | {name: text for name, text in (override or {}).items() if text}
    body = "".join(
        f"<figure><img alt='{n}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        f"<figcaption>{captions[n]} ({n})</figcaption></figure>"
        for n, b in images.items()
    )
    if label_note:
        body += f"<p class=note>{html.escape(label_note)}</p>"
    return f"<h2>Figures</h2>{body}"


def _significance_section(sig: dict, rule) -> str:
    if not sig["available"]:
        return _section(
            "Significance",
            "Unavailable: the store's rows carry no per-image correctness "
            "(<code>val_correct</code>), as results written before it was recorded do; rerun the "
            "sweep with this version to get intervals and tests.",
            "",
        )
    note = (
        f"Partner rule <code>{rule.rule}</code>, alpha {rule.alpha:g}, {rule.correction} adjustment within "
        f"each attribute's row of candidates. One seed: percentile bootstrap interval over images and the "
        f"exact McNemar test; several seeds: a t test whose variance adds the image-level and the seed-level "
        f"parts (see docs/statistics.md). Adversarial gains are tested on the test split (lambda was chosen "
        f"on validation), adjusted across attributes."
    )
    return _section("Significance", note, _html_table(sig["summary"], mean_last=False))


def _partners_caption(selection: str) -> str:
    return (
        f"Validation accuracy (%); differences in percentage points; lambda chosen {selection.replace('_', ' ')} "
        "on validation accuracy. — : no partner lowers the attribute, or the cell is not trained yet."
    )


def _matrix_section(matrix: pd.DataFrame, out: Path) -> str:
    """Table 4 as a grid up to LARGE_M attributes; above, the strongest negative pairs and the full
    matrix as pair_matrix.csv beside the page (a million-cell HTML table helps nobody)."""
    if len(matrix) <= LARGE_M:
        return _section("Pair matrix (Table 4)", _matrix_caption(), _html_table(matrix_display(matrix), wide=True))
    (out / "pair_matrix.csv").write_text(render_matrix(matrix, "csv") + "\n", encoding="utf-8")
    top = strongest_negative_pairs(matrix, TOP_K)
    shown = pd.DataFrame(
        {
            "attribute": top["attribute"],
            "partner": top["partner"],
            "single %": top["single"].map(percent),
            "multi %": top["multi"].map(percent),
            "multi-single": top["drop"].map(lambda v: percent(v, signed=True)),
        }
    )
    caption = (
        f"The {len(top)} most negative cells of the {len(matrix)} x {len(matrix)} pair matrix (validation "
        f"accuracy, %), most negative first. The whole matrix is in <code>pair_matrix.csv</code> beside "
        f"this page (fractions), and `aal-sweep matrix RESULTS --format csv` prints it."
    )
    return _section("Strongest negative pairs (pair matrix, Table 4)", caption, _html_table(shown, mean_last=False))


def _matrix_caption() -> str:
    return (
        "Validation accuracy (%). Row: the attribute measured; column <i>j</i>: trained with attribute "
        "<i>j</i>; diagonal: single task. The mean row averages each column."
    )


def _compare_section(name: str, table: pd.DataFrame, matrix: pd.DataFrame) -> str:
    ref = load_reference(name)
    cmp = comparison(table, matrix, ref)
    matched = cmp[cmp["attribute"] != "mean"]
    agree = int((matched["partner (paper)"] == matched["partner (ours)"]).sum())
    title = COMPARE[name].title
    note = (
        f"{len(matched)} of this sweep's {len(table) - 1} attributes matched the {len(ref)} rows of {title} by "
        f"name (case, spaces and punctuation ignored); {agree} of those have the paper's partner (or, like the "
        f"paper, none). The mean row "
        f"averages the matched rows only, on both sides."
    )
    return _section(f"Compared with {title}", note, _html_table(cmp))


def _screening_section(screening: dict) -> str:
    """A screened pair phase: how it screened, what it trained, each attribute's candidates and scores (a
    static screening) or how each row was decided (a measured one)."""
    if "evidence" in screening:
        note = (
            html.escape(screening["summary"]) + ". Each row: how it was decided (on its evidence, complete, or at "
            "the end of the screening), in which round, on how many measured partners, and the model's "
            "probability then that its exhaustive partner is among them. Partners come from measured cells only; "
            "cells never trained are blank. See docs/screening.md."
        )
        return _section("Screened pair phase", note, _html_table(screening["evidence"], mean_last=False))
    c = screening["candidates"]
    rows = pd.DataFrame(
        {
            "attribute": c["attribute"],
            "rank": c["rank"],
            "candidate": c["partner"],
            "score": [f"{v:+.4g}" for v in c["score"]],
        }
    )
    note = (
        html.escape(screening["summary"]) + ". Scores are the estimator's (negative = the candidate is "
        "estimated to hurt the attribute); partners come from the confirmed pairs only, and the matrix's "
        "unconfirmed cells are blank. See docs/screening.md; <code>aal-sweep agreement</code> measures it "
        "against an exhaustive sweep."
    )
    return _section("Screened pair phase", note, _html_table(rows, mean_last=False))


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
    return (
        f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
