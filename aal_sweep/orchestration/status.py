"""`aal-sweep status RESULTS`: per kind done / failed / pending, incomplete rows, damaged files (no Ray, no torch)."""

from __future__ import annotations

from aal_sweep.analysis.partners import incomplete_rows
from aal_sweep.analysis.results import chosen_partners
from aal_sweep.orchestration.graph import from_store
from aal_sweep.store import Store

SHOWN = 20  # names listed per line before "… and N more": a 1,000-attribute sweep has 500,000 trials


def sweep_status(results) -> str:
    store = Store.open(results, warn=False)  # the problems are listed below, not warned about
    cfg, attributes = store.config, tuple(store.attributes)
    table = store.trials(["trial_id", "status"])
    failed_ids = set(table.loc[table["status"] != "ok", "trial_id"])
    done_ids = set(table["trial_id"]) - failed_ids
    lines = [f"{store.uri}: {len(attributes)} attributes, training hash {store.training_hash}"]
    partners = chosen_partners(store)
    graph = from_store(store, cfg, attributes, done=done_ids)
    initial = [t for t in graph.trials.values() if t.kind in ("single", "pair")]
    kinds = graph.kinds()
    per_row, undecided = graph.per_row_bound(), len(graph.undecided_rows())
    width = max(12, *(len(k) for k in kinds))
    for name in kinds:
        planned = [t for t in graph.trials.values() if t.kind == name]
        done = sum(t.trial_id in done_ids for t in planned)
        failed = [t.trial_id for t in planned if t.trial_id in failed_ids]
        pending = len(planned) - done - len(failed)
        waiting = per_row.get(name, 0) * undecided
        note = _NOTES.get(name, "") + (
            f"; at most {waiting} more once {undecided} row(s) are decided" if waiting else ""
        )
        lines.append(
            f"  {name:<{width}} {done:>4} done {len(failed):>4} failed {pending:>4} pending / {len(planned)}{note}"
        )
        lines += [f"    failed: {t}" for t in failed[:SHOWN]] + _more(failed)
    missing = [
        t.attributes[0] + (f"|{t.attributes[1]}" if t.kind == "pair" else "")
        for t in initial
        if t.trial_id not in done_ids
    ]
    if graph.screened:
        lines.append("  " + screened_line(graph))
    if missing:
        lines.append(f"  missing cells ({len(missing)}; a pair fills two): {_names(missing)}")
    elif graph.screened:
        lines.append("  every confirmed cell stored")
    else:
        lines.append("  pair matrix complete")
    incomplete = incomplete_rows(partners)
    if incomplete:
        lines.append(
            f"  incomplete rows ({len(incomplete)}; no partner until complete, or run --allow-partial): "
            f"{_names(list(incomplete))}"
        )
    problems = store.problems()
    if problems:
        lost = [p.trials for p in problems if p.segment]
        held = (
            ""
            if not lost
            else f", {sum(n or 0 for n in lost)}{'+' if None in lost else ''} trial(s) in "
            f"{len(lost)} segment(s) among them"
        )
        lines.append(f"  damaged or missing files ({len(problems)}{held}; counted as not done):")
        lines += [f"    {p.line()}" for p in problems[:SHOWN]] + _more(problems)
    return "\n".join(lines)


_NOTES = {  # how a phase's trials are planned, where that is not plain from the config
    "adversarial": " (released by complete rows of the pair matrix)",
    "adversarial_multiple": " (released by complete rows of the pair matrix: every negative partner)",
    "adversarial_shared": " (released by complete rows; each starts from its seed's stored multitask_all weights)",
}


def _names(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f", … and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _more(items: list) -> list[str]:
    return [f"    … and {len(items) - SHOWN} more"] if len(items) > SHOWN else []


def screened_line(graph) -> str:
    """What a screened pair phase has trained of the pair matrix, for `status` and the report."""
    p, m = graph.cfg.pairs, len(graph.attributes)
    total = m * (m - 1) // 2
    if graph.measured:
        from aal_sweep.analysis.strategies.base import Settings, summary

        return summary(p.strategy, graph.rounds, m, Settings.of(p))
    if graph.confirmed is None:
        return (
            f"screened pairs ({p.estimator}, confirm {p.confirm}, {p.rule}): no pair confirmed yet (waiting "
            f"for the estimates); unconfirmed cells stay missing"
        )
    n = len(graph.confirmed)
    return (
        f"screened pairs ({p.estimator}, confirm {p.confirm}, {p.rule}): {n} of {total} pairs confirmed "
        f"({100 * n / max(total, 1):.0f}% of the exhaustive pair trials); unconfirmed cells stay missing"
    )
