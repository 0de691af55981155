"""Sweeps on real multi-node Ray clusters (ray.cluster_utils.Cluster on this machine): GPU shares, losing a
node mid-trial, a decode cache per node.

The nodes declare GPUs (Ray schedules on declared GPUs; with no CUDA the trainer uses the CPU). The driver is
`aal-sweep run --address` in a subprocess, as on a real head node; the nodes are children of this process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import Hold, write_config
from helpers import assert_same_results, check_no_redo, wait_gone
from ray_nodes import isolated_env, local_cluster, ray_temp_dir

from aal_sweep.config import load_config, resolve_attributes
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.orchestration.trials import plan_initial
from aal_sweep.store import Store

pytestmark = pytest.mark.slow
EPOCHS = 3  # a trial must be caught between two epochs, with a checkpoint behind it
TRAIN = {"epochs": EPOCHS, "batch_size": 32, "lr": 3e-3, "lr_milestones": [2], "seed": 0}
GPU_SHARE = {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_failures": 2}
# Four logical CPUs per GPU node: the GPU share, not the CPUs, is what limits a node to two trials.
GPU_NODE = {"num_cpus": 4, "num_gpus": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 attributes (3 single + 3 pair trials), epochs long enough to remove a node between two of them."""
    return make_synthetic(
        tmp_path_factory.mktemp("cluster") / "data", n_attributes=3, n_images=1200, size=(16, 16), seed=3
    )


def sweep_config(tmp: Path, data: Path, name: str, cache: bool = True, resources: dict | None = None) -> Path:
    path = write_config(
        tmp / f"{name}.yaml", data, train=TRAIN, resources=resources or GPU_SHARE, phases=["single", "pair"]
    )
    raw = yaml.safe_load(path.read_text())
    raw["results"] = str(tmp / name)
    if not cache:
        raw["dataset"]["cache"] = None  # each node's own: $AAL_SWEEP_CACHE of its processes
    path.write_text(yaml.safe_dump(raw))
    return path


