"""Shared fixtures: a real local Ray (started once), tiny synthetic datasets in the real CelebA layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from aal_sweep.data.synthetic import make_synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The end-to-end files, longest first. pytest-xdist (--dist loadfile) sorts the files by their number of
# tests, stably, so this order decides only among files with as many tests.
LONGEST_FIRST = (
    "test_benchmarks.py",  # every --smoke in turn: 14 min at load average 17-21, 5 of them screening.py
    "test_resilience.py",
    "test_kill_stress.py",
    "test_submit.py",
    "test_cluster.py",
    "test_store_run.py",
    "test_variants_sweep.py",
    "test_embedded_ray.py",
    "test_sweep.py",
    "test_screening_sweep.py",
    "test_s3.py",
    "test_significance.py",
    "test_tracking.py",
    "test_reid.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


os.environ.setdefault("RAY_AUTH_MODE", "token")  # as the CLI does, before anything imports ray


@pytest.fixture(scope="session")
def ray_local():
    """One in-process Ray for the tests that run the driver in-process; its trials at the driver's priority,
    as on the CLI's embedded Ray (at Ray's nice 15 they crawled beside other busy processes)."""
    import ray

    from aal_sweep.orchestration.ray_connect import EMBEDDED_SYSTEM_CONFIG

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config=EMBEDDED_SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """4 attributes, 400 images of 16x16: small_cnn learns it in about a second."""
    return make_synthetic(tmp_path_factory.mktemp("tiny") / "data", n_attributes=4, n_images=400, size=(16, 16), seed=1)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id) -> Path:
    """A folder every worker of one `make test` run shares (pytest-xdist runs one process per worker),
    or this session's own when there are no workers."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def once(folder: Path, build) -> Path:
    """`build(folder)` once per run of the suite: the first worker to get here builds, under a file lock;
    the others wait for it and reuse what it built (pytest-xdist's pattern for a costly session fixture)."""
    from filelock import FileLock

    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_sweep(ray_local, tiny_root, shared_dir):
    """One finished sweep (single, pair, adversarial) on the tiny data, run once for the suite in process on
    a local Ray: (cfg, results folder). Read it; copy it (shutil.copytree) before changing it."""
    from aal_sweep.config import load_config

    def build(folder: Path) -> None:
        assert run_sweep(load_config(write_config(folder / "c.yaml", tiny_root))) == 0

    cfg = load_config(once(shared_dir / "tiny-sweep", build) / "c.yaml")
    return cfg, Path(cfg.results)


# The sweep every kill / Ctrl-C test interrupts: 5 epochs, so a trial has epochs before and after a hold
KILL_TRAIN = {"epochs": 5, "batch_size": 32, "lr": 3e-3, "lr_milestones": [3], "seed": 0}
KILL_RESOURCES = {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 1}


class KillSweep:
    """The interrupted tests' sweep: 3 attributes (Disc, Square, Triangle), 900 images of 16x16, 5 epochs,
    one lambda: 3 single + 3 pair + adversarial trials. `ref` is its uninterrupted run's results."""

    def __init__(self, tmp: Path, root: Path):
        self.tmp, self.root = tmp, root
        self.ref = tmp / "reference"  # the uninterrupted run's results (`config` names folders so)

    def config(self, name: str, **overrides) -> Path:
        """A config of this sweep whose results go to a folder of its own, `name`."""
        path = write_config(
            self.tmp / f"{name}.yaml",
            self.root,
            **(
                {"train": KILL_TRAIN, "resources": KILL_RESOURCES, "adversarial": {"method": "grl", "lambdas": [0.5]}}
                | overrides
            ),
        )
        raw = yaml.safe_load(path.read_text())
        raw["results"] = str(self.tmp / name)
        path.write_text(yaml.safe_dump(raw))
        return path


@pytest.fixture(scope="session")
def kill_sweep(ray_local, shared_dir) -> KillSweep:
    """The kill reference run, once for the suite (in process, on a local Ray)."""
    from aal_sweep.config import load_config

    def build(folder: Path) -> None:
        sweep = KillSweep(folder, make_synthetic(folder / "data", n_attributes=3, n_images=900, size=(16, 16), seed=3))
        assert run_sweep(load_config(sweep.config("reference"))) == 0

    folder = once(shared_dir / "kill", build)
    return KillSweep(folder, folder / "data")


def write_config(path: Path, root: Path, **overrides) -> Path:
    """A sweep YAML for the tiny data; `overrides` replace whole top-level sections."""
    cfg = {
        "name": "t",
        "results": str(path.parent / "results"),
        "dataset": {"format": "celeba", "root": str(root), "image_size": [16, 16], "cache": str(path.parent / "cache")},
        "model": {"backbone": "small_cnn", "pretrained": None},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "lr_milestones": [1], "seed": 0},
        "adversarial": {"method": "grl", "lambdas": [0.1, 0.5]},
        "phases": ["single", "pair", "adversarial"],
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 1},
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_sweep(cfg, **kwargs) -> int:
    """`aal-sweep run` in this process (on the shared local Ray when a test started one), its events printed
    as the CLI prints them."""
    from aal_sweep.cli import show
    from aal_sweep.orchestration import driver

    return driver.run(cfg, on_event=show, **kwargs)


# ---- interrupting a sweep at a chosen moment, by an event (aal_sweep/orchestration/trainable.py) -------------


class Hold:
    """AAL_SWEEP_HOLD: trials whose id contains `substring` stop before `epoch` until released.

    hold = Hold(tmp_path, "pair-Disc", epoch=1)
    proc = subprocess.Popen(cmd, env=hold.env())   # or monkeypatch the variables for an in-process run
    held = hold.wait(proc)                         # {"trial", "pid", "node_id", "epoch", "attempt", ...}
    ... kill something ...
    hold.release()                                 # every held trial goes on
    """

    def __init__(self, folder: Path, substring: str, epoch: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.substring, self.epoch = substring, epoch

    def env(self, base: dict | None = None) -> dict:
        return {
            **(os.environ if base is None else base),
            "AAL_SWEEP_HOLD": f"{self.substring}@{self.epoch}",
            "AAL_SWEEP_HOLD_DIR": str(self.folder),
        }

    def held(self) -> list[dict]:
        import json

        out = []
        for p in sorted(self.folder.glob("*.held")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # replaced as we read it: read it next time
                continue
        return out

    def wait(self, proc=None, timeout: float = 600, alive=None) -> dict:
        """Until a trial is held; `proc` (a Popen) must stay alive meanwhile, or `alive()` true."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(
                    f"the run ended (rc {proc.returncode}) before a trial was held:\n"
                    f"{(out or '')[-1500:]}\n{(err or '')[-3000:]}"
                )
            if alive is not None:
                assert alive(), "the run ended before a trial was held"
            held = self.held()
            if held:
                return held[0]
            time.sleep(0.05)
        raise AssertionError(f"no trial matching {self.substring!r} reached epoch {self.epoch}")

    def release(self) -> None:
        (self.folder / "release").touch()
