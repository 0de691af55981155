"""Shared fixtures: a real local Ray (started once), tiny synthetic datasets in the real CelebA layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from aal_sweep.data.synthetic import make_synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("RAY_AUTH_MODE", "token")  # as the CLI does, before anything imports ray


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """4 attributes, 400 images of 16x16: small_cnn learns it in about a second."""
    return make_synthetic(tmp_path_factory.mktemp("tiny") / "data", n_attributes=4, n_images=400, size=(16, 16), seed=1)


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
