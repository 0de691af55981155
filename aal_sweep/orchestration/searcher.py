"""A Tune Searcher that releases each trial of the sweep's graph when what it needs is stored.

    searcher = GraphSearcher(graph, outcome_of, advance)
    tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=slots)

`suggest` returns the most needed ready trial (orchestration/graph.py), None while every ready trial is
taken but some still run (a finishing one may release more), and Searcher.FINISHED when nothing runs and
nothing can start. `on_trial_complete` records the trial's outcome (the driver reads it from the store:
the trial writes its rows itself) and calls `advance`, the driver's step that confirms a screened sweep's
pairs and decides the rows that settled (the partner rule on the store's rows), so their adversarial
trials are released at once.

No state worth saving: the graph is rebuilt from the store on every run, so `save` / `restore` do nothing
(the sweep is never resumed through Tuner.restore; orchestration/checkpoints.py says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from aal_sweep.orchestration.graph import Graph
from aal_sweep.orchestration.trials import Trial

log = logging.getLogger(__name__)


class GraphSearcher(Searcher):
    def __init__(
        self,
        graph: Graph,
        outcome_of: Callable[[str, dict | None, bool], str],
        advance: Callable[[], None],
        stop: Callable[[], bool] = lambda: False,
    ):
        """`outcome_of(trial_id, last result, error)`: DONE, FAILED or STOPPED (graph.py), from what the
        store holds; `advance()`: called after every outcome, to release what it made ready; `stop()`:
        true once nothing more may start (the lease was lost, or Ctrl-C reached the driver)."""
        super().__init__(metric=None, mode=None)
        self.graph, self.outcome_of, self.advance, self.stop = graph, outcome_of, advance, stop
        self.tune_ids: dict[str, str] = {}  # Tune's trial id -> ours
        self.is_finished = False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stop():
            return Searcher.FINISHED  # not `is_finished`: the sweep did not run to its end
        trial = self.graph.next_ready(take=True)
        if trial is None:
            if not self.graph.running:
                self.is_finished = True
                return Searcher.FINISHED
            return None
        self.tune_ids[trial_id] = trial.trial_id
        return config_of(trial)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ours = self.tune_ids.pop(trial_id, None)
        if ours is None:
            return
        self.graph.complete(ours, self.outcome_of(ours, result, error))
        self.advance()

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the graph is rebuilt from the results store on every run (module docstring)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see `save`)."""

    def trial_of(self, tune_trial_id: str) -> str | None:
        return self.tune_ids.get(tune_trial_id)


def config_of(trial: Trial) -> dict[str, Any]:
    """The config Tune gets for a trial: readable keys, so ResultGrid (config/trial/kind, ...), trial names
    and TensorBoard's hparams (trial/kind, ...) show what the trial is. TensorBoard's hparams take scalars
    only: the attributes also as one string."""
    return {"trial": trial.to_dict() | {"attributes_text": " vs ".join(trial.attributes)}}
