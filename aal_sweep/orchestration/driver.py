"""THE ONLY MODULE THAT IMPORTS RAY: every training of the protocol as a Ray Tune trial.

    plan (single + pair) -> Tune -> store -> partners -> plan (adversarial) -> Tune -> store

Resume is the same flow again: the plan minus what the store holds, in a new Tune experiment; each trial
continues from its own last epoch checkpoint (aal_sweep.orchestration.checkpoints says why not Tune's). The trainable is a
thin adapter around `aal_sweep.train.fit`; results are written by the trial itself, atomically, one file
per trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import tempfile
import time
from typing import Any

# The legacy reporter is silent at verbose=0; the new one still prints its banner. -v turns the table on.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from aal_sweep.orchestration.checkpoints import TrialCheckpoints, clear_done  # noqa: E402
from aal_sweep.orchestration.ray_processes import Recorder, children, die_with_raylet, stop_new_children, stop_previous  # noqa: E402
from aal_sweep.config import SweepConfig, parse_config  # noqa: E402
from aal_sweep.data.cache import open_decoded  # noqa: E402
from aal_sweep.errors import AalError, DataError  # noqa: E402
from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL  # noqa: E402
from aal_sweep.orchestration.phases import negatives, waiting_for_weights, weights_file  # noqa: E402
from aal_sweep.orchestration.pending import plan_work, say_nothing_to_do  # noqa: E402
from aal_sweep.orchestration.trials import (Trial, multitask_all_of, plan_adversarial, plan_adversarial_multiple,  # noqa: E402
                            plan_adversarial_shared, plan_multitask_all)
from aal_sweep.analysis.partners import incomplete_rows  # noqa: E402
from aal_sweep.analysis.results import chosen_partners  # noqa: E402
from aal_sweep.analysis.stats import majority_rate  # noqa: E402
from aal_sweep.store import Store, failed_rows, result_rows  # noqa: E402
from aal_sweep.store.lease import StoreNotWritable  # noqa: E402
from aal_sweep.train.loop import fit  # noqa: E402

log = logging.getLogger(__name__)
DATA_ERROR = "data_error"  # the metric a trial reports when it stored its own failure (a bad file)


# ---- the trainable: runs on a Ray worker --------------------------------------------------------


def _trainable(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    trial = Trial.from_dict(config["trial"])
    cfg = parse_config(ctx["cfg"], check_files=False)
    store = Store(ctx["results"])
    if store.is_done(trial.trial_id):  # a restored experiment may re-run a trial whose rows are already stored
        return
    # no training on after a kill -9 of the driver's group (aal_sweep.orchestration.ray_processes)
    fate_shared = bool(ctx.get("embedded")) and die_with_raylet()
    checkpoints = TrialCheckpoints(store.location, trial.trial_id)
    resume = checkpoints.load_newest()
    note = _check_resume(store, trial.trial_id, resume)
    node_id = ray.get_runtime_context().get_node_id()  # in the journal and the rows: where each attempt ran
    store.mark(trial.trial_id, "start", from_epoch=resume.from_epoch, host=socket.gethostname(), pid=os.getpid(),
               node_id=node_id, fate_shared=fate_shared)
    if ctx.get("fault") and ctx["fault"] in trial.trial_id:
        raise RuntimeError(f"fault injected by AAL_SWEEP_INJECT_FAULT={ctx['fault']!r}")
    spec = trial.spec(cfg)
    if spec.num_threads is None:
        spec = dataclasses.replace(spec, num_threads=max(1, int(cfg.resources.cpus_per_trial)))
    try:
        data = open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache)
    except DataError as e:
        # A node without the driver's prebuilt cache met a bad file. That is not transient: a retry would
        # decode everything again and fail the same way. Store the failure (naming the files) and return
        # without raising, so Tune does not retry; the driver counts the trial as failed (_settle).
        store.write_trial(failed_rows(trial, cfg, str(e), store.attempts(trial.trial_id), node_id=node_id))
        tune.report({DATA_ERROR: str(e)[:200]})  # so the progress line counts it as failed, not done
        return
    # The journal records each epoch started and each finished (its checkpoint stored first), so a kill's
    # cost can be proven from it: at most the epoch in flight.
    if resume.from_epoch < spec.epochs:
        store.mark(trial.trial_id, "epoch_start", epoch=resume.from_epoch)

    def on_epoch(train_state: dict[str, Any], metrics: dict[str, Any]) -> None:
        nonlocal note
        epoch = metrics["epoch"]
        if trial.kind == MULTITASK_ALL and epoch + 1 == spec.epochs:  # before the checkpoint: a resume
            _save_weights(store, trial.trial_id, train_state["model"])  # past it finds them stored
        checkpoints.save(epoch, train_state)
        store.mark(trial.trial_id, "epoch", epoch=epoch)
        if epoch + 1 < spec.epochs:
            store.mark(trial.trial_id, "epoch_start", epoch=epoch + 1)
        tune.report(metrics | ({"resume_note": note} if note else {}))  # the driver prints the note once
        note = None

    with _start_weights(store, trial, cfg) as init_weights:
        result = fit(dataclasses.replace(spec, init_weights=init_weights), data, on_epoch, resume.state)
    majority = {a: majority_rate(data.labels["val"][:, data.columns([a])[0]]) for a in spec.evaluated()}
    store.write_trial(result_rows(trial, cfg, result, store.attempts(trial.trial_id), node_id=node_id,
                                  val_majority=majority))
    checkpoints.clear()
    if note:  # resumed at its last epoch: nothing was reported, so say it here
        log.warning("%s: %s", trial.trial_id, note)


def _save_weights(store: Store, trial_id: str, model_state: dict[str, Any]) -> None:
    """A multitask_all trial's final weights, into the results storage (Tune's checkpoints are deleted)."""
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
    if not finished or (resume.epoch is not None and resume.epoch >= max(finished)):
        return None
    where = f"continuing from epoch {resume.epoch}'s checkpoint" if resume.epoch is not None else "starting from scratch"
    why = f" ({'; '.join(resume.skipped)})" if resume.skipped else ""
    note = f"checkpoint of epoch {max(finished)} is missing{why}; {where}"
    store.mark(trial_id, "checkpoint_missing", missing_epoch=max(finished), skipped=resume.skipped,
               resumed_from_epoch=-1 if resume.epoch is None else resume.epoch)
    log.warning("%s: %s", trial_id, note)
    return note


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
        if result.get("resume_note"):
            print(f"[{self.phase}] {trial.config['trial']['trial_id']}: {result['resume_note']}", flush=True)
        n = int(result.get("epoch", -1)) + 1
        self.epochs_at_start.setdefault(trial.trial_id, n - 1)
        self.epochs_seen[trial.trial_id] = n

    def on_trial_complete(self, iteration, trials, trial, **info):
        # a trial that met a data error on its node ends without raising (it is not retried): a failure
        (self.failed if DATA_ERROR in (trial.last_result or {}) else self.done).add(trial.trial_id)
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
    # Workers log at the CLI's --log-level too (e.g. each node's decode-cache build at INFO); -vv shows them.
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    kwargs = dict(include_dashboard=False, log_to_driver=verbose >= 2, logging_level=logging.WARNING,
                  logging_config=ray.LoggingConfig(encoding="TEXT", log_level=level))
    if address is None:
        # address="local": always a new Ray of our own. Without an address ray.init joins RAY_ADDRESS or the
        # cluster named in <ray temp dir>/ray_current_cluster (the last `ray start` on this machine): a dead
        # one there makes it retry for minutes, a live one would run the sweep on it
        # (ray._private.services.canonicalize_bootstrap_address). The CLI puts Ray in its single-machine
        # mode first, so every port it opens is on 127.0.0.1. Token authentication stays on (Ray's default
        # since 2.59): the CLI sets RAY_AUTH_MODE=token before ray is imported (Ray reads it once, at import).
        if os.environ.get("RAY_ADDRESS"):
            print(f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} is ignored: this run starts its own Ray "
                  f"(pass --address auto to use that cluster)")
        return _start_local(kwargs)
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


def _start_local(kwargs: dict, tries: int = 3) -> bool:
    """ray.init(address="local"), tried again when its raylet did not register within the 30 s Ray allows
    (a hard-coded limit in ray._private.node.Node; a busy machine can exceed it)."""
    for attempt in range(1, tries + 1):
        before = children()
        try:
            ray.init(address="local", dashboard_host="127.0.0.1", **kwargs)
            return True
        except Exception as e:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(e):
                raise
            stop_new_children(before)  # what the failed start left running
        if attempt < tries:
            print(f"the embedded Ray did not start within Ray's 30 s (a busy machine?); trying again "
                  f"({attempt + 1}/{tries})", flush=True)
    raise AalError(f"the embedded Ray did not start: its raylet did not register within Ray's 30 s, {tries} "
                   f"times (is the machine overloaded?); run the same command again when it has spare CPU")


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


def _trainable_for(cfg: SweepConfig, store: Store, embedded: bool = False):
    # AAL_SWEEP_INJECT_FAULT=SUBSTRING makes every trial whose id contains it fail at start (chaos tests);
    # read here, on the driver, so it reaches workers of a cluster that was started before.
    ctx = {"cfg": cfg.to_dict(), "results": store.location.source, "fault": os.environ.get("AAL_SWEEP_INJECT_FAULT"),
           "embedded": embedded}
    fn = tune.with_parameters(_trainable, ctx=ctx)
    resources = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    return tune.with_resources(fn, resources)


def param_space(trials: list[Trial]) -> dict[str, Any]:
    """One grid point per trial: the dict the trainable reads (trial_id, kind, attributes, lam, method, seed).
    Tune resolves grid values before it names a trial (sample_from values it does not), so these keys are
    what its ResultGrid (config/trial/kind, ...), trial names and TensorBoard hparams (trial/kind, ...) show."""
    # TensorBoard's hparams take scalars only: the attributes also as one string
    return {"trial": tune.grid_search([t.to_dict() | {"attributes_text": " vs ".join(t.attributes)} for t in trials])}


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]  # kind, attributes, lambda, method, seed: readable as it is


def _trial_dirname(trial) -> str:
    # Tune's default names a folder after every parameter: too long for filesystems at 40 attributes.
    return f"{trial.config['trial']['kind']}_{trial.trial_id}"


def _error_text(error: BaseException | None) -> str:
    text = str(error) if error is not None else "unknown error"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


class RecordRay(tune.Callback):
    """Keep the embedded Ray's process record current as workers start (aal_sweep.orchestration.ray_processes)."""

    def __init__(self, recorder: Recorder, every_s: float = 5.0):
        self.recorder, self.every_s, self.last = recorder, every_s, 0.0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.last = 0.0

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.recorder.update()


