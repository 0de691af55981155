"""A trial's retries are for its own errors: a lost node costs its trials the epoch in flight, never a retry.

`resources.max_failures` counts a trial's own errors: an exception in its code, its worker dying by itself
(killed for memory, a segfault, a kill -9). Tune counts every failure (Trial.handle_error,
ray/tune/experiment/trial.py), a lost node's too, decides at once whether to retry (Trial.should_recover,
before any hook of ours runs), and retries at once: on a node that is gone but not yet declared dead, the
retry fails again. Seen: a trial retried twice within 2 s, both times `ActorUnavailableError: ...
Connection refused` (its retries reused Tune's cached actors of the lost node), its retries spent, stored
failed.

So Tune retries every failure (FailureConfig(max_failures=-1)) and Retries, the sweep's Tune
TrialScheduler (FIFO otherwise), keeps the count. Tune's retry path calls the scheduler's
`on_trial_error`, then `on_trial_add` (TuneController._requeue_trial):
- the trial's own exception (a RayTaskError) counts at once;
- a system failure (its actor unreachable or dead: RayActorError and its kinds) holds the trial (Tune's
  PAUSED: not started again) until Ray has decided about the node its actor lived on:
  - `ray.nodes()` has the node dead: the failure was the node's and does not count; one line names the
    node and the trials that continue, each from its epoch; the trial is released, and Tune starts it on
    the nodes alive;
  - the GCS has the actor dead by its worker's own death while the node lives (the raylet reported it), or
    the node is still alive after VERDICT_S: the failure was the trial's own and counts;
- a trial whose own failures exceed max_failures fails for good, as Tune would have failed it: status
  ERROR, the searcher told (error=True), the driver's callbacks' `on_trial_error` (the failed trial stored,
  the progress line, MLflow / W&B runs ended). Tune's own loggers (CSV, JSON, TensorBoard) close the trial's
  files when the experiment ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import ray
from ray import tune
from ray.exceptions import RayActorError, RayTaskError
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from aal_sweep.orchestration.callbacks import last_exception
from aal_sweep.orchestration.checkpoints import TrialCheckpoints
from aal_sweep.orchestration.events import Events
from aal_sweep.store import Store

log = logging.getLogger(__name__)
# Ray 2.60's GCS declares a node dead after 5 failed health checks 3 s apart (its defaults of
# health_check_failure_threshold and health_check_period_ms); a loaded GCS takes longer.
VERDICT_S = 60.0
POLL_S = 0.5  # ray.nodes() at most this often while a trial is held


class Retries(FIFOScheduler):
    def __init__(
        self,
        store: Store,
        events: Events,
        max_failures: int,
        callbacks: Sequence[tune.Callback] = (),
        nodes: Callable[[], list[dict]] = ray.nodes,
    ):
        """`callbacks`: the driver's Tune callbacks, told of a trial that fails for good (`on_trial_error`)."""
        super().__init__()
        self.store, self.events, self.max_failures, self.callbacks = store, events, max_failures, list(callbacks)
        self.nodes = nodes
        self.own: dict[str, int] = {}  # Tune's trial id -> its own failures in this run
        self.held: dict[Trial, tuple[str, str, float]] = {}  # trial -> (its actor's node, the actor, since)
        self.given_up: set[Trial] = set()  # to fail for good once Tune has requeued them
        self.dead = set(self._dead_nodes())  # nodes Ray has declared dead (before this run: never reported)
        self._polled = 0.0

    # ---- Tune's scheduler hooks ------------------------------------------------------------------------

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        # Tune 2.60 forgets to: a trial whose attempt failed while Tune reset a cached actor for it (a lost
        # node's leftover actor) stays in the controller's _resetting_trials (only a reset that succeeds
        # leaves it, TuneController._on_trial_reset), and _maybe_reuse_cached_actor then never starts it
        # again: the sweep hung (seen). Tune calls this hook with the controller itself, on every failure.
        getattr(tune_controller, "_resetting_trials", set()).discard(trial)
        if trial.status != Trial.ERROR:  # Tune failed it for good itself (a failure while not running)
            return
        where = failed_actor(trial)
        if where is None:
            self._count(trial)
        else:
            self.held[trial] = (*where, time.monotonic())

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if trial.status != Trial.PENDING:
            return
        if trial in self.given_up:
            self._give_up(tune_controller, trial)
        elif trial in self.held:  # a retry, requeued: it waits for the verdict on its node
            tune_controller._set_trial_status(trial, Trial.PAUSED)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.held.pop(trial, None)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        if self.held:
            self._decide(tune_controller)
        for trial in tune_controller.get_trials():  # FIFO, without the held ones (PAUSED)
            if trial.status == Trial.PENDING:
                return trial
        return None

    def debug_string(self) -> str:
        return f"FIFO; {len(self.held)} trial(s) wait for the verdict on their node"

    # ---- counting, giving up ---------------------------------------------------------------------------

    def _count(self, trial: Trial) -> None:
        self.own[trial.trial_id] = self.own.get(trial.trial_id, 0) + 1
        if self.own[trial.trial_id] > self.max_failures:
            self.given_up.add(trial)

    def _give_up(self, tune_controller, trial: Trial) -> None:
        """Fail the trial for good, as Tune's _process_trial_failure does when its retries are spent."""
        self.given_up.discard(trial)
        self.held.pop(trial, None)
        tune_controller._set_trial_status(trial, Trial.ERROR)
        tune_controller.search_alg.on_trial_complete(trial.trial_id, error=True)
        trials = tune_controller.get_trials()
        for callback in self.callbacks:
            callback.on_trial_error(iteration=0, trials=trials, trial=trial)

    # ---- the verdict -----------------------------------------------------------------------------------

    def _dead_nodes(self) -> dict[str, str]:
        """Node id -> its address, of the nodes declared dead."""
        return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in self.nodes() if not n.get("Alive")}

    def _decide(self, tune_controller) -> None:
        now = time.monotonic()
        if now - self._polled < POLL_S:
            return
        self._polled = now
        dead = self._dead_nodes()
        for node in sorted(dead.keys() - self.dead):
            self._say(node, dead[node], tune_controller.get_trials())
        self.dead |= dead.keys()
        for trial, (node, actor, since) in list(self.held.items()):
            if node not in self.dead:
                if now - since < VERDICT_S and not died_by_itself(actor):
                    continue  # undecided: Ray has not declared the node dead yet
                self._count(trial)
            del self.held[trial]
            if trial.status != Trial.PAUSED:  # stopped meanwhile (Ctrl-C, the lease lost): nothing to start
                self.given_up.discard(trial)
            elif trial in self.given_up:
                self._give_up(tune_controller, trial)
            else:
                tune_controller._set_trial_status(trial, Trial.PENDING)

    def _say(self, node: str, address: str, trials: list[Trial]) -> None:
        """One line for a node declared dead: the trials its loss cut short (their last attempt started there,
        their rows are not stored; their failures may still be on their way) and the epoch each continues
        from. A trial that only met a leftover actor of the node (Tune's actor cache) lost nothing."""
        cut = []
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR) and trial not in self.held:
                continue
            ours = trial.config["trial"]["trial_id"]
            starts = [e for e in self.store.journal(ours) if e["event"] == "start"]
            if starts and starts[-1].get("node_id") == node and not self.store.is_done(ours):
                epochs = TrialCheckpoints(self.store.location, ours).epochs()
                cut.append(f"{ours} from epoch {epochs[-1] + 1 if epochs else 0}")
        if cut:
            self.events.info(
                f"[sweep] node {node[:12]} ({address}) lost: {', '.join(cut)} continue(s) on the nodes "
                f"alive; not counted against resources.max_failures",
                kind="resume",
            )


