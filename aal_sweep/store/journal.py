"""RESULTS/attempts/<trial_id>/: what each trial writes about itself, one small file per event.

Object stores cannot append, so each event ("start", "epoch", ...) is its own object, named so that a
listing sorts in time order: <time_ns>-<pid>-<seq>-<event>.json. A damaged entry is skipped with a
warning. Folders written by earlier versions (attempts/<trial_id>.jsonl, one line per event) are read too.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time

import pyarrow.fs as pafs

from aal_sweep.store.layout import ATTEMPTS_DIR
from aal_sweep.store.location import Location

log = logging.getLogger("aal_sweep.store")
_seq = itertools.count()


class Journal:
    def __init__(self, loc: Location):
        self.loc = loc

    def mark(self, trial_id: str, event: str, **fields) -> None:
        """Record one event of a trial (fields: plain JSON values)."""
        now = time.time_ns()
        name = f"{now:020d}-{os.getpid()}-{next(_seq) % 10000:04d}-{event}.json"
        doc = {"event": event, "time": now / 1e9, **fields}
        self.loc.write_bytes(f"{ATTEMPTS_DIR}/{trial_id}/{name}", json.dumps(doc).encode())

    def entries(self, trial_id: str) -> list[dict]:
        """The trial's events in the order they happened."""
        out = self._legacy(trial_id)
        files = [
            e
            for e in self.loc.list(f"{ATTEMPTS_DIR}/{trial_id}")
            if e.type == pafs.FileType.File and e.base_name.endswith(".json") and not e.base_name.startswith(".")
        ]
        for e in sorted(files, key=lambda e: _order(e.base_name)):
            try:
                doc = json.loads(self.loc.read_bytes(self.loc.name(e)))
                if not isinstance(doc, dict) or "event" not in doc:
                    raise ValueError("no event")
            except FileNotFoundError:
                continue
            except ValueError as err:
                log.warning("skipping damaged journal entry %s (%s)", self.loc.show(self.loc.name(e)), err)
                continue
            out.append(doc)
        return out

    def attempts(self, trial_id: str) -> int:
        return sum(1 for e in self.entries(trial_id) if e["event"] == "start")

    def trials(self) -> list[str]:
        """The trials that have a journal."""
        return sorted(
            {
                e.base_name.removesuffix(".jsonl")
                for e in self.loc.list(ATTEMPTS_DIR)
                if (e.type == pafs.FileType.Directory or e.base_name.endswith(".jsonl"))
                and not e.base_name.startswith(".")
            }
        )

    def _legacy(self, trial_id: str) -> list[dict]:
        rel = f"{ATTEMPTS_DIR}/{trial_id}.jsonl"
        try:
            text = self.loc.read_bytes(rel).decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:  # a torn last line of a killed writer
                log.warning("skipping damaged line %d of %s", i, self.loc.show(rel))
        return out


def _order(name: str) -> tuple:
    parts = name.split("-", 3)
    try:
        return int(parts[0]), int(parts[1]), int(parts[2]), name
    except (ValueError, IndexError):
        return 0, 0, 0, name