def check_fits(cpus: float, gpus: float) -> None:
    """Fail at once, in one line, when no node of the cluster can ever host a trial (Tune would wait forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    most_cpu = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("GPU", 0)), default={})
    most_gpu = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    largest = f"{most_cpu.get('CPU', 0):g} CPU and {most_cpu.get('GPU', 0):g} GPU"
    if most_gpu is not most_cpu and most_gpu.get("GPU", 0) > most_cpu.get("GPU", 0):
        largest += f" (the node with most GPUs: {most_gpu.get('CPU', 0):g} CPU and {most_gpu.get('GPU', 0):g} GPU)"
    raise AalError(f"resources: a trial needs {cpus:g} CPU and {gpus:g} GPU on one node, but no node of the "
                   f"cluster has that: the largest of its {len(nodes)} node(s) has {largest}; lower "
                   f"resources.cpus_per_trial / resources.gpus_per_trial or add a larger node")


class Compaction(tune.Callback):
    """Compact the store's inbox every `every` finished trials, so a long phase keeps few files."""

    def __init__(self, store: Store, every: int = 500):
        self.store, self.every, self.count = store, every, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.count += 1
        if self.count % self.every == 0:
            self.store.compact()


def run_phase(phase: str, trials: list[Trial], cfg: SweepConfig, store: Store, verbose: int,
              done: set[str], recorder: Recorder | None = None) -> dict[str, list[str]]:
    """Run every trial of `trials` not in `done` (updated in place); return {"failed": ids, "unfinished": ids}."""
    pending = [t for t in trials if t.trial_id not in done]
    out: dict[str, list[str]] = {"failed": [], "unfinished": []}
    if not trials:
        print(f"[{phase}] nothing to run")
        return out
    if not pending:
        print(f"[{phase}] all {len(trials)} trials done")
        return out
    print(f"[{phase}] {len(trials) - len(pending)}/{len(trials)} done; running {len(pending)}")
    trainable = _trainable_for(cfg, store, embedded=recorder is not None)
    storage_path, storage_fs = store.tune_storage()
    progress = Progress(phase, len(trials), len(trials) - len(pending), cfg.train.epochs)
    failed: set[str] = set()
    # An interrupted experiment is not restored with Tuner.restore: its saved state may name a checkpoint
    # Tune already deleted (aal_sweep.orchestration.checkpoints). Its trials run again in a new experiment, each from its
    # own last epoch checkpoint.
    for name in store.unfinished_experiments(phase):
        store.close_experiment(name)
    resuming = sum(1 for t in pending if TrialCheckpoints(store.location, t.trial_id).epochs())
    if resuming:
        print(f"[{phase}] {resuming} interrupted trial(s) continue from their last epoch checkpoint")
    if pending:
        name = store.new_experiment(phase)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(pending),
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cfg.resources.max_concurrent,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path, storage_filesystem=storage_fs, verbose=min(verbose, 2),
                failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                callbacks=[progress, Compaction(store), *([RecordRay(recorder)] if recorder else [])],
            ),
        )
        grid = tuner.fit()
        failed |= _settle(grid, cfg, store, done)
        if _interrupted(grid, done, failed):
            return _unfinished(trials, done, failed)
        store.close_experiment(name)
    clear_done(store.location, done)
    store.compact()
    return _unfinished(trials, done, failed)


