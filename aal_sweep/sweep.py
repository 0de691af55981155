"""THE ONLY MODULE THAT IMPORTS RAY: every training of the protocol as a Ray Tune trial.

    plan (single + pair) -> Tune -> store -> partners -> plan (adversarial) -> Tune -> store

Resume is the same flow again: the plan minus what the store holds; an interrupted Tune experiment is
restored so in-flight trials continue from their last epoch checkpoint. The trainable is a thin adapter
around `aal_sweep.train.fit`; results are written by the trial itself, atomically, one file per trial.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Tune snapshots its experiment state whenever a trial has checkpointed num_to_keep times; with
# num_to_keep=1 that is every epoch, which is what a kill -9 of the driver needs, and Tune warns about it.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The legacy reporter is silent at verbose=0; the new one still prints its banner. -v turns the table on.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from aal_sweep.config import SweepConfig, parse_config  # noqa: E402
from aal_sweep.data.cache import open_decoded  # noqa: E402
from aal_sweep.errors import AalError  # noqa: E402
from aal_sweep.plan import Trial, failed_rows, plan_adversarial, plan_initial, result_rows  # noqa: E402
from aal_sweep.results_dir import ResultsDir  # noqa: E402
from aal_sweep.store import write_trial  # noqa: E402
from aal_sweep.train.loop import fit  # noqa: E402

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


# ---- the trainable: runs on a Ray worker --------------------------------------------------------


def _trainable(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    trial = Trial.from_dict(config["trial"])
    cfg = parse_config(ctx["cfg"], check_files=False)
    rd = ResultsDir(ctx["results"])
    if rd.is_done(trial.trial_id):  # a restored experiment may re-run a trial whose rows are already stored
        return
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    rd.mark(trial.trial_id, "start", from_epoch=0 if state is None else state["epoch"] + 1,
            host=socket.gethostname(), pid=os.getpid())
    if ctx.get("fault") and ctx["fault"] in trial.trial_id:
        raise RuntimeError(f"fault injected by AAL_SWEEP_INJECT_FAULT={ctx['fault']!r}")
    spec = trial.spec(cfg)
    if spec.num_threads is None:
        spec = dataclasses.replace(spec, num_threads=max(1, int(cfg.resources.cpus_per_trial)))
    data = open_decoded(cfg.dataset.root, cfg.dataset.image_size, cfg.dataset.cache)

    def on_epoch(train_state: dict[str, Any], metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(train_state, Path(d) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        rd.mark(trial.trial_id, "epoch", epoch=metrics["epoch"])  # after the checkpoint is persisted

    result = fit(spec, data, on_epoch, state)
    write_trial(rd.path, result_rows(trial, cfg, result, rd.attempts(trial.trial_id)))


# ---- progress ------------------------------------------------------------------------------------


class Progress(tune.Callback):
    """One line per change: trials done / running / failed / total and the time left, from epoch throughput."""

    def __init__(self, phase: str, total: int, already_done: int, epochs: int, every_s: float = 15.0):
        self.phase, self.total, self.already, self.epochs, self.every_s = phase, total, already_done, epochs, every_s

    def setup(self, **info):
        self.start = time.monotonic()
        self.last_print = 0.0
        self.epochs_seen: dict[str, int] = {}
        self.epochs_at_start: dict[str, int] = {}
        self.done, self.failed, self.running = set(), set(), set()

    def on_step_end(self, iteration, trials, **info):
        self.running = {t.trial_id for t in trials if t.status == "RUNNING"}
        self._print()

    def _line(self) -> str:
        done = self.already + len(self.done)
        elapsed = time.monotonic() - self.start
        trained = sum(self.epochs_seen[t] - self.epochs_at_start.get(t, 0) for t in self.epochs_seen)
        running = self.running - self.done - self.failed
        remaining = max(0, (self.total - done - len(self.failed)) * self.epochs
                        - sum(self.epochs_seen.get(t, 0) for t in running))
        eta = f", ~{_fmt_s(remaining * elapsed / trained)} left" if trained and remaining else ""
        return (f"[{self.phase}] {done}/{self.total} done, {len(running)} running, "
                f"{len(self.failed)} failed, {_fmt_s(elapsed)} elapsed{eta}")

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_print >= self.every_s:
            self.last_print = now
            print(self._line(), flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        n = int(result.get("epoch", -1)) + 1
        self.epochs_at_start.setdefault(trial.trial_id, n - 1)
        self.epochs_seen[trial.trial_id] = n

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done.add(trial.trial_id)
        self._print(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.add(trial.trial_id)
        self._print(force=True)


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---- Ray connection -------------------------------------------------------------------------------


def connect(address: str | None, verbose: int) -> bool:
    """Start an embedded Ray, or join a cluster. Returns True when this call started Ray (and must stop it)."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=verbose >= 2, logging_level=logging.WARNING)
    if address is None:
        # Token authentication stays on for the embedded cluster (Ray's default since 2.59): its ports are
        # open to every local user. Ray writes a token to ~/.ray/auth_token when none exists. The CLI sets
        # RAY_AUTH_MODE=token before ray is imported (Ray reads it once, at import) to say so explicitly.
        ray.init(**kwargs)
        return True
    check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except ray.exceptions.AuthenticationError as e:
        raise AalError(f"--address {address}: the cluster refused our token ({str(e).splitlines()[0][:100]}); "
                       f"set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token "
                       f"(`ray get-auth-token` on the head)") from None
    except ConnectionError as e:
        raise AalError(f"--address {address}: cannot reach a Ray cluster ({str(e).splitlines()[0][:100]}); "
                       f"check the address, or leave --address out for an embedded Ray") from None
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise AalError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise AalError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); check the "
                       f"address (`ray status` on the head), or leave --address out for an embedded Ray") from None


