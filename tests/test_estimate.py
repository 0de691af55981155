"""`aal-sweep plan`: trials per phase from the plan, GPU-hours only from measured throughput, memory fit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_config

from aal_sweep.cli import main
from aal_sweep.config import load_config
from aal_sweep.errors import AalError
from aal_sweep.orchestration.estimate import count_trials, estimate, read_throughput, render_plan, trial_gpu_seconds

ATTRS = ("Disc", "Square", "Stripes", "Bright")
CELEBA = {"train": 162_770, "val": 19_867, "test": 19_962}


def config(tmp_path, tiny_root, name="c.yaml", **sections):
    base = {
        "train": {"epochs": 6, "batch_size": 256, "seeds": [0, 1]},
        "adversarial": {"method": "grl", "lambdas": [0.1, 0.5, 1.0]},
        "model": {"backbone": "resnet18", "pretrained": None},
        "resources": {"cpus_per_trial": 4, "gpus_per_trial": 1},
    }
    return load_config(write_config(tmp_path / name, tiny_root, **(base | sections)))


def record(kind, mode="compiled", concurrency=1, ips=14000.0, **kw):
    return {
        "kind": kind,
        "mode": mode,
        "concurrency": concurrency,
        "data": "auto",
        "backbone": "resnet18",
        "image_size": [16, 16],
        "batch_size": 256,
        "images_per_second": ips * concurrency,
        "images_per_second_per_trial": ips,
        "eval_images_per_second_per_trial": 40000.0,
        "first_step_seconds": 30.0,
        "peak_memory_bytes": 30 * 2**30,
        "resident_bytes": 22 * 2**30,
    } | kw


def throughput(records, memory=80 * 2**30):
    return {
        "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_memory_bytes": memory,
        "date": "2026-11-28",
        "torch": "2.14.1",
        "records": records,
    }


def test_counts_come_from_the_plan_with_seeds_and_the_adversarial_upper_bound(tmp_path, tiny_root):
    cfg = config(tmp_path, tiny_root)
    counts = count_trials(cfg, ATTRS)
    assert counts == {"single": {"single": 8}, "pair": {"pair": 12}, "adversarial": {"adversarial-grl": 24}}
    plan = estimate(cfg, ATTRS, CELEBA, None, "nowhere.json")
    assert plan["phases"] == {"single": 8, "pair": 12, "adversarial": 24} and plan["trials"] == 44
    assert plan["gpu_hours"] is None and "no GPU throughput measured (nowhere.json not found)" in plan["notes"][0]
    text = render_plan(plan)
    assert "upper bound" in text and "-" in text.splitlines()[-2]


def test_a_measured_screening_counts_its_budget_of_pairs(tmp_path, tiny_root):
    cfg = config(tmp_path, tiny_root, pairs={"mode": "screened", "budget": 0.5})  # 4 attributes: 6 pairs
    assert count_trials(cfg, ATTRS)["pair"] == {"pair": 3 * 2}  # 3 pairs, 2 seeds
    static = config(tmp_path, tiny_root, "s.yaml", pairs={"mode": "screened", "strategy": "static"})
    assert count_trials(static, ATTRS)["pair"] == {"pair": 12}  # confirmation unknown before: every pair


def test_gpu_hours_from_the_measured_records(tmp_path, tiny_root):
    cfg = config(tmp_path, tiny_root)
    records = [
        record("single", ips=16000.0),
        record("pair"),
        record("adversarial-grl", ips=12000.0),
        record("pair", mode="eager", ips=1.0),
    ]  # eager: not what auto compiles to on CUDA
    plan = estimate(cfg, ATTRS, CELEBA, throughput(records), "t.json")
    pair_seconds = 6 * (162_770 / 14000 + (19_867 + 19_962) / 40000) + 30
    assert trial_gpu_seconds(records[1], 6, CELEBA) == pytest.approx(pair_seconds)
    assert plan["gpu_hours_by_phase"]["pair"] == pytest.approx(12 * pair_seconds / 3600)
    assert plan["gpu_hours"] == pytest.approx(sum(plan["gpu_hours_by_phase"].values()))
    assert plan["warnings"] == []  # 22 GiB of data + 8 GiB working memory fit one 80 GiB GPU
    assert "NVIDIA H100 80GB HBM3" in render_plan(plan)


def test_unmeasured_kinds_give_no_total(tmp_path, tiny_root):
    cfg = config(tmp_path, tiny_root, adversarial={"method": "wgan", "lambdas": [0.1]})
    plan = estimate(cfg, ATTRS, CELEBA, throughput([record("single"), record("pair")]), "t.json")
    assert plan["gpu_hours"] is None and plan["gpu_hours_by_phase"]["adversarial"] is None
    assert plan["gpu_hours_by_phase"]["single"] > 0
    assert any(
        "not measured on NVIDIA H100 80GB HBM3: adversarial-wgan compiled at 1 per GPU" in n for n in plan["notes"]
    )


def test_fractional_gpus_warn_when_resident_data_does_not_fit(tmp_path, tiny_root):
    import dataclasses

    quarter = config(tmp_path, tiny_root, resources={"gpus_per_trial": 0.25})
    quarter = dataclasses.replace(quarter, dataset=dataclasses.replace(quarter.dataset, image_size=(218, 178)))
    records = [record(k, concurrency=4, image_size=[218, 178]) for k in ("single", "pair", "adversarial-grl")]
    plan = estimate(quarter, ATTRS, CELEBA, throughput(records), "t.json")
    # CelebA at 218x178: train 18.9 GB, val and test 2.3 GB each, + 8 GiB working memory per trial, replayed
    # through the 0.4-of-free rule: trials 1-2 keep every split on the GPU, 3-4 their train split on the host;
    # the fourth's val and test and working memory still overflow 80 GiB
    assert any("stay on the host" in w and "trial 3: train, trial 4: train" in w for w in plan["warnings"])
    assert any("puts 4 trials on one NVIDIA H100 80GB HBM3" in w for w in plan["warnings"])
    plan_small = estimate(
        quarter, ATTRS, {"train": 100, "val": 10, "test": 10}, throughput(records, 16 * 2**30), "t.json"
    )
    assert any("need" in w and "raise gpus_per_trial" in w for w in plan_small["warnings"])  # 4 x 8 GiB > 16 GiB
    roomy = estimate(quarter, ATTRS, CELEBA, throughput(records, 141 * 2**30), "t.json")
    assert not any("raise gpus_per_trial" in w for w in roomy["warnings"])


def test_cpu_configs_get_counts_only(tmp_path, tiny_root):
    cfg = config(tmp_path, tiny_root, resources={"gpus_per_trial": 0})
    plan = estimate(cfg, ATTRS, CELEBA, throughput([record("pair")]), "t.json")
    assert plan["gpu_hours"] is None and "trains on CPUs" in plan["notes"][0]


def test_plan_cli(tmp_path, tiny_root, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_root, resources={"gpus_per_trial": 1})
    assert main(["plan", str(cfg), "--format", "json", "--throughput", str(tmp_path / "none.json")]) == 2
    assert "--throughput: " in capsys.readouterr().err
    (tmp_path / "t.json").write_text(json.dumps(throughput([record("single", backbone="small_cnn", batch_size=32)])))
    assert main(["plan", str(cfg), "--format", "json", "--throughput", str(tmp_path / "t.json")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["phases"] == {"single": 4, "pair": 6, "adversarial": 8} and plan["images"]["train"] > 0
    assert plan["gpu_hours_by_phase"]["single"] > 0 and plan["gpu_hours"] is None  # pair, grl not measured
    graph = plan["graph"]  # the graph: per kind what it needs, and how many trials wait on what
    assert graph["kinds"]["pair"]["needs"] == "nothing" and graph["kinds"]["pair"]["pending"] == 6
    assert graph["kinds"]["adversarial"]["waiting"] == 8 and "row" in graph["kinds"]["adversarial"]["needs"]
    assert graph["rows"] == {"decided": 0, "undecided": 4, "waiting_for_trials": 4}
    (tmp_path / "bad.json").write_text("{}")
    assert main(["plan", str(cfg), "--throughput", str(tmp_path / "bad.json")]) == 2
    assert "is not one benchmarks/gpu.py wrote" in capsys.readouterr().err
    with pytest.raises(AalError, match="not one benchmarks/gpu.py wrote"):
        read_throughput(tmp_path / "bad.json")
    assert read_throughput(tmp_path / "none.json") is None


def test_plan_imports_neither_torch_nor_ray(tmp_path, tiny_root):
    cfg = write_config(tmp_path / "c.yaml", tiny_root)
    code = (
        "import sys; from aal_sweep.cli import main; main(['plan', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"AAL_SWEEP_THROUGHPUT": str(tmp_path / "none.json"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]" and "phase" in done.stdout


def test_table_1_variants_are_counted_too(tmp_path, tiny_root):
    cfg = config(
        tmp_path,
        tiny_root,
        phases=["single", "pair", "adversarial", "multitask_all", "adversarial_multiple", "adversarial_shared"],
    )
    plan = estimate(cfg, ATTRS, CELEBA, None)
    # 2 seeds; 3 lambdas; every attribute given a partner (all the others for adversarial_multiple)
    assert plan["phases"] == {
        "single": 8,
        "pair": 12,
        "multitask_all": 2,
        "adversarial": 24,
        "adversarial_shared": 24,
        "adversarial_multiple": 24,
    }
    assert set(plan["upper_bound_phases"]) == {"adversarial", "adversarial_shared", "adversarial_multiple"}
    assert render_plan(plan).count("upper bound") == 3


# ---- before the images are there (issue 19.5) ---------------------------------------------------------


def test_plan_with_attributes_listed_and_no_data_counts_and_says_what_it_did_not_check(tmp_path, tiny_root, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_root, resources={"gpus_per_trial": 1})
    (tmp_path / "t.json").write_text(
        json.dumps(
            throughput([record(k, backbone="small_cnn", batch_size=32) for k in ("single", "pair", "adversarial-grl")])
        )
    )
    argv = ["plan", str(cfg), "--throughput", str(tmp_path / "t.json"), "--set", "dataset.root=/data/celeba"]
    assert main(argv) == 2  # nothing names the attributes
    err = capsys.readouterr().err
    assert "list dataset.attributes" in err and err.count("\n") == 1
    assert main(argv + ["--set", "dataset.attributes=[Smiling,Male,Young]"]) == 0
    out = capsys.readouterr().out
    assert "total                12" in out  # 3 single + 3 pair + 3 x 2 lambdas adversarial (upper bound)
    assert "dataset not checked: /data/celeba missing (attributes taken as listed)" in out
    assert "split sizes not counted: /data/celeba: no such folder" in out
    assert "the dataset's split sizes are unknown (their files are not there): GPU-hours need them" in out
    assert main(argv + ["--set", "dataset.attributes=[Smiling,Male]", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["images"] is None and plan["gpu_hours"] is None and len(plan["unchecked"]) == 2


def test_plan_from_the_annotation_files_alone_counts_the_hours(tmp_path, tiny_root, capsys):
    import shutil

    root = tmp_path / "celeba"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        shutil.copy(tiny_root / name, root / name)
    cfg = write_config(tmp_path / "c.yaml", root, resources={"gpus_per_trial": 1})
    (tmp_path / "t.json").write_text(
        json.dumps(
            throughput([record(k, backbone="small_cnn", batch_size=32) for k in ("single", "pair", "adversarial-grl")])
        )
    )
    assert main(["plan", str(cfg), "--throughput", str(tmp_path / "t.json"), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["phases"] == {"single": 4, "pair": 6, "adversarial": 8} and sum(plan["images"].values()) == 400
    assert plan["gpu_hours"] > 0
    assert plan["unchecked"] == [f"images not checked: {root / 'img_align_celeba'} missing"]
    # the images' folder there: nothing left unchecked, and a broken annotation file is an error, as for run
    assert main(["plan", str(write_config(tmp_path / "full.yaml", tiny_root)), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchecked"] == []
    (root / "list_eval_partition.txt").write_text("nonsense\n")
    assert main(["plan", str(cfg)]) == 2
    assert "list_eval_partition.txt:1: expected 'image_name 0|1|2'" in capsys.readouterr().err
