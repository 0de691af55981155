"""A whole sweep with its results on S3 (a moto server on 127.0.0.1): a second driver refused, kill -9 of
the driver and a resume with nothing lost or redone, then every query on the s3:// URI, equal to the same
queries on a local copy of the bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml
from conftest import Hold, write_config
from s3_server import ENV, make_bucket, s3_server  # noqa: F401 (fixture)

import aal_sweep
from aal_sweep.data.synthetic import make_synthetic
from aal_sweep.store import Store

pytestmark = pytest.mark.slow
TRAIN = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "lr_milestones": [2], "seed": 0}
RESOURCES = {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 2}


@pytest.fixture(scope="module")
def setup(s3_server, tmp_path_factory):
    """The AWS variables set for this module (drivers and the Ray workers they start inherit them), data."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ENDPOINT_URL", s3_server)
    for k, v in ENV.items():
        mp.setenv(k, v)
    tmp = tmp_path_factory.mktemp("s3")
    root = make_synthetic(tmp / "data", n_attributes=3, n_images=600, size=(16, 16), seed=3)

    def config(results: str) -> Path:
        # a screened pair phase (short estimates, K = M-1: every pair confirmed): its estimator trials, stored
        # estimates and confirmation go through S3 too, and a resume confirms from the stored estimates
        path = write_config(
            tmp / f"c{abs(hash(results))}.yaml",
            root,
            train=TRAIN,
            resources=RESOURCES,
            pairs={"mode": "screened", "strategy": "static", "estimator": "short", "confirm": 2},
        )
        raw = yaml.safe_load(path.read_text())
        raw["results"] = results
        path.write_text(yaml.safe_dump(raw))
        return path

    yield config, s3_server
    mp.undo()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aal_sweep.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def planned(path: Path) -> set[str]:
    from aal_sweep.config import load_config
    from aal_sweep.orchestration.graph import from_store

    cfg = load_config(path)
    store = Store.open(cfg.results)
    return set(from_store(store, cfg, tuple(store.attributes)).trials)


def test_sweep_on_s3_second_driver_refused_kill_9_resume_and_queries(setup, tmp_path):
    config, endpoint = setup
    uri = f"s3://{make_bucket(endpoint)}/sweeps/tiny"
    path = config(uri)
    store = Store(uri)
    hold = Hold(tmp_path / "hold", "pair-Disc-Square", epoch=1)  # waits after its first epoch: mid-trial
    proc = subprocess.Popen(
        [sys.executable, "-m", "aal_sweep.cli", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=hold.env(),
    )
    try:
        while not store.location.is_file("lease.json"):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        second = cli("run", str(path))  # one driver per results folder, on S3 too
        assert second.returncode == 2
        assert f"in use by another `aal-sweep run` (host {os.uname().nodename}, pid {proc.pid}, since" in second.stderr
        assert second.stderr.count("\n") == 1
        victim = hold.wait(proc)["trial"]
        while len(store.done_ids()) < 2:  # the singles run beside the held pairs
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        done_before = store.done_ids()
        # the screened pair phase's estimates were made and stored (on S3) before any pair was released
        assert sum(t.startswith("short-") for t in done_before) == 3
        estimates_before = aal_sweep.open_results(uri).estimates()
        assert estimates_before is not None and len(estimates_before) == 3 * 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray it started
        proc.wait()
    assert json.loads(store.location.read_bytes("lease.json"))["pid"] == proc.pid  # left by the kill

    resumed = cli("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    # the resumed run confirms from the stored estimates: none made again, the same pairs
    assert "screened by short" not in resumed.stdout
    pd.testing.assert_frame_equal(aal_sweep.open_results(uri).estimates(), estimates_before)
    starts = [e for e in store.journal(victim) if e["event"] == "start"]
    # killed between two epochs: it continued from its checkpoint, on S3 too
    assert "continue from their last epoch checkpoint" in resumed.stdout and starts[-1]["from_epoch"] == 1
    for trial in store.done_ids():
        starts = [e for e in store.journal(trial) if e["event"] == "start"]
        if trial in done_before:
            assert len(starts) == 1, f"{trial} finished before the kill but ran again"
    rows = store.trials()
    assert set(rows["trial_id"]) == planned(path) and set(rows["status"]) == {"ok"}
    assert rows.groupby("trial_id").size().max() <= 2  # no trial twice
    assert not store.location.is_file("lease.json")  # given back at the end

    # every query on the URI gives what it gives on a local copy of the bucket
    local = str(tmp_path / "copy")
    pafs.copy_files(
        store.location.root, local, source_filesystem=store.location.fs, destination_filesystem=pafs.LocalFileSystem()
    )
    for args in (
        ["matrix", "--format", "csv"],
        ["matrix", "--metric", "test_acc", "--format", "json"],
        ["partners", "--format", "csv"],
        ["matrix", "--estimated", "--format", "csv"],
    ):
        on_s3, here = cli(args[0], uri, *args[1:]), cli(args[0], local, *args[1:])
        assert on_s3.returncode == 0, on_s3.stderr
        assert on_s3.stdout == here.stdout
    status = cli("status", uri)
    assert status.returncode == 0 and "every confirmed cell stored" in status.stdout and uri in status.stdout
    assert "3 of 3 pairs confirmed" in status.stdout
    report = cli("report", uri, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert "s3://" in (tmp_path / "report" / "index.html").read_text()
    again = cli("run", str(path))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    names = [e.base_name for e in store.location.list("trials")]
    assert sum(n.startswith("segment-") for n in names) >= 1 and not any(n.startswith("single-") for n in names)