# ---- one phase on Tune ----------------------------------------------------------------------------


def _trainable_for(cfg: SweepConfig, rd: ResultsDir):
    # AAL_SWEEP_INJECT_FAULT=SUBSTRING makes every trial whose id contains it fail at start (chaos tests);
    # read here, on the driver, so it reaches workers of a cluster that was started before.
    ctx = {"cfg": cfg.to_dict(), "results": str(rd.path), "fault": os.environ.get("AAL_SWEEP_INJECT_FAULT")}
    fn = tune.with_parameters(_trainable, ctx=ctx)
    resources = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    return tune.with_resources(fn, resources)


def _error_text(error: BaseException | None) -> str:
    text = str(error) if error is not None else "unknown error"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def run_phase(phase: str, trials: list[Trial], cfg: SweepConfig, rd: ResultsDir, verbose: int) -> dict[str, list[str]]:
    """Run every trial of `trials` the store lacks; return {"failed": ids, "unfinished": ids}."""
    done = rd.done_ids()
    pending = [t for t in trials if t.trial_id not in done]
    out: dict[str, list[str]] = {"failed": [], "unfinished": []}
    if not trials:
        print(f"[{phase}] nothing to run")
        return out
    if not pending:
        print(f"[{phase}] all {len(trials)} trials done")
        return out
    print(f"[{phase}] {len(trials) - len(pending)}/{len(trials)} done; running {len(pending)}")
    trainable = _trainable_for(cfg, rd)
    progress = Progress(phase, len(trials), len(trials) - len(pending), cfg.train.epochs)
    failed: set[str] = set()
    for path in rd.unfinished_experiments(phase):
        if tune.Tuner.can_restore(str(path)):
            print(f"[{phase}] restoring interrupted experiment {path.name}: in-flight trials continue "
                  f"from their last epoch")
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
            grid = tuner.fit()
            failed |= _record_failures(grid, cfg, rd)
            if _interrupted(grid, rd):
                return _unfinished(trials, rd, failed)
        rd.close_experiment(path)
    done = rd.done_ids()
    pending = [t for t in pending if t.trial_id not in done and t.trial_id not in failed]
    if pending:
        path = rd.new_experiment(phase)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.to_dict() for t in pending])},
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cfg.resources.max_concurrent),
            run_config=tune.RunConfig(
                name=path.name, storage_path=str(path.parent), verbose=min(verbose, 2),
                failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[progress],
            ),
        )
        grid = tuner.fit()
        failed |= _record_failures(grid, cfg, rd)
        if _interrupted(grid, rd):
            return _unfinished(trials, rd, failed)
        rd.close_experiment(path)
    return _unfinished(trials, rd, failed)


