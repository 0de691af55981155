"""The driver's Tune callbacks: the progress line, failed trials stored, the store compacted, the embedded
Ray's processes recorded, and every trial stopped once the results folder's lease is lost.

The progress line, for the whole sweep: the first once a trial has started, then one per trial that ends
or fails (or a row's trials released):

    [sweep] 7/18 done, 2 running, 0 failed (single 4/4, pair 3/6, adversarial 0/8 at most); 41s, ~1m10s left

Counts come from the graph (orchestration/graph.py), so trials a row has not released yet count at their
upper bound ("at most"). Time left: the epochs still to train at the rate epochs were trained so far.
"""

from __future__ import annotations

import os
import time

from ray import cloudpickle, tune
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.utils.log import Verbosity, has_verbosity

from aal_sweep.orchestration.events import Events
from aal_sweep.orchestration.graph import Graph
from aal_sweep.orchestration.ray_processes import Recorder
from aal_sweep.store import Store
from aal_sweep.store.lease import LeaseLost

SHORT = {"multitask_all": "multitask_all", "adversarial_multiple": "adv_multiple", "adversarial_shared": "adv_shared"}


class Progress(tune.Callback):
    def __init__(self, graph: Graph, epochs: int, events: Events, trial_of):
        """`trial_of(tune_trial_id)`: our trial id (the searcher's map), for the resume notes."""
        self.graph, self.epochs, self.events, self.trial_of = graph, epochs, events, trial_of

    def setup(self, **info):
        self.start = time.monotonic()
        self.trained = 0  # epochs reported in this run
        self.epochs_in_flight: dict[str, int] = {}  # running trial (Tune id) -> epochs it has finished
        self.last: tuple | None = None  # the counts of the last line said

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("resume_note"):
            ours = trial.config.get("trial", {}).get("trial_id", trial.trial_id)
            self.events.info(f"[sweep] {ours}: {result['resume_note']}", kind="resume")
        if "epoch" in result:
            seen = int(result["epoch"]) + 1
            self.trained += max(0, seen - self.epochs_in_flight.get(trial.trial_id, seen - 1))
            self.epochs_in_flight[trial.trial_id] = seen

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.epochs_in_flight.pop(trial.trial_id, None)
        self._say()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.epochs_in_flight.pop(trial.trial_id, None)
        self._say()

    def line(self) -> tuple[str, tuple]:
        """The line, and the counts that decide whether it is new: done, failed and the kinds' sizes, not
        `running` (a finished trial's slot is taken by the next one a moment later: 1 then 2 running at the
        same count, two lines for one change)."""
        counts = self.graph.counts()
        done = sum(c["done"] for c in counts.values())
        running = sum(c["running"] for c in counts.values())
        failed = sum(c["failed"] for c in counts.values())
        total = sum(c["done"] + c["running"] + c["failed"] + c["pending"] + c["waiting"] for c in counts.values())
        kinds = []
        for kind, c in counts.items():
            known = c["done"] + c["running"] + c["failed"] + c["pending"]
            at_most = " at most" if c["waiting"] else ""
            kinds.append(f"{SHORT.get(kind, kind)} {c['done']}/{known + c['waiting']}{at_most}")
        elapsed = time.monotonic() - self.start
        left = (total - done - failed) * self.epochs - sum(self.epochs_in_flight.values())
        eta = f", ~{_fmt_s(left * elapsed / self.trained)} left" if self.trained and left > 0 else ""
        line = (
            f"[sweep] {done}/{total} done, {running} running, {failed} failed ({', '.join(kinds)}); "
            f"{_fmt_s(elapsed)}{eta}"
        )
        return line, (done, failed, total, tuple(kinds))

    def _say(self) -> None:
        line, key = self.line()
        if key != self.last:  # one line per change of the counts that matter
            self.last = key
            self.events.info(line, kind="progress")


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class TrialLines(TrialProgressCallback):
    """Tune's per-trial result lines (its default callback, replaced by this one) at -vv only: at any
    verbosity it printed "Trial X completed. Last result: " on stdout for a trial that reported nothing
    (one resumed with every epoch already trained). Only the CLI prints."""

    def _print(self, msg: str):
        if has_verbosity(Verbosity.V2_TRIAL_NORM):
            super()._print(msg)


class StoreFailures(tune.Callback):
    """A trial Tune gave up on (its retries spent) is stored with status=failed and its error."""

    def __init__(self, store_failure):
        # (trial id, its error as `Type: message`, its error file relative to the Tune storage): the driver
        # stores the failed rows and says so in one line
        self.store_failure = store_failure

    def on_trial_error(self, iteration, trials, trial, **info):
        where = f"{trial.storage.experiment_dir_name}/{trial.storage.trial_dir_name}/{ERROR_FILE}"
        self.store_failure(trial.config["trial"]["trial_id"], trial_error(trial), where)


class Tick(tune.Callback):
    """`tick()` on every step of Tune's loop: what the driver held back waits for time, not for the next
    trial to end (a partners.parquet write postponed by its time budget, while every running trial is
    held for minutes, would otherwise stay stale until one ends)."""

    def __init__(self, tick):
        self.tick = tick

    def on_step(self, iteration, trials, **info):
        self.tick()


class Compaction(tune.Callback):
    """Compact the store's inbox every `every` finished trials, so a long sweep keeps few files."""

    def __init__(self, store: Store, every: int):
        self.store, self.every, self.count = store, every, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.count += 1
        if self.count % self.every == 0:
            try:
                self.store.compact()
            except LeaseLost:  # another driver's store now: the run ends after Tune stops
                return


class StopAll(tune.stopper.Stopper):
    """Stop every trial once `lost()` says so: the lease is lost (another driver holds the folder and
    resumes them) or Ctrl-C reached the driver."""

    def __init__(self, lost):
        self.lost = lost

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.lost()


class RecordRay(tune.Callback):
    """Keep the embedded Ray's process record current as workers start (orchestration/ray_processes.py)."""

    def __init__(self, recorder: Recorder, every_s: float = 5.0):
        self.recorder, self.every_s, self.last = recorder, every_s, 0.0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.last = 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.recorder.update()


ERROR_FILE = "error.txt"  # Tune's, in the trial's folder: every attempt's traceback


def last_exception(trial) -> BaseException | None:
    """The exception of the trial's last failure, which Tune pickles beside its error text (Trial.handle_error),
    or None: none pickled, or a class this process cannot rebuild (the error text then says it)."""
    path = trial.pickled_error_file
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except Exception:
        return None


def trial_error(trial) -> str:
    """A failed trial's last error in one line, `Type: message`: from the exception Tune pickled (a task's
    error carries the trial's own exception as its `cause`; a lost actor's is Ray's own), else the last
    line of Tune's error file. Tune writes both to the trial's local folder before it tells the callbacks
    (their copies in the experiment's storage are synced later)."""
    error = last_exception(trial)
    if error is not None:
        error = getattr(error, "cause", None) or error
        return f"{type(error).__name__}: {_first_line(str(error))}"
    path = trial.error_file
    if not path or not os.path.isfile(path):
        return "unknown error (Tune recorded none)"
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error (Tune recorded none)"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"
