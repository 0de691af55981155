"""A results folder: its config, what its store holds, the trials' attempt journals, Tune's experiments.

    RESULTS/sweep.yaml                 training_hash, attributes (the sweep's order), config
    RESULTS/trials/*.parquet           the store (aal_sweep.store)
    RESULTS/partners.parquet           partners derived from the single and pair cells
    RESULTS/attempts/<trial>.jsonl     one line per start and per finished epoch of a trial, written by it
    RESULTS/tune/<phase>-<k>/          Tune's experiments; `.aal_complete` marks one that ran to the end
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from aal_sweep.config import SweepConfig, parse_config
from aal_sweep.errors import AalError, ConfigError
from aal_sweep.plan import Trial
from aal_sweep.query import derive_partners, pair_matrix
from aal_sweep.store import PARTNERS_FILE, SWEEP_FILE, TRIALS_DIR, atomic_write_bytes, read_trials, trial_path, write_table

COMPLETE = ".aal_complete"


class ResultsDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- config ------------------------------------------------------------------------------------

    def prepare(self, cfg: SweepConfig, attributes: tuple[str, ...], restart: bool = False) -> None:
        """Refuse other training settings over stored results; write sweep.yaml."""
        sweep_file = self.path / SWEEP_FILE
        if sweep_file.is_file() and self.has_results():
            old = yaml.safe_load(sweep_file.read_text()) or {}
            if old.get("training_hash") != cfg.training_hash() and not restart:
                changed = _changed_keys(old.get("config"), cfg)
                raise AalError(
                    f"{self.path} holds results of other training settings (changed: {', '.join(changed) or 'unknown'}); "
                    f"use a new results folder (--results DIR) or pass --restart to discard the old results")
        if restart:
            for name in (TRIALS_DIR, "tune", "attempts"):
                shutil.rmtree(self.path / name, ignore_errors=True)
            (self.path / PARTNERS_FILE).unlink(missing_ok=True)
        cfg_dict = cfg.to_dict()
        cfg_dict["results"] = str(self.path)
        cfg_dict["dataset"]["attributes"] = list(attributes)
        doc = {"training_hash": cfg.training_hash(), "attributes": list(attributes), "config": cfg_dict}
        atomic_write_bytes(sweep_file, yaml.safe_dump(doc, sort_keys=False).encode())

    def has_results(self) -> bool:
        return any((self.path / TRIALS_DIR).glob("*.parquet"))

    # -- the store -----------------------------------------------------------------------------------

    def is_done(self, trial_id: str) -> bool:
        path = trial_path(self.path, trial_id)
        if not path.is_file():
            return False
        return set(pq.read_table(path, columns=["status"]).column("status").to_pylist()) == {"ok"}

    def done_ids(self) -> set[str]:
        return {p.stem for p in (self.path / TRIALS_DIR).glob("*.parquet") if self.is_done(p.stem)}

    def anything_pending(self, trials: list[Trial]) -> bool:
        done = self.done_ids()
        return any(t.trial_id not in done for t in trials)

    def compute_partners(self, attributes) -> pd.DataFrame:
        return derive_partners(pair_matrix(read_trials(self.path), list(attributes)))

    def write_partners(self, attributes) -> pd.DataFrame:
        partners = self.compute_partners(attributes)
        missing = sorted({f"{r.attribute}|{m}" for r in partners.itertuples() if isinstance(r.missing, str)
                          for m in r.missing.split(",")})
        if missing:  # the CLI's own output: the user must see which cells the partners ignore
            print(f"partners: skipped {len(missing)} missing cell(s) (row|column): {', '.join(missing)}")
        write_table(self.path / PARTNERS_FILE, pa.Table.from_pandas(partners, preserve_index=False))
        return partners

    # -- what each trial writes about itself -----------------------------------------------------------

    def _journal(self, trial_id: str) -> Path:
        return self.path / "attempts" / f"{trial_id}.jsonl"

    def mark(self, trial_id: str, event: str, **fields) -> None:
        """Append one line to the trial's journal (one writer per trial at a time; O_APPEND)."""
        path = self._journal(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")

    def journal(self, trial_id: str) -> list[dict]:
        path = self._journal(trial_id)
        if not path.is_file():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def attempts(self, trial_id: str) -> int:
        return sum(1 for e in self.journal(trial_id) if e["event"] == "start")

    # -- Tune's experiments ------------------------------------------------------------------------

    def _experiments(self, phase: str) -> list[Path]:
        slug = _slug(phase)
        root = self.path / "tune"
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[0] == slug]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))

    def unfinished_experiments(self, phase: str) -> list[Path]:
        return [p for p in self._experiments(phase) if not (p / COMPLETE).exists()]

    def new_experiment(self, phase: str) -> Path:
        existing = self._experiments(phase)
        k = int(existing[-1].name.rsplit("-", 1)[1]) + 1 if existing else 1
        path = self.path / "tune" / f"{_slug(phase)}-{k}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def close_experiment(self, path: Path) -> None:
        """Mark an experiment finished and drop its checkpoints: every result it made is in the store."""
        if path.is_dir():
            for ckpt in path.glob("*/checkpoint_*"):
                shutil.rmtree(ckpt, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        (path / COMPLETE).touch()


def _slug(phase: str) -> str:
    return phase.replace("+", "_")


def _changed_keys(old_config, cfg: SweepConfig) -> list[str]:
    """The training settings that differ between a stored config mapping and `cfg`."""
    try:
        old = parse_config(old_config, check_files=False).training_settings()
    except (ConfigError, TypeError, AttributeError):  # written by another version: no key-level diff
        return []
    new = cfg.training_settings()
    return [k for k in new if old.get(k) != new[k]]
