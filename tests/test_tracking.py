"""tracking: MLflow and W&B through Tune's own callbacks, one run per trial named by its id, no network.

A real Tune run on a local Ray (1 CPU, started and stopped here): MLflow writes to a local file store and
is read back with MlflowClient; W&B runs offline and its run file (LevelDB log of protobuf records) is read.
"""

from __future__ import annotations

import glob
import os
import struct
import sys

import pytest

from aal_sweep.cli import main
from aal_sweep.config import parse_config
from aal_sweep.errors import AalError, ConfigError
from aal_sweep.orchestration.tracking import trial_tags, tune_callbacks
from aal_sweep.orchestration.trials import Trial, trial_id

EPOCHS = 3


def _cfg(tracking, name="trk"):
    raw = {"name": name, "dataset": {"root": "/data/celeba", "attributes": ["Smiling", "Male"]}, "tracking": tracking}
    return parse_config(raw, "c.yaml", check_files=False)


TRIALS = [
    Trial(trial_id("single", ("Smiling",), 0, "abc"), "single", ("Smiling",), seed=0),
    Trial(
        trial_id("adversarial", ("Smiling", "Male"), 1, "abc", 0.1, "grl"),
        "adversarial",
        ("Smiling", "Male"),
        lam=0.1,
        method="grl",
        seed=1,
    ),
]