def _settle(grid, cfg: SweepConfig, store: Store, done: set[str]) -> set[str]:
    """Add the grid's stored trials to `done` (one read of what the store gained); store a `failed` row set
    for each trial that exhausted its retries and return their ids."""
    done |= store.done_ids()
    failed = _failed_by_themselves(grid, store, done)
    for r in grid:
        if r.error is None or not r.config:  # no config: the trial never started (stopped while pending)
            continue
        trial = Trial.from_dict(r.config["trial"])
        if trial.trial_id in done:
            continue
        store.write_trial(failed_rows(trial, cfg, _error_text(r.error), store.attempts(trial.trial_id)))
        failed.add(trial.trial_id)
    return failed


def _failed_by_themselves(grid, store: Store, done: set[str]) -> set[str]:
    """Trials that ended without an error yet are not done: those that stored their own failure (a data
    error on a worker, which is not retried) are failed; any other was stopped (Ctrl-C / SIGTERM)."""
    ended = {Trial.from_dict(r.config["trial"]).trial_id for r in grid if r.error is None and r.config} - done
    if not ended:
        return set()
    rows = store.trials(["trial_id", "status"])
    return set(rows.trial_id[(rows.status == "failed") & rows.trial_id.isin(ended)])


def _interrupted(grid, done: set[str], failed: set[str]) -> bool:
    """A grid with a trial that neither finished nor failed was stopped (Ctrl-C / SIGTERM)."""
    # a result without a config is a trial Ctrl-C stopped before it started (Result.config is None then)
    return any(r.error is None and (not r.config or Trial.from_dict(r.config["trial"]).trial_id not in done | failed)
               for r in grid)


