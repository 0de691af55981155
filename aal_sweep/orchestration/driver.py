"""`aal-sweep run`: the whole sweep as ONE Tune experiment, each trial released when what it needs is stored.

    config + store -> graph (orchestration/graph.py) -> GraphSearcher -> Tune -> trials write their rows
                   <- rows settle <- partners decided (partners.parquet rewritten) <- ...

Resume is the same flow again: the graph minus what the store holds, in a new Tune experiment; each trial
continues from its own last epoch checkpoint (orchestration/checkpoints.py says why not Tune's). The
driver holds the results folder's lease, writes everything shared (sweep.yaml, segments, partners.parquet,
failed trials' rows) and reports through events (orchestration/events.py); it prints nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

# The legacy reporter is silent at verbose=0; the new one still prints its banner. -v turns the table on.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C is the driver's to handle, as SIGTERM and SIGHUP are (interrupt.py): Tune's own SIGINT handler
# would end its run at once, skipping the graceful stop the others take.
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

import ray  # noqa: E402
from ray import tune  # noqa: E402

import aal_sweep  # noqa: E402
from aal_sweep.analysis.results import chosen_partners  # noqa: E402
from aal_sweep.analysis.screening import confirmed_pairs  # noqa: E402
from aal_sweep.config import SweepConfig  # noqa: E402
from aal_sweep.errors import AalError  # noqa: E402
from aal_sweep.kinds import ADVERSARIAL_SHARED  # noqa: E402
from aal_sweep.orchestration import interrupt  # noqa: E402
from aal_sweep.orchestration.callbacks import (  # noqa: E402
    Compaction,
    Progress,
    RecordRay,
    StopAll,
    StoreFailures,
    Tick,
    TrialLines,
)
from aal_sweep.orchestration.checkpoints import TrialCheckpoints, clear_done  # noqa: E402
from aal_sweep.orchestration.events import Events  # noqa: E402
from aal_sweep.orchestration.graph import DONE, FAILED, STOPPED, Graph, decisions, from_store  # noqa: E402
from aal_sweep.orchestration.ray_connect import check_fits, connect, hosts_trials, slots  # noqa: E402
from aal_sweep.orchestration.ray_processes import Recorder, stop_previous  # noqa: E402
from aal_sweep.orchestration.retries import Retries, ray_reports  # noqa: E402
from aal_sweep.orchestration.screen import make_estimates, next_round, round_line  # noqa: E402
from aal_sweep.orchestration.searcher import GraphSearcher  # noqa: E402
from aal_sweep.orchestration.state import SweepState, nothing_to_do_line, open_state  # noqa: E402
from aal_sweep.orchestration.tracking import check_tracking, tune_callbacks  # noqa: E402
from aal_sweep.orchestration.trainable import DATA_ERROR, trainable_for  # noqa: E402
from aal_sweep.orchestration.trials import multitask_all_of  # noqa: E402
from aal_sweep.store import Store, failed_rows  # noqa: E402
from aal_sweep.store.layout import TUNE_DIR, weights_file  # noqa: E402
from aal_sweep.store.lease import LeaseLost, StoreNotWritable  # noqa: E402

EXPERIMENT = "sweep"  # Tune experiments are RESULTS/tune/sweep-<k>, one per run
# partners.parquet is rewritten as rows are decided (and at the end), spending at most this share of the
# driver's time on it: a few ms at 4 attributes (every decision), seconds of statistics at 1,000 (rarely)
PARTNERS_SHARE = 0.1
COMPACT_EVERY = 500  # finished trials between compactions of the store's inbox


def run(
    cfg: SweepConfig,
    results: str | None = None,
    address: str | None = None,
    verbose: int = 0,
    restart: bool = False,
    allow_partial: bool = False,
    on_event=None,
    progress=None,
) -> int:
    """Run or resume the whole sweep. Returns the exit code: 0 done, 1 some trials failed or some rows of
    the pair matrix are incomplete, 128 + the signal's number when stopped (130 Ctrl-C, 143 SIGTERM, 129
    SIGHUP: interrupt.py). `on_event(Event)` receives what there is to say;
    `progress(step, unit)` gives the `update(done, total)` of a long step's progress (the decode-cache build,
    a compaction of the store): aal_sweep.progress.Progress(step, stream, unit=unit).update, say.

    Nothing is written before the config, the stored trials' training settings and the dataset check out;
    a sweep with nothing to do writes nothing (a read-only results folder works)."""
    events = Events(on_event)
    state = open_state(cfg, results, restart, allow_partial)
    if state.nothing_to_do():
        return _nothing_to_do(state, cfg, allow_partial, events)
    store, attributes = state.store, state.attributes
    store.lease().refuse_if_held()  # a second driver is refused before it starts anything
    store.check_writable()
    check_data(cfg, attributes)  # the dataset's files where the driver runs: no Ray needed to refuse them
    check_tracking(cfg)  # MLflow's / W&B's package and MLflow's store: no Ray needed either
    embedded = address is None and not ray.is_initialized()
    recorder = Recorder(store.location) if embedded else None
    started_ray = False
    with interrupt.catching():  # Ctrl-C, SIGTERM, SIGHUP: a flag first (interrupt.py), raised where it is safe
        try:
            # then Ray, writing nothing: a trial no node can host is refused before the decode cache is built
            # or the results folder is created. A Ctrl-C during Ray's start takes effect once it has started.
            with interrupt.deferred():
                started_ray = connect(address, verbose, events)
            ray_reports(verbose)  # Ray's report of a dead node only at -v (retries.py)
            check_fits(cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial)
            if hosts_trials(cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial):
                build_cache(cfg, progress and progress("decoding images into the cache", "images"))
            with store.lease() as lease:
                stopped = stop_previous(store.location)
                if stopped:
                    events.info(f"stopped {stopped} process(es) of the embedded Ray a killed run left on this machine")
                if recorder is not None:
                    recorder.update()
                if restart:
                    store.discard()
                store.write_config(cfg, attributes, versions=aal_sweep.versions())
                for repair in store.repair():  # missing or damaged segments: what was rebuilt, what trains again
                    events.info(repair.line())
                for moved in store.quarantine():
                    events.info(state.moved_line(moved))
                store.cleanup()
                store.compact(progress=progress and progress("compacting the results store", "files"))
                graph = from_store(store, cfg, attributes, allow_partial)  # what the store holds after the upkeep
                _check_weights(graph, store)
                sweep = Sweep(cfg, store, graph, allow_partial, events, lease)
                sweep.write_partners(force=True)
                finished = sweep.run(verbose, recorder, progress)
                if lease.lost:  # another driver took the folder over: one line, exit 2 (LeaseLost is an AalError)
                    raise lease.error()
                if not finished:
                    return _interrupted_exit(store, events)
        except KeyboardInterrupt:
            return _interrupted_exit(store, events)
        finally:
            with interrupt.shielded():  # a signal now only waits: Ray stopped half-way is what crashes
                if started_ray or (recorder is not None and ray.is_initialized()):  # also a start interrupted
                    ray.shutdown()
                if recorder is not None:
                    recorder.stop_leftovers()
        return sweep.finish()


class Sweep:
    """One Tune run of the graph, and what the driver keeps up to date while it goes."""

    def __init__(
        self,
        cfg: SweepConfig,
        store: Store,
        graph: Graph,
        allow_partial: bool,
        events: Events,
        lease=None,
    ):
        self.cfg, self.store, self.graph, self.allow_partial, self.events = cfg, store, graph, allow_partial, events
        self.lease = lease  # the folder's lease: lost, this run releases nothing more and stops its trials
        self.failed: list[str] = []
        self._partners_at = 0.0  # when partners.parquet was last written, and how long that took
        self._partners_took = 0.0
        self._partners_due = False

    def run(self, verbose: int, recorder: Recorder | None, progress=None) -> bool:
        """Train every trial the graph releases; True when the graph ran to its end (not interrupted).
        `progress`: as `run`'s, for the compaction at the end. (Not kept on the Sweep: Tune pickles its
        searcher and callbacks, which reach this object, and a stream does not pickle.)"""
        cfg, store, graph = self.cfg, self.store, self.graph
        pending = graph.pending()
        resuming = sum(1 for t in pending if TrialCheckpoints(store.location, t.trial_id).epochs())
        if resuming:
            self.events.info(
                f"[sweep] {resuming} interrupted trial(s) continue from their last epoch checkpoint", kind="resume"
            )
        for name in store.unfinished_experiments():
            store.close_experiment(name)  # not restored: its trials continue from their own checkpoints
        self.advance()  # a screened sweep's label correlation, rows a previous run settled
        if graph.finished():
            clear_done(store.location, graph.done)
            return True
        searcher = GraphSearcher(graph, self._outcome, self.advance, stop=self.stopping)
        name = store.new_experiment(EXPERIMENT)
        storage_path, storage_fs = store.tune_storage()
        callbacks = [
            Progress(graph, cfg.train.epochs, self.events, searcher.trial_of),
            StoreFailures(self.store_failure),
            Tick(self.write_partners_due),
            TrialLines(),
            Compaction(store, COMPACT_EVERY),
            *([RecordRay(recorder)] if recorder else []),
            *tune_callbacks(cfg),
        ]  # MLflow / W&B, as the config's `tracking` says
        tuner = tune.Tuner(
            trainable_for(cfg, store, embedded=recorder is not None),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                # counts each trial's own failures against max_failures; a lost node's are not (retries.py)
                scheduler=Retries(store, self.events, cfg.resources.max_failures, callbacks),
                num_samples=-1,
                reuse_actors=True,
                # Tune asks a custom searcher for one pending trial at a time unless a limit is set: the
                # cluster's slots (or resources.max_concurrent) keep every slot fed without a wait
                max_concurrent_trials=cfg.resources.max_concurrent
                or slots(cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial),
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                storage_filesystem=storage_fs,
                verbose=min(verbose, 2),
                failure_config=tune.FailureConfig(max_failures=-1),  # Tune retries all; Retries gives up
                callbacks=callbacks,
                stop=StopAll(self.stopping),
            ),
        )
        # a stop signal: the flag stops the searcher and the trials (StopAll), Tune's run ends, then the
        # KeyboardInterrupt; a second signal raises at once
        with _tune_quiet(verbose), interrupt.graceful():
            tuner.fit()
        if interrupt.received() or not searcher.is_finished or any(o == STOPPED for o in graph.outcome.values()):
            return False
        store.close_experiment(name)
        clear_done(store.location, graph.done)
        store.compact(progress=progress and progress("compacting the results store", "files"))
        self.write_partners(force=True)
        return True

    # ---- what the searcher asks ------------------------------------------------------------------------

    def _outcome(self, trial_id: str, result: dict | None, error: bool) -> str:
        """How a trial ended, for the graph: its rows stored (DONE), failed for good (Tune gave up; or it
        met a bad file and stored its own failure), or neither (STOPPED: Ctrl-C, SIGTERM)."""
        if error and interrupt.received():
            return STOPPED  # ended by the stop (SIGTERM to every process of a Slurm job, say): not its fault
        if error or DATA_ERROR in (result or {}):
            return FAILED
        return DONE if self.store.is_done(trial_id) else STOPPED

    def lease_lost(self) -> bool:
        return self.lease is not None and self.lease.lost

    def stopping(self) -> bool:
        """Release nothing more and stop the running trials: another driver took the folder, or Ctrl-C
        reached this one (its flag: the KeyboardInterrupt itself can be swallowed where it lands)."""
        return self.lease_lost() or interrupt.received()

    def advance(self) -> None:
        """Release what the last outcome made ready: a screened sweep's confirmed pairs, once its estimator
        trials ended; the adversarial trials of the rows that settled, once decided. With the lease lost,
        nothing (the shared files are another driver's now; the run ends after Tune stops)."""
        try:
            self._advance()
        except LeaseLost:
            return

    def _advance(self) -> None:
        graph = self.graph
        while graph.round_ready():  # a measured screening: plan (or read) the next round, release its pairs
            rnd = next_round(self.store, self.cfg, graph)
            graph.release(rnd)
            self.events.info(f"[sweep] {round_line(graph, rnd)}", kind="partners")
        if graph.confirmation_ready() and not graph.estimators_failed():
            estimates = make_estimates(self.store, self.cfg, graph.attributes)
            p = self.cfg.pairs
            pairs = confirmed_pairs(estimates, list(graph.attributes), p.confirm, p.rule)
            graph.confirm(pairs)
            m = len(graph.attributes)
            self.events.info(
                f"[sweep] screened by {p.estimator}: {len(pairs)} of {m * (m - 1) // 2} pairs "
                f"confirmed (pairs.confirm {p.confirm}, rule {p.rule})",
                kind="partners",
            )
        settled = graph.settled_rows()
        if not settled:
            return  # a partners.parquet write the budget held back is Tick's, on Tune's next step
        decided = decisions(self.store, self.cfg, graph.attributes, self.allow_partial, graph.expected())
        graph.decide({a: decided[a] for a in settled})
        for a in settled:
            d = graph.decisions[a]
            if d.missing and self.allow_partial:
                self.events.info(
                    f"[sweep] {a}: row decided without its missing cells ({', '.join(d.missing)}): --allow-partial",
                    kind="partners",
                )
        self._partners_due = True
        self.write_partners()

    def write_partners_due(self) -> None:
        """partners.parquet if a write is due and its time budget allows (Tune's every step)."""
        try:
            self.write_partners()
        except LeaseLost:
            return  # the shared files are another driver's now

    def write_partners(self, force: bool = False) -> None:
        """partners.parquet with every row's statistics, as rows are decided (within PARTNERS_SHARE)."""
        if not self.graph.has_rows or not (force or self._partners_due):
            return
        if not force and time.monotonic() - self._partners_at < self._partners_took / PARTNERS_SHARE:
            return
        t0 = time.monotonic()
        partners = chosen_partners(
            self.store,
            self.allow_partial,
            self.graph.attributes,
            statistics=True,
            cfg=self.cfg,
            rule=self.cfg.partners,
            expected=self.graph.expected(),
        )
        self.store.write_partners(partners)
        self._partners_at, self._partners_took, self._partners_due = time.monotonic(), time.monotonic() - t0, False

    def store_failure(self, trial_id: str, error: str, error_file: str) -> None:
        """A trial Tune gave up on: one line naming its error and where its tracebacks are (`error_file`,
        Tune's, relative to the experiments' folder), and its failed rows stored."""
        if interrupt.received():
            return  # ended by the stop, not by its own error: the rerun continues it (Sweep._outcome)
        attempts = self.store.attempts(trial_id)
        self.events.error(
            f"aal-sweep: {trial_id} failed ({attempts} attempt(s)): {error[:300]}; its traceback: "
            f"{self.store.show(f'{TUNE_DIR}/{error_file}')}"
        )
        if self.lease_lost():
            return  # the shared store is another driver's now: it retries the trial
        trial = self.graph.trials[trial_id]
        self.store.write_trial(failed_rows(trial, self.cfg, error[:500], attempts))
        self.failed.append(trial_id)

    # ---- the end -----------------------------------------------------------------------------------------

    def finish(self) -> int:
        """The exit code of a sweep that ran every trial it could; failures, blocked trials and incomplete
        rows named."""
        graph, events = self.graph, self.events
        failed = sorted(t for t, o in graph.outcome.items() if o == FAILED)
        if failed:
            events.error(
                f"aal-sweep: {len(failed)} trial(s) failed after their retries: {', '.join(failed)}; their "
                f"errors are in the store (status=failed); rerun the same command to retry them"
            )
        if graph.screened and graph.confirmed is None and graph.estimators_failed():
            events.error(
                f"aal-sweep: the screening estimator ({self.cfg.pairs.estimator}) did not finish: "
                f"{', '.join(graph.estimators_failed())}; no pair is confirmed yet: rerun the same command "
                f"to retry it, or set pairs.mode: exhaustive"
            )
            failed = failed or graph.estimators_failed()
        for base, blocked in graph.blocked().items():
            events.error(
                f"[{ADVERSARIAL_SHARED}] {len(blocked)} trial(s) wait for {base}, which is not stored; "
                f"rerun the same command to retry it"
            )
        incomplete = self._incomplete()
        if failed or incomplete:
            return 1
        events.info(f"sweep done: results in {self.store.uri}", kind="done")
        return 0

    def _incomplete(self) -> bool:
        """Name the rows of the pair matrix decided without some cells (so without a partner, unless
        --allow-partial); True when that leaves the sweep incomplete."""
        rows = self.graph.incomplete_rows()
        if not rows:
            return False
        unstored: dict[frozenset, list[str]] = {}  # cell {a} (single) or {a, b} (pair) -> its trials not stored
        for t in self.graph.trials.values():
            if t.kind in ("single", "pair") and t.trial_id not in self.graph.done:
                unstored.setdefault(frozenset(t.attributes), []).append(t.trial_id)

        def missing(a: str, cells) -> str:  # the trials behind a row's missing cells, else the cells
            trials = sorted(i for b in cells for i in unstored.get(frozenset({a, b}), []))
            return ", ".join(trials) or ", ".join(cells)

        described = "; ".join(f"{a} (missing {missing(a, cells)})" for a, cells in rows.items())
        if self.allow_partial:
            self.events.info(
                f"partners: --allow-partial: {len(rows)} row(s) decided without their missing cells: {described}"
            )
            return False
        self.events.error(
            f"aal-sweep: {len(rows)} attribute(s) have an incomplete row of the pair matrix, so no "
            f"partner and no adversarial trials yet: {described}; rerun the same command to finish "
            f"them, or pass --allow-partial to decide from the cells there are"
        )
        return True


@contextlib.contextmanager
def _tune_quiet(verbose: int):
    """Tune's own warnings (on Ctrl-C: "Resume experiment with: Tuner.restore(...)", which contradicts this
    tool's resume, the same command again) and its error lines about failed trials (a traceback per
    attempt, then "Trials did not complete") only at -v: this run's events say what happened, one line
    per failed trial naming its error file (StoreFailures). Other errors stay."""
    tune_log = logging.getLogger("ray.tune")
    before = tune_log.level, os.environ.get(PRINT_TRIAL_ERRORS)
    quiet = verbose < 1
    if quiet:
        tune_log.setLevel(logging.ERROR)
        os.environ[PRINT_TRIAL_ERRORS] = "0"  # Tune-native: no "Trial task failed" lines (read as fit starts)
        logging.getLogger("ray.tune.tune").addFilter(_not_trials_incomplete)
    try:
        yield
    finally:
        tune_log.setLevel(before[0])
        if quiet:
            logging.getLogger("ray.tune.tune").removeFilter(_not_trials_incomplete)
            if before[1] is None:
                os.environ.pop(PRINT_TRIAL_ERRORS, None)
            else:
                os.environ[PRINT_TRIAL_ERRORS] = before[1]


PRINT_TRIAL_ERRORS = "TUNE_PRINT_ALL_TRIAL_ERRORS"


def _not_trials_incomplete(record: logging.LogRecord) -> bool:
    """Tune's "Trials did not complete: [...]" (ray.tune.tune, at the end of a run with failed trials),
    which nothing in Tune turns off; the driver names the failed trials itself."""
    return not record.getMessage().startswith("Trials did not complete")


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]  # kind, attributes, lambda, method, seed: readable as it is


