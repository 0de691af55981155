"""What a read of RESULTS/trials/ could not use, and what `run` did about it: plain records with their lines.

    store.problems()   # [Problem]: damaged files, and segments the manifest names that are gone
    store.repair()     # [Repair]: each damaged or missing segment rebuilt from what survives (the driver)

The readers (status, the queries) report Problems and go on with the rest; `run` repairs (store/trials.py)
and says, per segment, what it recovered and what it trains again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aal_sweep.store.layout import MERGED, QUARANTINE

SHOWN = 20  # trial ids named per line before "… and N more"


def held(trials: int | None) -> str:
    return "an unknown number of trials (a manifest of an earlier version)" if trials is None else f"{trials} trial(s)"


def names(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (f", … and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


@dataclass(frozen=True)
class Problem:
    """A file under trials/ a read skipped. `path` is as the user reads it (local path or s3://...)."""

    path: str
    why: str  # "missing" for a segment the manifest names that is gone; else what is wrong with the file
    segment: bool = False  # a compacted segment (many trials), not one trial's inbox file
    trials: int | None = None  # the trials a segment held, from the manifest (None: not recorded)
    rel: str = field(default="", compare=False, repr=False)  # the path relative to the results folder

    @property
    def missing(self) -> bool:
        return self.why == "missing"

    @property
    def trial(self) -> str | None:
        """The trial whose inbox file this is by its name (`<trial_id>.parquet`); None for a segment or a
        file of another name (put there by hand or by another tool: no trial's)."""
        name = self.rel.rsplit("/", 1)[-1]
        return None if self.segment or not name.endswith(".parquet") else name[: -len(".parquet")]

    def line(self) -> str:
        """What a reader says: what is wrong, what it costs, what fixes it."""
        if self.missing:
            return (
                f"{self.path} is missing (the manifest names it; it held {held(self.trials)}): they count as "
                f"not done; `aal-sweep run` rebuilds what {MERGED}/ still holds and trains the rest again"
            )
        if self.segment:
            return (
                f"skipping {self.path}: {self.why}; it holds {held(self.trials)}, counted as not done "
                f"(`aal-sweep run` moves it to {QUARANTINE}/, rebuilds what {MERGED}/ still holds and trains "
                f"the rest again)"
            )
        if self.trial is None:
            return f"skipping {self.path}: {self.why} (no trial's file: `aal-sweep run` moves it to {QUARANTINE}/)"
        return f"skipping {self.path}: {self.why} (`aal-sweep run` moves it to {QUARANTINE}/ and reruns its trial)"


@dataclass(frozen=True)
class Moved:
    """A damaged or foreign file `run` moved to trials/.quarantine/ (what it says of it: state.py)."""

    problem: Problem
    to: str  # where it went, as the user reads it


@dataclass(frozen=True)
class Repair:
    """One damaged or missing segment, after `run` dealt with it."""

    problem: Problem
    recovered: list[str] = field(default_factory=list)  # trial ids rebuilt from trials/.merged/
    lost: list[str] | None = None  # trial ids trained again; None when the segment's ids were not recorded
    moved_to: str | None = None  # where the damaged file went (None: it was missing)
    rebuilt: str | None = None  # the new segment holding the recovered trials

    @property
    def n_lost(self) -> int | None:
        if self.lost is not None:
            return len(self.lost)
        return None if self.problem.trials is None else max(self.problem.trials - len(self.recovered), 0)

    def line(self) -> str:
        p = self.problem
        what = "missing" if p.missing else f"damaged ({p.why}), moved aside to {self.moved_to}"
        got = (
            f"recovered {len(self.recovered)} from {MERGED}/ into {self.rebuilt}"
            if self.recovered
            else f"nothing to recover in {MERGED}/"
        )
        if self.lost:
            again = f"{len(self.lost)} trained again: {names(self.lost)}"
        elif self.lost is not None or self.n_lost == 0:
            again = "none to train again"
        elif self.n_lost is None:
            again = "the rest (not recorded which) trained again"
        else:
            again = f"{self.n_lost} trained again (not recorded which: they are among the pending trials)"
        return f"{p.path}: {what}; it held {held(p.trials)}: {got}; {again}"