TUNE_RUN = """
import json, sys
import ray
from ray import tune
from aal_sweep.config import parse_config
from aal_sweep.orchestration.tracking import tune_callbacks

raw, trials, storage, epochs = json.loads(sys.argv[1])

def trainable(config):
    head = config["trial"]["attributes"][0]
    for epoch in range(epochs):
        tune.report({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), f"val_acc/{head}": 0.5 + 0.1 * epoch})

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
grid = tune.Tuner(trainable, param_space={"trial": tune.grid_search(trials)},
                  run_config=tune.RunConfig(name="tracking", storage_path=storage, verbose=0,
                                            callbacks=tune_callbacks(parse_config(raw, check_files=False)))).fit()
ray.shutdown()
sys.exit(1 if grid.errors else 0)
"""


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """One real Tune run of two trials with both callbacks, in a process of its own (its own local Ray,
    1 CPU; the suite's shared Ray stays untouched): MLflow to a local file store, W&B offline under a
    temporary WANDB_DIR, both set in the environment Ray and its logging actors start with."""
    import json
    import subprocess

    tmp = tmp_path_factory.mktemp("tracking")
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp),
        "WANDB_SILENT": "true",
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }  # MLflow 3's opt-in to a folder as its store
    raw = {
        "name": "trk",
        "dataset": {"root": "/data/celeba", "attributes": ["Smiling", "Male"]},
        "tracking": {
            "mlflow": {"tracking_uri": f"file://{tmp}/mlruns", "experiment": "exp"},
            "wandb": {"project": "proj", "mode": "offline"},
        },
    }
    args = json.dumps([raw, [t.to_dict() for t in TRIALS], str(tmp / "tune"), EPOCHS])
    out = subprocess.run([sys.executable, "-c", TUNE_RUN, args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_mlflow_has_one_run_per_trial_named_tagged_with_per_epoch_metrics(tune_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file://{tune_run}/mlruns")
    experiment = client.get_experiment_by_name("exp")
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {t.trial_id for t in TRIALS}
    adv = runs[TRIALS[1].trial_id]
    assert {k: adv.data.tags[k] for k in ("sweep", "kind", "attribute", "partner", "lambda", "method", "seed")} == {
        "sweep": "trk",
        "kind": "adversarial",
        "attribute": "Smiling",
        "partner": "Male",
        "lambda": "0.1",
        "method": "grl",
        "seed": "1",
    }
    assert "partner" not in runs[TRIALS[0].trial_id].data.tags  # a single-task trial has none
    history = client.get_metric_history(adv.info.run_id, "val_acc/Smiling")
    assert [round(m.value, 6) for m in sorted(history, key=lambda m: m.step)] == [0.5, 0.6, 0.7]
    assert adv.info.status == "FINISHED"
    assert adv.data.params["trial/trial_id"] == TRIALS[1].trial_id  # the trial's config, as parameters


def _wandb_records(path):
    """The protobuf records of a W&B run file: a 7-byte header, then the LevelDB log format (32 KiB blocks,
    each record a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, records, buf = open(path, "rb").read(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero-padded tail
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def _whole_run(path):
    """A W&B run file's records and their kinds, asserting that it holds the run and its exit."""
    records = _wandb_records(path)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "exit" in kinds, f"{path}: incomplete run file ({kinds})"
    return records, kinds


@pytest.mark.slow
def test_wandb_offline_run_per_trial_named_tagged_with_per_epoch_metrics(tune_run):
    runs = {}
    for path in glob.glob(f"{tune_run}/wandb/offline-run-*/run-*.wandb"):
        records, kinds = _whole_run(path)
        run = records[kinds.index("run")].run
        history = [
            {i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        runs[run.display_name] = (run, history)
    assert set(runs) == {t.trial_id for t in TRIALS}
    run, history = runs[TRIALS[1].trial_id]
    assert run.project == "proj" and run.run_group == "trk"
    assert {"kind:adversarial", "attribute:Smiling", "partner:Male", "lambda:0.1", "seed:1", "sweep:trk"} <= set(
        run.tags
    )
    assert [float(h["val_acc/Smiling"]) for h in history if "val_acc/Smiling" in h] == pytest.approx([0.5, 0.6, 0.7])


WANDB_ACTOR_THEN_KILL = """
import json, os, sys
from queue import Queue
import psutil
from ray.air.integrations.wandb import _QueueItem
from aal_sweep.config import parse_config
from aal_sweep.orchestration.tracking import tune_callbacks

raw, logdir = json.loads(sys.argv[1])
queue = Queue()
for i in range(3):
    queue.put((_QueueItem.RESULT, {"training_iteration": i + 1, "val_acc/Smiling": 0.5 + 0.1 * i}))
queue.put((_QueueItem.END, None))
actor_cls = tune_callbacks(parse_config(raw, check_files=False))[0]._logger_actor_cls
actor_cls(logdir, queue, [], [], project="proj", mode="offline", name="t").run()  # as the Ray actor runs it
# then what ray.kill does: the actor's children killed at once, and a quick exit (no exit hooks). W&B's
# service must have finished by now: nothing of it may be left running to be killed mid-write.
left = []
for child in psutil.Process().children(recursive=True):
    try:
        if child.status() != psutil.STATUS_ZOMBIE:
            left.append(child.pid)
            child.kill()
    except psutil.NoSuchProcess:
        pass
print(json.dumps(left))
os._exit(0)
"""


@pytest.mark.slow
def test_a_wandb_run_is_written_before_tune_kills_its_logging_actor(tmp_path):
    """Tune kills a trial's W&B logging actor (and with it W&B's service process) as soon as the actor's
    `run` returns: by then the run file must be whole. The suite once found one with nothing but its header."""
    import json
    import subprocess

    raw = {
        "name": "trk",
        "dataset": {"root": "/d", "attributes": ["Smiling", "Male"]},
        "tracking": {"wandb": {"mode": "offline"}},
    }
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    args = json.dumps([raw, str(tmp_path)])
    for _ in range(3):  # three runs, each one must be whole (not a retry)
        out = subprocess.run(
            [sys.executable, "-c", WANDB_ACTOR_THEN_KILL, args], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.splitlines()[-1]) == [], "W&B's service still ran when the actor's run returned"
    paths = glob.glob(f"{tmp_path}/wandb/offline-run-*/run-*.wandb")
    assert len(paths) == 3
    for path in paths:
        _, kinds = _whole_run(path)
        assert kinds.count("history") == 3, f"{path}: {kinds}"


def test_tags_of_every_kind():
    t = trial_tags(
        "s",
        {
            "trial_id": "mta",
            "kind": "multitask_all",
            "attributes": ["A", "B", "C"],
            "lam": None,
            "method": None,
            "seed": 2,
        },
    )
    assert t == {"sweep": "s", "trial_id": "mta", "kind": "multitask_all", "attribute": "all", "seed": "2"}
    t = trial_tags(
        "s",
        {
            "trial_id": "m",
            "kind": "adversarial_multiple",
            "attributes": ["A", "B", "C"],
            "lam": 0.5,
            "method": "grl",
            "seed": 0,
        },
    )
    assert t["partner"] == "B,C" and t["lambda"] == "0.5"


def test_off_by_default_and_not_in_the_training_hash(tmp_path, monkeypatch):
    plain, tracked = _cfg(None), _cfg({"mlflow": {}, "wandb": {"mode": "disabled"}})
    assert plain.tracking.mlflow is None and plain.tracking.wandb is None and tune_callbacks(plain) == []
    assert tracked.tracking.mlflow.experiment is None and tracked.tracking.wandb.mode == "disabled"
    assert plain.training_hash() == tracked.training_hash()
    # MLflow's own default store is a database (sqlite:///mlflow.db), which mlflow-skinny cannot open (refused
    # in one line: test_a_database_store_without_the_full_mlflow_is_one_line_before_ray): a folder here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert [type(c).__mro__[1].__name__ for c in tune_callbacks(tracked)] == [
        "MLflowLoggerCallback",
        "WandbLoggerCallback",
    ]


@pytest.mark.parametrize(
    "tracking,message",
    [
        ({"neptune": {}}, "tracking.neptune: unknown key (valid: mlflow, wandb)"),
        ({"mlflow": {"uri": "x"}}, "tracking.mlflow.uri: unknown key (valid: tracking_uri, experiment)"),
        (
            {"mlflow": "file:///x"},
            "tracking.mlflow: expected a mapping (tracking_uri, experiment; {} for the defaults)",
        ),
        ({"wandb": {"mode": "sometimes"}}, "tracking.wandb.mode: 'sometimes' is not one of online, offline, disabled"),
        ({"wandb": {"project": 3}}, "tracking.wandb.project: expected a string, got 3"),
    ],
)
def test_bad_tracking_sections(tracking, message):
    with pytest.raises(ConfigError) as e:
        _cfg(tracking)
    assert message in str(e.value)


def test_a_missing_package_is_one_line_naming_the_install(monkeypatch, tmp_path, tiny_root, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what Python does for a package that is not there
    with pytest.raises(
        AalError,
        match=r"tracking.wandb: the wandb package is not installed; pip install "
        r"'aal_sweep\[wandb\]'",
    ):
        tune_callbacks(_cfg({"wandb": {}}))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(AalError, match=r"pip install 'aal_sweep\[mlflow\]' \(or pip install mlflow\)") as e:
        tune_callbacks(_cfg({"mlflow": {}}))
    assert "\n" not in str(e.value)


def test_a_folder_store_mlflow_refuses_is_one_line(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(AalError, match="unless MLFLOW_ALLOW_FILE_STORE=true is set") as e:
        tune_callbacks(_cfg({"mlflow": {"tracking_uri": "file:///tmp/mlruns"}}))
    assert "\n" not in str(e.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert len(tune_callbacks(_cfg({"mlflow": {"tracking_uri": "file:///tmp/mlruns"}}))) == 1


def test_a_relative_mlflow_folder_becomes_absolute(tmp_path, tiny_root, monkeypatch):
    from conftest import write_config

    from aal_sweep.config import load_config

    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tiny_root, tracking={"mlflow": {"tracking_uri": "mlruns"}})
    assert load_config(path).tracking.mlflow.tracking_uri == str(tmp_path / "mlruns")
    cfg = load_config(path, overrides=["tracking.mlflow.tracking_uri=http://mlflow:5000"])
    assert cfg.tracking.mlflow.tracking_uri == "http://mlflow:5000"
    assert main(["config", str(path), "--set", "tracking.wandb={project: p}"]) == 0


def test_a_database_store_without_the_full_mlflow_is_one_line_before_ray(tmp_path, tiny_root):
    """mlflow-skinny (aal_sweep[mlflow]) cannot open sqlite:/// (nor MLflow 3's default, sqlite:///mlflow.db):
    `run` says so in one line naming the fix, before Ray starts (no session in its Ray temp folder) and
    before anything is written (no database, no results)."""
    import importlib.util
    import subprocess

    from conftest import write_config

    if all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")):
        pytest.skip("the full mlflow package is installed here: it opens sqlite:/// stores")
    ray_tmp = tmp_path / "raytmp"
    ray_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["RAY_TMPDIR"] = str(ray_tmp)
    db = tmp_path / "mlflow.db"
    for tracking, shown in (
        ({"tracking_uri": f"sqlite:///{db}"}, f"sqlite:///{db}"),
        ({}, f"sqlite:///{db} (MLflow's default: tracking.mlflow.tracking_uri is not set)"),  # cwd: tmp_path
    ):
        cfg = write_config(tmp_path / "c.yaml", tiny_root, phases=["single"], tracking={"mlflow": tracking})
        before = sorted(p.name for p in tmp_path.iterdir())
        out = subprocess.run(
            [sys.executable, "-m", "aal_sweep.cli", "run", str(cfg)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.startswith(
            f"aal-sweep: error: tracking.mlflow.tracking_uri: {shown} is a database store, which needs the full "
            f"MLflow package (mlflow-skinny, what aal_sweep[mlflow] installs, lacks sqlalchemy"
        ), out.stderr
        assert out.stderr.endswith("): pip install mlflow\n") and out.stderr.count("\n") == 1, out.stderr
        assert not list(ray_tmp.rglob("session_*")) and sorted(p.name for p in tmp_path.iterdir()) == before
