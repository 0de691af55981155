"""`aal-sweep status RESULTS`: per phase done / failed / pending, and the missing cells (no Ray)."""

from __future__ import annotations

from pathlib import Path

import yaml

from aal_sweep.config import parse_config
from aal_sweep.errors import AalError
from aal_sweep.plan import plan_adversarial, plan_initial
from aal_sweep.results_dir import ResultsDir
from aal_sweep.store import SWEEP_FILE, read_trials


def sweep_status(results: str | Path) -> str:
    rd = ResultsDir(results)
    sweep_file = rd.path / SWEEP_FILE
    if not sweep_file.is_file():
        raise AalError(f"{rd.path}: no {SWEEP_FILE} here (not a results folder; run `aal-sweep run CONFIG` first)")
    doc = yaml.safe_load(sweep_file.read_text())
    cfg = parse_config(doc["config"], str(sweep_file), check_files=False)
    attributes = tuple(doc["attributes"])
    trials = read_trials(rd.path)
    status = dict(zip(trials["trial_id"], trials["status"]))
    lines = [f"{rd.path}: {len(attributes)} attributes, training hash {doc['training_hash']}"]
    initial = plan_initial(cfg, attributes)
    phases = [("single", [t for t in initial if t.kind == "single"]), ("pair", [t for t in initial if t.kind == "pair"])]
    if "adversarial" in cfg.phases:
        phases.append(("adversarial", plan_adversarial(cfg, rd.compute_partners(attributes))))
    for name, planned in phases:
        done = sum(status.get(t.trial_id) == "ok" for t in planned)
        failed = [t.trial_id for t in planned if status.get(t.trial_id) == "failed"]
        pending = len(planned) - done - len(failed)
        note = " (planned once single and pair are done)" if name == "adversarial" and not planned else ""
        lines.append(f"  {name:<12} {done:>4} done {len(failed):>4} failed {pending:>4} pending / {len(planned)}{note}")
        lines += [f"    failed: {t}" for t in failed]
    missing = [f"{t.attributes[0]}" + (f"|{t.attributes[1]}" if t.kind == "pair" else "")
               for t in initial if status.get(t.trial_id) != "ok"]
    if missing:
        lines.append(f"  missing cells ({len(missing)}; a pair fills two): {', '.join(missing)}")
    else:
        lines.append("  pair matrix complete")
    return "\n".join(lines)