def _unfinished(trials: list[Trial], done: set[str], failed: set[str]) -> dict[str, list[str]]:
    return {"failed": sorted(failed),
            "unfinished": [t.trial_id for t in trials if t.trial_id not in done and t.trial_id not in failed]}


# ---- the sweep ------------------------------------------------------------------------------------


def run_sweep(cfg: SweepConfig, results: str | None = None, address: str | None = None, verbose: int = 0,
              restart: bool = False, allow_partial: bool = False) -> int:
    """Run or resume the whole sweep. Returns the exit code: 0 done, 1 some trials failed or some rows of
    the pair matrix are incomplete, 130 interrupted.

    Nothing is written before the config, the stored trials' training settings and the dataset check out;
    a sweep with nothing to do writes nothing (a read-only results folder works)."""
    work = plan_work(cfg, results, restart)
    store, attributes, initial, done, damaged = work.store, work.attributes, work.initial, work.done, work.damaged
    if work.nothing_to_do(cfg, allow_partial):
        return _nothing_to_do(work, cfg, allow_partial)
    prepare_data(cfg, attributes)
    started_ray = False
    report: dict[str, list[str]] = {"failed": [], "incomplete": []}
    recorder = Recorder(store.location) if address is None and not ray.is_initialized() else None
    with store.lease():
        try:
            stopped = stop_previous(store.location)
            if stopped:
                print(f"stopped {stopped} process(es) of the embedded Ray a killed run left on this machine")
            started_ray = connect(address, verbose)  # before anything is written: the size check needs Ray
            check_fits(cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial)
            if recorder is not None:
                recorder.update()
            if restart:
                store.discard()
                done = set()
            store.write_config(cfg, attributes)
            for path in store.quarantine():
                print(f"moved damaged file aside to {path}: its trial runs again")
            store.cleanup()
            store.compact()
            if damaged:
                done = store.done_ids()

            def phase(name: str, trials: list[Trial]) -> bool:
                nonlocal started_ray
                if any(t.trial_id not in done for t in trials) and not ray.is_initialized():
                    started_ray = connect(address, verbose)
                out = run_phase(name, trials, cfg, store, verbose, done, recorder)
                report["failed"] += out["failed"]
                return not out["unfinished"]

            if initial and not phase("single+pair", initial):
                return _interrupted_exit(store)
            if MULTITASK_ALL in cfg.phases and not phase(MULTITASK_ALL, plan_multitask_all(cfg, attributes)):
                return _interrupted_exit(store)
            if "pair" not in cfg.phases:  # no pair matrix, so no partners (and no phase needs them)
                return _finish(store, report)
            partners = _write_partners(store, attributes, initial, done, allow_partial, report)
            if "adversarial" in cfg.phases:
                if not phase("adversarial", plan_adversarial(cfg, partners)):
                    return _interrupted_exit(store)
            if ADVERSARIAL_MULTIPLE in cfg.phases:
                trials = plan_adversarial_multiple(cfg, negatives(store, attributes, allow_partial))
                if not phase(ADVERSARIAL_MULTIPLE, trials):
                    return _interrupted_exit(store)
            if ADVERSARIAL_SHARED in cfg.phases and not phase(ADVERSARIAL_SHARED, _shared_ready(
                    store, cfg, attributes, plan_adversarial_shared(cfg, partners), done)):
                return _interrupted_exit(store)
        except KeyboardInterrupt:
            return _interrupted_exit(store)
        finally:
            if started_ray or (recorder is not None and ray.is_initialized()):  # also a start interrupted half-way
                ray.shutdown()
            if recorder is not None:
                recorder.stop_leftovers()
    return _finish(store, report)