def _record_failures(grid, cfg: SweepConfig, rd: ResultsDir) -> set[str]:
    """Store a `failed` row set for each trial that exhausted its retries; return their ids."""
    failed = set()
    for r in grid:
        if r.error is None:
            continue
        trial = Trial.from_dict(r.config["trial"])
        if rd.is_done(trial.trial_id):
            continue
        write_trial(rd.path, failed_rows(trial, cfg, _error_text(r.error), rd.attempts(trial.trial_id)))
        failed.add(trial.trial_id)
    return failed


def _interrupted(grid, rd: ResultsDir) -> bool:
    """A grid with a trial that neither finished nor failed was stopped (Ctrl-C / SIGTERM)."""
    return any(r.error is None and not rd.is_done(Trial.from_dict(r.config["trial"]).trial_id) for r in grid)


def _unfinished(trials: list[Trial], rd: ResultsDir, failed: set[str]) -> dict[str, list[str]]:
    done = rd.done_ids()
    return {"failed": sorted(failed),
            "unfinished": [t.trial_id for t in trials if t.trial_id not in done and t.trial_id not in failed]}


# ---- the sweep ------------------------------------------------------------------------------------


def run_sweep(cfg: SweepConfig, results: str | None = None, address: str | None = None, verbose: int = 0,
              restart: bool = False) -> int:
    """Run or resume the whole sweep. Returns the exit code: 0 done, 1 some trials failed, 130 interrupted."""
    from aal_sweep.config import resolve_attributes
    from aal_sweep.data.celeba import load_index

    rd = ResultsDir(Path(results or cfg.results).resolve())
    attributes = resolve_attributes(cfg)
    rd.prepare(cfg, attributes, restart=restart)
    initial = plan_initial(cfg, attributes)
    started_ray = False
    report: dict[str, list[str]] = {"failed": []}
    try:
        def phase(name: str, trials: list[Trial]) -> bool:
            nonlocal started_ray, report
            if rd.anything_pending(trials) and not ray.is_initialized():
                load_index(cfg.dataset.root, attributes)  # a broken dataset fails here, clearly, before Ray
                started_ray = connect(address, verbose)
            out = run_phase(name, trials, cfg, rd, verbose)
            report["failed"] += out["failed"]
            return not out["unfinished"]

        if not rd.anything_pending(initial) and not _adversarial_pending(cfg, rd, attributes):
            print(f"nothing to do: every trial of {rd.path} is done "
                  f"(see `aal-sweep matrix {rd.path}` and `aal-sweep partners {rd.path}`)")
            return 0
        if initial and not phase("single+pair", initial):
            return _interrupted_exit(rd)
        partners = rd.write_partners(attributes)
        if "adversarial" in cfg.phases:
            adversarial = plan_adversarial(cfg, partners)
            if not phase("adversarial", adversarial):
                return _interrupted_exit(rd)
    except KeyboardInterrupt:
        return _interrupted_exit(rd)
    finally:
        if started_ray:
            ray.shutdown()
    if report["failed"]:
        print(f"aal-sweep: {len(report['failed'])} trial(s) failed after their retries: "
              f"{', '.join(report['failed'])}; their errors are in the store (status=failed); "
              f"rerun the same command to retry them", file=sys.stderr)
        return 1
    print(f"sweep done: results in {rd.path}")
    return 0


def _adversarial_pending(cfg: SweepConfig, rd: ResultsDir, attributes) -> bool:
    if "adversarial" not in cfg.phases:
        return False
    partners = rd.compute_partners(attributes)
    return rd.anything_pending(plan_adversarial(cfg, partners))


def _interrupted_exit(rd: ResultsDir) -> int:
    print(f"aal-sweep: interrupted; finished trials are stored in {rd.path}/trials. "
          f"Run the same command to resume.", file=sys.stderr)
    return 130