def _trial_dirname(trial) -> str:
    # Tune's default names a folder after every parameter: too long for filesystems at 40 attributes.
    return f"{trial.config['trial']['kind']}_{trial.trial_id}"


# ---- before and after ------------------------------------------------------------------------------------


def _check_weights(graph: Graph, store: Store) -> None:
    """A stored multitask_all trial whose weights are gone cannot start its adversarial_shared trials."""
    bases = {
        multitask_all_of(graph.cfg, graph.attributes, t.seed) for t in graph.pending() if t.kind == ADVERSARIAL_SHARED
    }
    lost = [b for b in sorted(bases & graph.done) if not store.location.is_file(weights_file(b))]
    if lost:
        raise AalError(
            f"{store.show(weights_file(lost[0]))}: missing, though {lost[0]} is stored; "
            f"adversarial_shared starts from it: rerun with --restart, or drop adversarial_shared "
            f"from phases"
        )


def _nothing_to_do(state: SweepState, cfg: SweepConfig, allow_partial: bool, events: Events) -> int:
    """Every trial is stored. Tidy what needs it (a killed compaction's leftovers, an unreadable
    partners.parquet or sweep.yaml) if the folder is writable; otherwise write nothing."""
    store = state.store
    events.info(nothing_to_do_line(store), kind="done")
    if state.tidy(cfg, allow_partial):
        return 0
    try:
        with store.lease():
            store.write_config(cfg, state.attributes, versions=aal_sweep.versions())
            store.cleanup()
            store.compact()
            if state.graph.has_rows:
                store.write_partners(
                    chosen_partners(store, allow_partial, state.attributes, statistics=True, cfg=cfg, rule=cfg.partners)
                )
        events.info(f"tidied {store.uri}: store compacted, sweep.yaml and partners.parquet rewritten")
    except StoreNotWritable as e:
        events.info(f"left {store.uri} as it is ({e})")
    return 0


def check_data(cfg: SweepConfig, attributes) -> None:
    """The dataset's annotation and image files where the driver runs, before Ray starts or anything is
    written: a missing file, a bad row, a split without images is one line at once."""
    from aal_sweep.data.index import load_index

    load_index(cfg.dataset.source(), attributes)


def build_cache(cfg: SweepConfig, progress=None) -> None:
    """Build (or find) the decode cache on the driver's node, where trials run too: a broken image then
    fails once, here, naming every bad file, instead of in every attempt of every trial. A driver on a node
    that hosts no trial (a head with no GPU) builds none: a cache no trial reads would cost its disk the
    whole decoded dataset (23.6 GB for CelebA at 218x178). Every other node builds its own."""
    from aal_sweep.data.cache import open_decoded

    open_decoded(cfg.dataset.source(), cfg.dataset.image_size, cfg.dataset.cache, progress=progress)


def _interrupted_exit(store: Store, events: Events) -> int:
    events.error(
        f"aal-sweep: interrupted ({interrupt.name()}); finished trials are stored in {store.show('trials')}. "
        f"Run the same command to resume."
    )
    return interrupt.exit_code()