def _finish(store: Store, report: dict[str, list[str]]) -> int:
    """The exit code of a sweep that ran every phase it could; failures and incomplete rows named."""
    if report["failed"]:
        print(f"aal-sweep: {len(report['failed'])} trial(s) failed after their retries: "
              f"{', '.join(report['failed'])}; their errors are in the store (status=failed); "
              f"rerun the same command to retry them", file=sys.stderr)
    if report["failed"] or report["incomplete"]:
        return 1
    print(f"sweep done: results in {store.uri}")
    return 0


def _shared_ready(store: Store, cfg: SweepConfig, attributes, trials: list[Trial], done: set[str]) -> list[Trial]:
    """The adversarial_shared trials whose multitask_all weights are stored; the others are named (their
    multitask_all trial failed, and the sweep exits 1 for it) and wait for a rerun."""
    waiting = waiting_for_weights(cfg, attributes, trials, done)
    for base, blocked in waiting.items():
        print(f"[{ADVERSARIAL_SHARED}] {len(blocked)} trial(s) wait for {base}, which is not stored; rerun the "
              f"same command to retry it", file=sys.stderr)
    pending = {multitask_all_of(cfg, attributes, t.seed) for t in trials if t.trial_id not in done}
    lost = [b for b in sorted(pending - set(waiting))
            if not store.location.is_file(weights_file(b))]
    if lost:
        raise AalError(f"{store.show(weights_file(lost[0]))}: missing, though {lost[0]} is stored; "
                       f"adversarial_shared starts from it: rerun with --restart, or drop adversarial_shared "
                       f"from phases")
    blocked = {t.trial_id for ts in waiting.values() for t in ts}
    return [t for t in trials if t.trial_id not in blocked]


