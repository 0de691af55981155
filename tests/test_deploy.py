"""The deployment files, checked without Docker or Kubernetes: every entrypoint under jobs/ parses with
aal_sweep's own CLI and names a config that exists and validates, the images are built from the
Dockerfile's base (the pinned Ray and Python), and every trial's GPU share fits its worker group.

(The Docker image itself is not built here: this machine has no Docker daemon and no registry access.)
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from aal_sweep.cli import build_parser
from aal_sweep.config import parse_config

REPO = Path(__file__).resolve().parents[1]
RAY = version("ray")  # installed here, pinned in pyproject.toml
IMAGE_HOME = "/home/ray/aal_sweep"  # the Dockerfile's WORKDIR: the repository's files are there in the image
YAMLS = sorted((REPO / "jobs").rglob("*.yaml"))
MANIFESTS = [p for p in YAMLS if "kind" in yaml.safe_load(p.read_text())]  # Kubernetes; the rest are sweeps


def dockerfile() -> dict:
    text = (REPO / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    return {"text": text, "base": base, "users": user, "workdir": re.search(r"^WORKDIR\s+(\S+)", text, re.M).group(1)}


def test_dockerfile_is_the_official_ray_gpu_image_of_the_pinned_versions():
    d = dockerfile()
    repo, tag = d["base"].split(":")
    assert repo == "rayproject/ray"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(x for x in deps if x.startswith("ray[")).split("==")[1]
    assert pinned == RAY
    python = "py" + tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"].strip(
        ">="
    ).replace(".", "")
    assert tag == f"{pinned}-{python}-gpu"
    assert d["users"] and d["users"][-1] == "ray"  # the image's non-root user, to the end
    assert d["workdir"] == IMAGE_HOME


def test_dockerfile_installs_dependencies_in_a_layer_before_the_code():
    lines = dockerfile()["text"].splitlines()
    first = lambda pattern: next(i for i, ln in enumerate(lines) if re.search(pattern, ln))  # noqa: E731
    assert first(r"^COPY .*pyproject\.toml") < first(r"pip install .*-r ") < first(r"^COPY .*aal_sweep")
    # the dependency layer sees pyproject.toml only, so a code change does not rebuild it
    assert not any(re.search(r"^COPY .*(aal_sweep|\s\.\s)", ln) for ln in lines[: first(r"pip install .*-r ")])


def entrypoints(manifest: dict) -> list[str]:
    return [manifest["spec"]["entrypoint"]] if manifest.get("kind") == "RayJob" else []


def containers(manifest: dict) -> list[tuple[str, dict, dict]]:
    """(group, rayStartParams, container) of every pod template of a RayJob's cluster."""
    spec = manifest["spec"]["rayClusterSpec"]
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, g.get("rayStartParams", {}), c) for name, g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest(path):
    manifest = yaml.safe_load(path.read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypointNumGpus"] == 0 and spec["entrypointNumCpus"] >= 1  # the driver takes no GPU
    base_tag = dockerfile()["base"].split(":")[1]
    assert spec["rayClusterSpec"]["rayVersion"] == RAY
    for group, _params, c in containers(manifest):
        assert c["image"].endswith(f"/aal-sweep:{base_tag}") or c["image"] == f"aal-sweep:{base_tag}", c["image"]
        assert any(e.get("secretRef") for e in c.get("envFrom", [])), f"{group}: S3 credentials from a Secret"
        assert any(m["mountPath"] == "/data" for m in c.get("volumeMounts", [])), f"{group}: the dataset volume"
    for entry in entrypoints(manifest):
        check_entrypoint(entry, manifest)


def check_entrypoint(entry: str, manifest: dict) -> None:
    argv = shlex.split(entry)
    assert argv[0] == "aal-sweep"
    args = build_parser().parse_args(argv[1:])  # aal_sweep's own parser: a typo fails here, not on the cluster
    assert args.command == "run" and args.address == "auto" and args.results.startswith("s3://")
    assert args.config.startswith(IMAGE_HOME + "/")
    config = REPO / args.config.removeprefix(IMAGE_HOME + "/")
    cfg = parse_config(yaml.safe_load(config.read_text()), str(config), check_files=False)
    mounts = {m["mountPath"] for _, _, c in containers(manifest) for m in c.get("volumeMounts", [])}
    assert any(cfg.dataset.root.startswith(m + "/") for m in mounts), (cfg.dataset.root, mounts)
    head = [p for g, p, _ in containers(manifest) if g == "head"][0]
    assert float(head.get("num-gpus", "0")) == 0  # no trial lands on the head
    workers = [(p, c) for g, p, c in containers(manifest) if g != "head"]
    assert workers
    share = cfg.resources.gpus_per_trial
    for params, c in workers:
        gpus = float(params.get("num-gpus", c["resources"]["limits"].get("nvidia.com/gpu", 0)))
        assert gpus == float(c["resources"]["limits"]["nvidia.com/gpu"])
        assert 0 < share <= gpus, f"gpus_per_trial {share} does not fit a worker's {gpus} GPU(s)"
        per_node = int(gpus / share) if share < 1 else int(gpus)  # Ray packs fractions on one GPU
        assert per_node * cfg.resources.cpus_per_trial <= float(c["resources"]["limits"]["cpu"]), (
            f"{per_node} trials x {cfg.resources.cpus_per_trial} CPUs exceed the worker's CPUs"
        )


def test_every_yaml_under_jobs_is_a_manifest_or_a_valid_sweep():
    assert [p.relative_to(REPO).as_posix() for p in MANIFESTS] == ["jobs/k8s/rayjob.yaml"]
    for path in set(YAMLS) - set(MANIFESTS):
        parse_config(yaml.safe_load(path.read_text()), str(path), check_files=False)
