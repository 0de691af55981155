"""Follow a sweep in MLflow or Weights & Biases through Ray Tune's own logger callbacks.

    run_config = tune.RunConfig(..., callbacks=[..., *tune_callbacks(cfg)])

One tracking run per trial, named by the trial's id (the one in the store), tagged with the sweep, kind,
attribute, partner, lambda, method and seed; every metric the trainable reports (per epoch) is logged by
Tune's callback. Off unless the config's `tracking:` names a service. The callbacks run in the Tune driver
(W&B's in a small actor on the driver's node), never in the training loop.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from aal_sweep.config import SweepConfig
from aal_sweep.errors import AalError
from aal_sweep.kinds import MULTITASK_ALL, partner_of

WANDB_TAG_LENGTH = 64  # W&B refuses longer tags


def trial_tags(sweep: str, trial: dict[str, Any]) -> dict[str, str]:
    """The tags of one trial's tracking run, from its Tune config's "trial" entry (Trial.to_dict())."""
    attributes = tuple(trial["attributes"])
    tags = {
        "sweep": sweep,
        "trial_id": trial["trial_id"],
        "kind": trial["kind"],
        "attribute": "all" if trial["kind"] == MULTITASK_ALL else attributes[0],
        "partner": partner_of(trial["kind"], attributes, attributes[0]),
        "lambda": None if trial.get("lam") is None else f"{trial['lam']:g}",
        "method": trial.get("method"),
        "seed": str(trial.get("seed", 0)),
    }
    return {k: v for k, v in tags.items() if v is not None}


def check_tracking(cfg: SweepConfig) -> None:
    """What can be checked of `cfg.tracking` before Ray starts, each a one-line AalError: the services'
    packages (naming the pip install), and the store MLflow will open."""
    if cfg.tracking.mlflow is not None:
        _require("mlflow", "mlflow")
        _check_store(cfg.tracking.mlflow.tracking_uri)
    if cfg.tracking.wandb is not None:
        _require("wandb", "wandb")


def tune_callbacks(cfg: SweepConfig) -> list:
    """Tune callbacks for the services `cfg.tracking` names ([] when none), checked (`check_tracking`)."""
    check_tracking(cfg)
    out = []
    if cfg.tracking.mlflow is not None:
        out.append(_mlflow_callback(cfg))
    if cfg.tracking.wandb is not None:
        out.append(_wandb_callback(cfg))
    return out


def _require(module: str, extra: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec: not importable
        found = False
    if not found:
        raise AalError(
            f"tracking.{extra}: the {module} package is not installed; pip install "
            f"'aal_sweep[{extra}]' (or pip install {module}), or drop tracking.{extra} from the config"
        )


def _mlflow_callback(cfg: SweepConfig):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    sweep = cfg.name

    class TrialRuns(MLflowLoggerCallback):
        """Tune's MLflow callback with each run named by the trial id and tagged with what it trains."""

        def log_trial_start(self, trial):
            if trial not in self._trial_runs:  # Tune's own names its run after Tune's trial name
                tags = {**self.tags, **trial_tags(sweep, trial.config["trial"]), "tune_trial": str(trial)}
                run = self.mlflow_util.start_run(tags=tags, run_name=trial.config["trial"]["trial_id"])
                self._trial_runs[trial] = run.info.run_id
            super().log_trial_start(trial)  # logs the config as parameters

    m = cfg.tracking.mlflow
    return TrialRuns(tracking_uri=m.tracking_uri, experiment_name=m.experiment or cfg.name)


def _check_store(uri: str | None) -> None:
    """The store MLflow will open (the config's tracking_uri, else MLflow's own choice: $MLFLOW_TRACKING_URI,
    else sqlite:///mlflow.db in MLflow 3) is one this MLflow opens: say so now, in one line, not as a
    traceback from inside Tune once the sweep has started.
    - A database (sqlite:///, postgresql://, ...) needs SQLAlchemy and Alembic, which the full `mlflow`
      package brings and `mlflow-skinny` (aal_sweep[mlflow]: the client) does not; skinny registers no
      database store, so MLflow fails with UnsupportedModelRegistryStoreURIException.
    - A folder needs MLFLOW_ALLOW_FILE_STORE=true in MLflow 3."""
    import mlflow
    from mlflow.store.db.db_types import DATABASE_ENGINES

    chosen = uri or mlflow.get_tracking_uri()
    shown = uri or f"{chosen} (MLflow's default: tracking.mlflow.tracking_uri is not set)"
    scheme = chosen.split("://", 1)[0].split("+", 1)[0] if "://" in chosen else ""
    if scheme in DATABASE_ENGINES:
        missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
        if missing:
            raise AalError(
                f"tracking.mlflow.tracking_uri: {shown} is a database store, which needs the full MLflow "
                f"package (mlflow-skinny, what aal_sweep[mlflow] installs, lacks {', '.join(missing)}): "
                f"pip install mlflow"
            )
        return
    if ":" in chosen and not chosen.startswith("file:"):
        return  # a server: checked by MLflow when the sweep starts
    allowed = getattr(mlflow.environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)  # MLflow 3's switch
    if allowed is not None and not allowed.get():
        raise AalError(
            f"tracking.mlflow.tracking_uri: {shown} is a folder, which this MLflow refuses as a store "
            f"unless MLFLOW_ALLOW_FILE_STORE=true is set; set it, or use a server "
            f"(http://HOST:5000) or sqlite:///PATH/mlflow.db (with pip install mlflow)"
        )


def _wandb_callback(cfg: SweepConfig):
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    sweep = cfg.name

    class WrittenRun(_WandbLoggingActor):
        """Tune's W&B logging actor, which returns only once W&B has written the whole run. Tune ray.kill()s
        the actor as soon as `run` returns, and Ray's kill takes the actor's child processes with it, W&B's
        service among them; `wandb.finish()` returns before that service has written the run out, so a
        run could end as a file with nothing but its header (seen in the suite, offline mode: the kill
        reached the actor 13 ms after `finish` began). `wandb.teardown()` waits for the service: W&B's own
        answer where its exit hook does not run."""

        def run(self):
            super().run()
            self._wandb.teardown()

    class TrialRuns(WandbLoggerCallback):
        """Tune's W&B callback with each run named by the trial id and tagged with what it trains. Its
        `kwargs` go to wandb.init after Tune's own (Tune documents name and group as overridable so)."""

        _logger_actor_cls = WrittenRun

        def log_trial_start(self, trial):
            info = trial.config["trial"]
            self.kwargs = {
                **self.kwargs,
                "name": info["trial_id"],
                "tags": [f"{k}:{v}"[:WANDB_TAG_LENGTH] for k, v in trial_tags(sweep, info).items() if k != "trial_id"],
            }
            super().log_trial_start(trial)

    w = cfg.tracking.wandb
    return TrialRuns(project=w.project or cfg.name, group=cfg.name, mode=w.mode)