def _write_partners(store: Store, attributes, initial: list[Trial], done: set[str], allow_partial: bool,
                    report: dict):
    """Derive and store the partners (the config's rule, with their statistics); name the attributes whose
    row of the matrix is incomplete."""
    partners = chosen_partners(store, allow_partial, attributes, statistics=True, rule=store.config.partners)
    store.write_partners(partners)
    incomplete = incomplete_rows(partners)
    if not incomplete:
        return partners
    unstored: dict[frozenset, list[str]] = {}  # cell {a} (single) or {a, b} (pair) -> its trials not stored
    for t in initial:
        if t.trial_id not in done:
            unstored.setdefault(frozenset(t.attributes), []).append(t.trial_id)
    described = "; ".join(
        f"{a} (missing {', '.join(sorted(i for b in cols for i in unstored.get(frozenset({a, b}), []))) or ', '.join(cols)})"
        for a, cols in incomplete.items())
    if allow_partial:
        print(f"partners: --allow-partial: {len(incomplete)} row(s) decided without their missing cells: {described}")
        return partners
    report["incomplete"] = list(incomplete)
    print(f"aal-sweep: {len(incomplete)} attribute(s) have an incomplete row of the pair matrix, so no partner "
          f"and no adversarial trials yet: {described}; rerun the same command to finish them, or pass "
          f"--allow-partial to decide from the cells there are", file=sys.stderr)
    return partners


def _nothing_to_do(work, cfg: SweepConfig, allow_partial: bool) -> int:
    """Every trial is stored. Tidy what needs it (a killed compaction's leftovers, an unreadable
    partners.parquet or sweep.yaml) if the folder is writable; otherwise write nothing."""
    store = work.store
    say_nothing_to_do(store)
    if work.tidy(cfg, allow_partial):
        return 0
    try:
        with store.lease():
            store.write_config(cfg, work.attributes)
            store.cleanup()
            store.compact()
            if "pair" in cfg.phases:
                store.write_partners(chosen_partners(store, allow_partial, work.attributes, statistics=True,
                                                     rule=cfg.partners))
        print(f"tidied {store.uri}: store compacted, sweep.yaml and partners.parquet rewritten")
    except StoreNotWritable as e:
        print(f"left {store.uri} as it is ({e})")
    return 0


def prepare_data(cfg: SweepConfig, attributes) -> None:
    """Check the dataset and build (or find) its decode cache on this node before anything is written and
    before any trial starts: a broken image fails once, here, naming every bad file, instead of in every
    attempt of every trial. Trials on this node then find the entry; other nodes build their own."""
    from aal_sweep.data.index import load_index

    load_index(cfg.dataset.source(), attributes)
    open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache)


def _interrupted_exit(store: Store) -> int:
    print(f"aal-sweep: interrupted; finished trials are stored in {store.show('trials')}. "
          f"Run the same command to resume.", file=sys.stderr)
    return 130
