"""What runs on a Ray worker: one trial of the sweep, a thin Tune adapter around `aal_sweep.train.fit`.

The trial loads the (node-local) decode cache, continues from its own newest epoch checkpoint
(orchestration/checkpoints.py says why not Tune's), reports each epoch to Tune, and writes its rows to
the store itself, atomically, one file per trial: a finished trial survives a kill -9 of the driver.

Test hooks, read on the driver and handed to every trial (so they reach the workers of a cluster):
    AAL_SWEEP_INJECT_FAULT=SUBSTRING   trials whose id contains it fail at start (chaos tests)
    AAL_SWEEP_HOLD=SUBSTRING@EPOCH     trials whose id contains it stop before training epoch EPOCH (its
    AAL_SWEEP_HOLD_DIR=FOLDER          earlier epochs checkpointed and journaled), write FOLDER/<trial id>.held
                                       (JSON: pid, node_id, epoch, attempt) and wait until FOLDER/release or
                                       FOLDER/<trial id>.release exists. A test reaches "a trial between two
                                       epochs" by this event instead of by racing the clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from aal_sweep.config import SweepConfig, parse_config
from aal_sweep.errors import AalError, DataError
from aal_sweep.kinds import ADVERSARIAL_SHARED, LOOKAHEAD, MULTITASK_ALL
from aal_sweep.orchestration.checkpoints import TrialCheckpoints
from aal_sweep.orchestration.ray_processes import die_with_raylet
from aal_sweep.orchestration.trials import Trial, multitask_all_of
from aal_sweep.store import Store, failed_rows, result_rows
from aal_sweep.store.layout import weights_file

log = logging.getLogger(__name__)
DATA_ERROR = "data_error"  # the metric a trial reports when it stored its own failure (a bad file)
FAULT_ENV, HOLD_ENV, HOLD_DIR_ENV = "AAL_SWEEP_INJECT_FAULT", "AAL_SWEEP_HOLD", "AAL_SWEEP_HOLD_DIR"
HOLD_POLL_S = 0.05
HOLD_MAX_S = 900.0  # a hold nobody releases ends after this, so a forgotten test hook never hangs a sweep


def test_hooks() -> dict[str, str | None]:
    """The test hooks of this (driver) process's environment, for `trainable_for`."""
    return {name: os.environ.get(name) for name in (FAULT_ENV, HOLD_ENV, HOLD_DIR_ENV)}