def ray_reports(verbose: int) -> None:
    """Ray's reports to the driver (the GCS's and raylets' error channel: "The node with node id ... has been
    marked dead ...", "(raylet) Raylet is terminated ... Last 20 lines of the Raylet logs: ...") printed on
    the driver's output only at -v: without it, Retries' line says what a lost node means for the sweep.
    Ray prints them through print_worker_logs, which its own debugger silences with this switch
    (ray/util/rpdb.py); at -vv it also prints the workers' logs (log_to_driver)."""
    ray._private.worker._worker_logs_enabled = verbose >= 1


def failed_actor(trial: Trial) -> tuple[str, str] | None:
    """(node id, actor id) of the actor behind a trial's last failure, when it is a system failure (the actor
    unreachable or dead); None for the trial's own exception or when the node cannot be told."""
    exc = last_exception(trial)  # unreadable (None): counted, as Tune does
    if isinstance(exc, RayTaskError):
        cause = exc.as_instanceof_cause()
        exc = cause if isinstance(cause, RayActorError) else None
    if not isinstance(exc, RayActorError) or exc.actor_init_failed or not exc.actor_id:
        return None  # an exception in the actor's creation task is the trial's own
    try:
        # the GCS's actor table (ray.util.state needs the dashboard, which clusters may run without)
        node = (ray._private.state.actors(exc.actor_id).get("Address") or {}).get("NodeID")
    except Exception as e:  # an unknown actor, the GCS unreachable: count the failure, as Tune does
        log.debug("actor %s of trial %s: no node (%s)", exc.actor_id, trial, e)
        return None
    return (node, exc.actor_id) if node else None


def died_by_itself(actor_id: str) -> bool:
    """Whether the GCS has the actor dead by its own worker's death (killed for memory, a crash, a kill -9)
    while its node lives: the raylet reported it, so the node was alive to report. A lost node's actors
    are alive to the GCS until it declares the node dead (or dead as out of scope, once Tune dropped them):
    their failure waits for the node's verdict."""
    try:
        info = ray._private.state.actors(actor_id)
    except Exception:
        return False
    cause = info.get("DeathCause")
    if info.get("State") != "DEAD" or cause is None:
        return False
    if cause.HasField("oom_context"):
        return True
    context = cause.actor_died_error_context
    return cause.HasField("actor_died_error_context") and context.reason == context.WORKER_DIED
