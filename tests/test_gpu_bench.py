"""benchmarks/gpu.py at toy size on the CPU: it runs the real training code and writes the records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu  # noqa: E402


def test_fabricated_cache_has_the_layout_of_the_decode_cache(tmp_path, tiny_root):
    from aal_sweep.data.cache import open_decoded

    real = open_decoded(tiny_root, (16, 16), tmp_path / "cache")
    made = gpu.read_cache(gpu.fabricate(tmp_path / "fake", (16, 16), {"train": 600, "val": 3, "test": 0}))
    assert sorted(p.name for p in made.path.iterdir()) == sorted(p.name for p in real.path.iterdir())
    for split in gpu.SPLITS:
        assert made.images[split].dtype == real.images[split].dtype == np.uint8
        assert made.images[split].shape[1:] == real.images[split].shape[1:]
        assert made.labels[split].dtype == real.labels[split].dtype and set(np.unique(made.labels["train"])) == {0, 1}
    assert made.images["train"].shape[0] == 600 and made.images["train"][599].any()


def test_toy_benchmark_writes_a_record_per_measurement(tmp_path):
    out = tmp_path / "toy.json"
    # eager only: the compiled row is checked by test_train's compiled test (a cold compile takes a minute)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu.py"),
            "--toy",
            "--modes",
            "eager",
            "--concurrency",
            "2",
            "--out",
            str(out),
            "--tmp",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["toy"] is True and result["device"] == "cpu" and result["gpu"] is None
    got = {(r["kind"], r["mode"], r["concurrency"], r["data"]): r for r in result["records"]}
    want = {(k, "eager", 1, "auto") for k in gpu.KINDS} | {("pair", "eager", 2, "auto"), ("pair", "eager", 1, "jpeg")}
    assert set(got) == want
    for r in result["records"]:
        assert r["images_per_second"] > 0 and r["backbone"] == "small_cnn" and r["image_size"] == [16, 16]
        assert r["train_images"] == 1024  # the whole toy train split, every image once in the measured epoch
    two = got[("pair", "eager", 2, "auto")]
    assert two["images_per_second"] == pytest.approx(2 * two["images_per_second_per_trial"])
    assert len(two["resident"]) == 2 and not any(two["resident"][0].values())  # a CPU keeps data on the host
    single = got[("single", "eager", 1, "auto")]
    assert single["eval_seconds_per_epoch"] > 0 and single["first_step_seconds"] > 0
    assert single["peak_memory_bytes"] is None  # no GPU: no GPU memory to report
    assert "| kind" in done.stdout and "adversarial-wgan" in done.stdout
    ratio = (
        got[("pair", "eager", 1, "auto")]["images_per_second"] / got[("pair", "eager", 1, "jpeg")]["images_per_second"]
    )
    assert f"= {ratio:.1f}x the JPEG DataLoader" in done.stdout


def _bench(tmp_path, backbone: str, throughput: Path) -> dict:
    out = tmp_path / f"{backbone.replace('/', '-')}.json"
    args = ["--toy", "--backbone", backbone, "--kinds", "single", "pair", "--modes", "eager", "--concurrency", "1"]
    args += ["--steps", "4"]  # 4 training steps an epoch: a rate, not a whole toy epoch
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), *args, "--out", str(out)]
        + ["--throughput-out", str(throughput), "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_any_backbone_is_measured_and_plan_says_its_throughput(tmp_path, tiny_root, capsys):
    from conftest import write_config

    from aal_sweep.cli import main

    throughput = tmp_path / "throughput.json"
    for backbone in ("timm/test_resnet", "torchvision/mobilenet_v3_small"):
        result = _bench(tmp_path, backbone, throughput)
        got = {(r["kind"], r["data"]) for r in result["records"]}
        assert got == {("single", "auto"), ("pair", "auto"), ("pair", "jpeg")}  # the JPEG path normalises for it too
        assert all(r["backbone"] == backbone and r["images_per_second"] > 0 for r in result["records"])
    # the second backbone's measurements joined the first's in the file `plan` reads
    assert {r["backbone"] for r in json.loads(throughput.read_text())["records"]} == {
        "timm/test_resnet",
        "torchvision/mobilenet_v3_small",
    }
    for backbone in ("timm/test_resnet", "torchvision/mobilenet_v3_small"):
        cfg = write_config(
            tmp_path / "c.yaml",
            tiny_root,
            model={"backbone": backbone, "pretrained": None},
            train={"epochs": 2, "batch_size": 64, "compile": False},  # the toy's batch, eager as measured
            phases=["single", "pair"],
            resources={"cpus_per_trial": 1, "gpus_per_trial": 1},
        )
        assert main(["plan", str(cfg), "--throughput", str(throughput), "--format", "json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        rates = plan["throughput"]["images_per_second_per_trial"]
        assert set(rates) == {"single", "pair"} and plan["gpu_hours"] > 0 and not plan["notes"]
        assert plan["throughput"]["setting"] == f"{backbone} at [16, 16], batch 64, eager, 1 per GPU"
        assert main(["plan", str(cfg), "--throughput", str(throughput)]) == 0
        assert f"  {backbone} at [16, 16], batch 64, eager, 1 per GPU: single " in capsys.readouterr().out


def test_an_unknown_backbone_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(["--toy", "--backbone", "timm/convnxt_tiny"])
    assert e.value.code == 2
    assert "did you mean timm/convnext_tiny" in capsys.readouterr().err