def trainable_for(cfg: SweepConfig, store: Store, embedded: bool = False):
    """The Tune trainable of this sweep, with each trial's resources."""
    ctx = {"cfg": cfg.to_dict(), "results": store.location.source, "hooks": test_hooks(), "embedded": embedded}
    fn = tune.with_parameters(run_trial, ctx=ctx)
    return tune.with_resources(fn, {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial})


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One trial: `config["trial"]` is what the searcher suggested (orchestration/searcher.py)."""
    from aal_sweep.analysis.stats import majority_rate
    from aal_sweep.data.cache import open_decoded
    from aal_sweep.train.loop import fit

    trial = Trial.from_dict(config["trial"])
    cfg = parse_config(ctx["cfg"], check_files=False)
    store = Store(ctx["results"])
    hooks = ctx.get("hooks") or {}
    if store.is_done(trial.trial_id):  # stored by an attempt the driver did not hear of: nothing to do
        return
    # no training on after a kill -9 of the driver's group (orchestration/ray_processes.py)
    fate_shared = bool(ctx.get("embedded")) and die_with_raylet()
    checkpoints = TrialCheckpoints(store.location, trial.trial_id)
    resume = checkpoints.load_newest()
    note = _check_resume(store, trial.trial_id, resume)
    node_id = ray.get_runtime_context().get_node_id()  # in the journal and the rows: where each attempt ran
    attempt = store.attempts(trial.trial_id) + 1
    store.mark(
        trial.trial_id,
        "start",
        from_epoch=resume.from_epoch,
        host=socket.gethostname(),
        pid=os.getpid(),
        node_id=node_id,
        fate_shared=fate_shared,
    )
    if hooks.get(FAULT_ENV) and hooks[FAULT_ENV] in trial.trial_id:
        raise RuntimeError(f"fault injected by {FAULT_ENV}={hooks[FAULT_ENV]!r}")
    spec = trial.spec(cfg)
    if spec.num_threads is None:
        spec = dataclasses.replace(spec, num_threads=max(1, int(cfg.resources.cpus_per_trial)))
    try:
        data = open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache)
    except DataError as e:
        # A bad file is not transient: a retry would decode everything again and fail the same way. Store
        # the failure (naming the files) and return without raising, so Tune does not retry; the driver
        # counts the trial as failed.
        store.write_trial(failed_rows(trial, cfg, str(e), store.attempts(trial.trial_id), node_id=node_id))
        tune.report({DATA_ERROR: str(e)[:200]})  # so the progress line counts it as failed, not done
        return
    if trial.kind == LOOKAHEAD:
        _run_lookahead(trial, cfg, store, spec, data, node_id)
        return
    hold = _Hold.of(hooks, trial.trial_id, node_id, attempt)
    # The journal records each epoch started and each finished (its checkpoint stored first), so a kill's
    # cost can be proven from it: at most the epoch in flight.
    if resume.from_epoch < spec.epochs:
        hold.before(resume.from_epoch)
        store.mark(trial.trial_id, "epoch_start", epoch=resume.from_epoch)

    def on_epoch(train_state: dict[str, Any], metrics: dict[str, Any]) -> None:
        nonlocal note
        epoch = metrics["epoch"]
        if trial.kind == MULTITASK_ALL and epoch + 1 == spec.epochs:  # before the checkpoint: a resume
            _save_weights(store, trial.trial_id, train_state["model"])  # past it finds them stored
        checkpoints.save(epoch, train_state)
        store.mark(trial.trial_id, "epoch", epoch=epoch)
        if epoch + 1 < spec.epochs:
            hold.before(epoch + 1)
            store.mark(trial.trial_id, "epoch_start", epoch=epoch + 1)
        tune.report(metrics | ({"resume_note": note} if note else {}))  # the driver shows the note once
        note = None

    with _start_weights(store, trial, cfg) as init_weights:
        result = fit(dataclasses.replace(spec, init_weights=init_weights), data, on_epoch, resume.state)
    majority = {a: majority_rate(data.labels["val"][:, data.columns([a])[0]]) for a in spec.evaluated()}
    store.write_trial(
        result_rows(trial, cfg, result, store.attempts(trial.trial_id), node_id=node_id, val_majority=majority)
    )
    checkpoints.clear()
    if note:  # resumed at its last epoch: nothing was reported, so say it here
        log.warning("%s: %s", trial.trial_id, note)


def _run_lookahead(trial: Trial, cfg: SweepConfig, store: Store, spec, data, node_id: str) -> None:
    """A screened sweep's lookahead trial: one all-attribute training recording TAG's affinities
    (train/lookahead.py); its estimates are stored before its rows, so stored rows mean stored estimates.
    The running affinity sums are not checkpointed: an interrupted lookahead trial starts over."""
    from aal_sweep.analysis.screening import estimates_key, estimates_table
    from aal_sweep.analysis.stats import majority_rate
    from aal_sweep.train.lookahead import lookahead_affinity

    result = lookahead_affinity(spec, data, every=cfg.pairs.every)
    store.write_estimates(estimates_key(cfg, list(store.attributes)), estimates_table(result.estimates))
    majority = {a: majority_rate(data.labels["val"][:, data.columns([a])[0]]) for a in spec.evaluated()}
    store.write_trial(
        result_rows(trial, cfg, result.fit, store.attempts(trial.trial_id), node_id=node_id, val_majority=majority)
    )
    last = result.fit.heads
    tune.report(
        {
            "epoch": result.fit.epochs_run - 1,
            "lookahead_steps": result.steps,
            **{f"val_acc/{h.attribute}": h.val_acc for h in last},
        }
    )


@dataclasses.dataclass
class _Hold:
    """AAL_SWEEP_HOLD: stop this trial before one epoch until the test releases it (module docstring)."""

    folder: Path | None = None
    epoch: int = -1
    info: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, hooks: dict, trial_id: str, node_id: str, attempt: int) -> _Hold:
        spec, folder = hooks.get(HOLD_ENV), hooks.get(HOLD_DIR_ENV)
        if not spec or not folder or "@" not in spec:
            return cls()
        substring, _, epoch = spec.rpartition("@")
        if substring not in trial_id or not epoch.isdigit():
            return cls()
        return cls(
            Path(folder),
            int(epoch),
            {
                "trial": trial_id,
                "pid": os.getpid(),
                "node_id": node_id,
                "attempt": attempt,
                "host": socket.gethostname(),
            },
        )

    def before(self, epoch: int) -> None:
        if self.folder is None or epoch != self.epoch:
            return
        trial = self.info["trial"]
        held = self.folder / f"{trial}.held"
        tmp = self.folder / f".{trial}.held.{os.getpid()}"
        tmp.write_text(json.dumps(self.info | {"epoch": epoch, "since": time.time()}))
        os.replace(tmp, held)  # whole or absent: the test reads it as soon as it appears
        log.warning("%s: held before epoch %d by %s until %s exists", trial, epoch, HOLD_ENV, self.folder / "release")
        deadline = time.monotonic() + HOLD_MAX_S
        while time.monotonic() < deadline:
            if (self.folder / "release").exists() or (self.folder / f"{trial}.release").exists():
                return
            time.sleep(HOLD_POLL_S)
        log.warning("%s: nobody released the hold in %.0f s; continuing", trial, HOLD_MAX_S)


def _save_weights(store: Store, trial_id: str, model_state: dict[str, Any]) -> None:
    """A multitask_all trial's final weights, into the results storage (checkpoints are deleted)."""
    from aal_sweep.train.variants import weights_bytes

    store.location.write_bytes(weights_file(trial_id), weights_bytes(model_state))