def start_driver(
    config: Path, address: str, env: dict, log_level: str = "WARNING", verbose: int = 0
) -> subprocess.Popen:
    """`aal-sweep run CONFIG --address`, as on the head node of a real cluster."""
    cmd = [sys.executable, "-m", "aal_sweep.cli", "--log-level", log_level, "run", str(config), "--address", address]
    return subprocess.Popen(
        cmd + ["-v"] * verbose,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def attempts(store: Store, trial_ids) -> list[dict]:
    """Every attempt of every trial: its node, when it started, when it last finished an epoch."""
    out = []
    for t in trial_ids:
        events = store.journal(t)
        starts = [i for i, e in enumerate(events) if e["event"] == "start"]
        for k, i in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(events)
            epochs = [e for e in events[i:end] if e["event"] == "epoch"]
            out.append(
                {
                    "trial": t,
                    "node": events[i]["node_id"],
                    "start": events[i]["time"],
                    "end": epochs[-1]["time"] if epochs else events[i]["time"],
                }
            )
    return out


def max_concurrent(intervals: list[dict]) -> int:
    edges = sorted([(a["start"], 1) for a in intervals] + [(a["end"], -1) for a in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.fixture(scope="module")
def two_gpu_nodes(data, tmp_path_factory):
    """(a) A head with no GPU and two nodes of one GPU each; gpus_per_trial 0.5. Its results are the
    uninterrupted reference of the node-loss test."""
    tmp = tmp_path_factory.mktemp("two")
    env = isolated_env()
    config = sweep_config(tmp, data, "two")
    with local_cluster(env, [GPU_NODE, GPU_NODE]) as cluster:
        workers, head = [n.node_id for n in cluster.worker_nodes_in_order], cluster.head_node.node_id
        proc = start_driver(config, cluster.address, env)
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    return load_config(config), workers, head


def test_gpu_shares_fill_both_nodes_two_trials_each(two_gpu_nodes):
    cfg, workers, head = two_gpu_nodes
    store = Store(cfg.results)
    rows = store.trials()
    assert set(rows["status"]) == {"ok"}
    assert set(rows["trial_id"]) == {t.trial_id for t in plan_initial(cfg, resolve_attributes(cfg))}
    # every trial finished on a GPU node, and both GPU nodes ran trials
    assert set(rows["node_id"]) == set(workers), (set(rows["node_id"]), workers, head)
    runs = attempts(store, set(rows["trial_id"]))
    per_node = {n: max_concurrent([a for a in runs if a["node"] == n]) for n in workers}
    assert max(per_node.values()) == 2 and min(per_node.values()) >= 1, per_node  # 0.5 GPU each: two share one
    assert all(n <= 2 for n in per_node.values()), per_node


def test_tune_folder_has_short_trial_folders_and_tensorboard_events(two_gpu_nodes):
    """`tensorboard --logdir RESULTS/tune` shows each trial's curves and, as hparams, what the trial is."""
    cfg = two_gpu_nodes[0]
    folders = [p for p in (Path(cfg.results) / "tune").glob("*/*") if p.is_dir() and p.name != "checkpoints"]
    assert len(folders) == 6 and all(len(p.name) <= 20 for p in folders), [p.name for p in folders]
    for folder in folders:
        [events] = folder.glob("events.out.tfevents.*")
        tags, hparams = read_events(events)
        assert {"ray/tune/train_loss", "ray/tune/epoch"} <= tags
        kind = folder.name.split("_")[0]
        assert hparams["trial/kind"] == kind and hparams["trial/trial_id"].startswith(kind)
        assert " vs " in hparams["trial/attributes_text"] or kind == "single"


def read_events(path: Path) -> tuple[set[str], dict[str, str]]:
    """The scalar tags and the hparams of a TensorBoard events file (TFRecord framing, tensorboardX's protos)."""
    import struct

    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    data, i, tags, hparams = path.read_bytes(), 0, set(), {}
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4  # length, its crc, the record, its crc
        for v in event.summary.value:
            tags.add(v.tag)
            if v.metadata.plugin_data.plugin_name == "hparams":
                info = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                hparams |= {k: (x.string_value or x.number_value) for k, x in info.session_start_info.hparams.items()}
    return tags, hparams


def test_a_node_lost_mid_trial_costs_its_epoch_in_flight_only(two_gpu_nodes, data, tmp_path):
    """(b) Three GPU nodes; one is removed while a trial on it is between two epochs."""
    ref, _, _ = two_gpu_nodes
    env = isolated_env()
    config = sweep_config(tmp_path, data, "lose")
    cfg = load_config(config)
    store = Store(cfg.results)
    with local_cluster(env, [GPU_NODE] * 3) as cluster:
        nodes = {n.node_id: n for n in cluster.worker_nodes_in_order}
        # a pair trial waits after its first epoch (AAL_SWEEP_HOLD) until its node is gone: the moment comes
        # by an event, whatever the machine's speed
        hold = Hold(tmp_path / "hold", "pair-", epoch=1)
        proc = start_driver(config, cluster.address, hold.env(env))
        held = hold.wait(proc)
        victim = {"trial": held["trial"], "node": held["node_id"]}
        done_before = store.done_ids()
        worker = psutil.Process(held["pid"])  # it waits in the hold: alive
        worker_start, worker_nice = worker.create_time(), worker.nice()
        cluster.remove_node(nodes[victim["node"]], allow_graceful=False)  # as a machine that dies
        # A node's workers outlive its raylet for a moment: release the held trial only once its process is
        # gone, so it cannot go on training on the lost node
        wait_gone({held["pid"]: worker_start})
        hold.release()  # its retry, elsewhere, goes on
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    check_loss_said(out, err, [victim["node"]], victim["trial"])
    assert worker_nice == psutil.Process().nice(), "the cluster's trials ran at Ray's nice 15 (ray_nodes.py)"
    # Each attempt on the lost node either stored its trial (its rows name that node) or was cut short by the
    # loss. Which one is decided by the journal and the rows after the run, not by a look before the loss:
    # the node's other workers, outliving its raylet, may still finish a trial and store its rows.
    rows = store.trials().set_index("trial_id")
    lost_node_trials = {a["trial"] for a in attempts(store, store.journaled()) if a["node"] == victim["node"]}
    cut = {t for t in lost_node_trials if victim["node"] not in set(rows.loc[[t], "node_id"])}
    assert victim["trial"] in cut
    for trial in lost_node_trials - cut:  # stored by its one attempt, before the loss: never ran again
        assert [e["node_id"] for e in store.journal(trial) if e["event"] == "start"] == [victim["node"]], trial
    for trial in cut:  # each continued elsewhere from its last checkpoint
        events = store.journal(trial)
        starts = [e for e in events if e["event"] == "start"]
        assert len(starts) >= 2 and starts[-1]["node_id"] != victim["node"], starts
        finished = [e["epoch"] for e in events if e["event"] == "epoch" and e["time"] < starts[-1]["time"]]
        assert starts[-1]["from_epoch"] == max(finished, default=-1) + 1, (trial, events)
        if trial == victim["trial"]:  # caught between two epochs: it did not start over
            assert starts[-1]["from_epoch"] >= 1, events
    check_no_redo(store, done_before)  # nothing finished before the loss ran again
    assert set(rows["node_id"]) <= set(nodes)
    assert_same_results(ref.results, cfg.results)


def test_a_node_lost_twice_in_a_row_costs_each_trial_its_epoch_in_flight_only(two_gpu_nodes, data, tmp_path):
    """(c) A trial's node is removed while the trial is between two epochs; its retry, held again at the same
    epoch on another node, loses that node too. With max_failures 0, a node's loss counted as one of the
    trial's failures would fail it: a lost node must cost no retry, only the epoch in flight."""
    ref, _, _ = two_gpu_nodes
    env = isolated_env()
    config = sweep_config(tmp_path, data, "twice", resources={**GPU_SHARE, "max_failures": 0})
    cfg = load_config(config)
    store = Store(cfg.results)
    victim = next(t.trial_id for t in plan_initial(cfg, resolve_attributes(cfg)) if t.kind == "pair")
    with local_cluster(env, [GPU_NODE] * 3) as cluster:
        nodes = {n.node_id: n for n in cluster.worker_nodes_in_order}
        hold = Hold(tmp_path / "hold", victim, epoch=1)  # only the victim waits: the other trials run on
        proc = start_driver(config, cluster.address, hold.env(env))
        lost = []
        for _ in range(2):
            held = hold.wait(proc)
            while held["node_id"] in lost:  # the file of the attempt on the lost node: wait for the retry's
                time.sleep(0.1)
                held = hold.wait(proc)
            worker = psutil.Process(held["pid"])
            worker_start = worker.create_time()
            cluster.remove_node(nodes[held["node_id"]], allow_graceful=False)
            lost.append(held["node_id"])
            wait_gone({held["pid"]: worker_start})
        hold.release()
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    rows = store.trials()
    assert set(rows["status"]) == {"ok"}, rows[rows["status"] != "ok"]
    events = store.journal(victim)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["node_id"] for s in starts[:2]] == lost and starts[-1]["node_id"] not in lost, starts
    for start in starts[1:]:  # each attempt continued from the last epoch the one before finished
        finished = [e["epoch"] for e in events if e["event"] == "epoch" and e["time"] < start["time"]]
        assert start["from_epoch"] == max(finished) + 1 >= 1, (start, events)
    check_no_redo(store, set())
    check_loss_said(out, err, lost, victim)
    assert_same_results(ref.results, cfg.results)


def check_loss_said(out: str, err: str, lost: list[str], victim: str) -> None:
    """One line per lost node, naming the trials it cut and the epoch each continues from (the victim,
    held before epoch 1: from epoch 1); Ray's own report of the dead node only at -v."""
    said = [ln for ln in out.splitlines() if ln.startswith("[sweep] node ") and " lost: " in ln]
    for node in lost:
        mine = [ln for ln in said if ln.startswith(f"[sweep] node {node[:12]} ")]
        assert len(mine) == 1 and f"{victim} from epoch 1" in mine[0], (node, said, out, err)
    assert len(said) == len(lost), said
    for ray_says in ("(raylet)", "marked dead", "Raylet is terminated", "Last 20 lines of the Raylet logs"):
        assert ray_says not in out + err, (ray_says, out, err)


def test_each_node_builds_its_own_decode_cache_once(data, tmp_path):
    """(e) No shared cache folder: each node decodes the dataset once; its concurrent trials wait for that."""
    env = isolated_env()
    config = sweep_config(tmp_path, data, "cache", cache=False)
    caches = [tmp_path / f"cache-node{i}" for i in range(2)]
    # the driver checks the files where it runs (the head: no GPU, so no trial) and builds no cache there
    env["AAL_SWEEP_CACHE"] = str(tmp_path / "cache-driver")
    with local_cluster(env, [GPU_NODE, GPU_NODE], worker_env=[{"AAL_SWEEP_CACHE": str(c)} for c in caches]) as cluster:
        proc = start_driver(config, cluster.address, env, log_level="INFO", verbose=2)
        out, err = proc.communicate(timeout=900)
        logs = "".join(
            p.read_text(errors="replace") for p in ray_temp_dir(env).glob("session_2*/logs/worker-*")
        )  # not session_latest
    assert proc.returncode == 0, out + err
    rows = Store(load_config(config).results).trials()
    for cache in caches:  # one complete entry per node, built once, named in one log line
        entries = [p for p in cache.iterdir() if p.is_dir()]
        assert len(entries) == 1 and (entries[0] / "meta.json").is_file(), entries
        built = [ln for ln in logs.splitlines() if "decode cache built on node" in ln and str(cache) in ln]
        assert len(built) == 1, built
        assert "1200 images in" in built[0]
    assert rows["node_id"].nunique() == 2
    driver_cache = tmp_path / "cache-driver"
    assert not driver_cache.exists() or not [p for p in driver_cache.iterdir() if p.is_dir()], list(
        driver_cache.iterdir()
    )
