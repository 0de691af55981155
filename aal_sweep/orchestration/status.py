"""`aal-sweep status RESULTS`: per phase done / failed / pending, incomplete rows, damaged files (no Ray, no torch)."""

from __future__ import annotations

from aal_sweep.orchestration.phases import plan_phases
from aal_sweep.analysis.partners import incomplete_rows
from aal_sweep.analysis.results import chosen_partners
from aal_sweep.store import Store

SHOWN = 20  # names listed per line before "… and N more": a 1,000-attribute sweep has 500,000 trials


def sweep_status(results) -> str:
    store = Store.open(results)
    cfg, attributes = store.config, tuple(store.attributes)
    table = store.trials(["trial_id", "status"])
    failed_ids = set(table.loc[table["status"] != "ok", "trial_id"])
    done_ids = set(table["trial_id"]) - failed_ids
    lines = [f"{store.uri}: {len(attributes)} attributes, training hash {store.training_hash}"]
    partners = chosen_partners(store)
    planned_phases = plan_phases(cfg, store, attributes, partners=partners)
    initial = planned_phases.get("single", []) + planned_phases.get("pair", [])
    phases = [("single", planned_phases.get("single", [])), ("pair", planned_phases.get("pair", []))]
    phases += [(p, trials) for p, trials in planned_phases.items() if p not in ("single", "pair")]
    width = max(12, *(len(name) for name, _ in phases))
    for name, planned in phases:
        done = sum(t.trial_id in done_ids for t in planned)
        failed = [t.trial_id for t in planned if t.trial_id in failed_ids]
        pending = len(planned) - done - len(failed)
        note = _NOTES.get(name, "")
        lines.append(f"  {name:<{width}} {done:>4} done {len(failed):>4} failed {pending:>4} pending / {len(planned)}{note}")
        lines += [f"    failed: {t}" for t in failed[:SHOWN]] + _more(failed)
    missing = [t.attributes[0] + (f"|{t.attributes[1]}" if t.kind == "pair" else "")
               for t in initial if t.trial_id not in done_ids]
    if missing:
        lines.append(f"  missing cells ({len(missing)}; a pair fills two): {_names(missing)}")
    else:
        lines.append("  pair matrix complete")
    incomplete = incomplete_rows(partners)
    if incomplete:
        lines.append(f"  incomplete rows ({len(incomplete)}; no partner until complete, or run --allow-partial): "
                     f"{_names(list(incomplete))}")
    damaged = store.damaged()
    if damaged:
        lines.append(f"  damaged files ({len(damaged)}; `aal-sweep run` moves them to trials/.quarantine/ and "
                     f"reruns their trials):")
        lines += [f"    {path}: {why}" for path, why in damaged[:SHOWN]] + _more(damaged)
    return "\n".join(lines)


_NOTES = {  # how a phase's trials are planned, where that is not plain from the config
    "adversarial": " (planned from complete rows of the pair matrix)",
    "adversarial_multiple": " (planned from complete rows of the pair matrix: every negative partner)",
    "adversarial_shared": " (planned from complete rows; each starts from its seed's stored multitask_all weights)",
}


def _names(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f", … and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _more(items: list) -> list[str]:
    return [f"    … and {len(items) - SHOWN} more"] if len(items) > SHOWN else []