@contextlib.contextmanager
def _start_weights(store: Store, trial: Trial, cfg: SweepConfig):
    """The local file an adversarial_shared trial starts from: its seed's multitask_all weights, fetched
    from the results storage (a local folder or s3://); None for other kinds."""
    if trial.kind != ADVERSARIAL_SHARED:
        yield None
        return
    rel = weights_file(multitask_all_of(cfg, tuple(store.attributes), trial.seed))
    try:
        blob = store.location.read_bytes(rel)
    except FileNotFoundError:
        raise AalError(f"{store.show(rel)}: missing, and {trial.trial_id} starts from it") from None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "multitask_all.pt")
        with open(path, "wb") as f:
            f.write(blob)
        yield path


def _check_resume(store: Store, trial_id: str, resume) -> str | None:
    """Compare where the trial resumes with the last epoch its journal says was checkpointed. A checkpoint
    that is missing or unreadable is never fatal: the trial continues from the newest one that loads, or
    from scratch; the journal ("checkpoint_missing") and the driver's output say so."""
    finished = [e["epoch"] for e in store.journal(trial_id) if e["event"] == "epoch"]
    if resume.epoch is not None and (not finished or resume.epoch > max(finished)):
        # a kill fell between this epoch's checkpoint and its journal line: the checkpoint proves the epoch
        # finished, so the journal says so (before this attempt's "start"), and a kill's cost read from the
        # journal stays the truth: nothing of this epoch is trained again
        store.mark(trial_id, "epoch", epoch=resume.epoch, recovered=True)
        return None
    if not finished or (resume.epoch is not None and resume.epoch >= max(finished)):
        return None
    where = (
        f"continuing from epoch {resume.epoch}'s checkpoint" if resume.epoch is not None else "starting from scratch"
    )
    why = f" ({'; '.join(resume.skipped)})" if resume.skipped else ""
    note = f"checkpoint of epoch {max(finished)} is missing{why}; {where}"
    store.mark(
        trial_id,
        "checkpoint_missing",
        missing_epoch=max(finished),
        skipped=resume.skipped,
        resumed_from_epoch=-1 if resume.epoch is None else resume.epoch,
    )
    log.warning("%s: %s", trial_id, note)
    return note
