"""Every bad input through the real CLI: one line on stderr, no traceback, exit 2, and nothing written.

Issue 8, sections 2 and 4. Each case builds its bad input in a fresh folder, runs `aal-sweep ...` (cli.main,
or the installed entry point where the parser itself is under test) and compares the folder before and after.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_config
from test_cache import break_images

from aal_sweep.cli import main

AAL = str(Path(sys.executable).with_name("aal-sweep"))


def snapshot(root: Path, locks: bool = False) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: 'nothing written' means this does not change.
    `locks`: leave out the decode cache's folder, its (empty) lock files, which a build attempt creates and
    must not delete (another process may be waiting on one), and the record of a failed build (no data)."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not (locks and (p.name == "cache" or p.suffix == ".lock" or p.name.endswith(".bad.json")))
    }


@pytest.fixture
def work(tmp_path, tiny_root):
    """A private copy of the tiny dataset and a valid config for it (results and cache not yet there)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return tmp_path, root, write_config(tmp_path / "c.yaml", root)


def refused(capsys, argv: list[str], where: Path, *expected: str, locks: bool = False) -> str:
    """Run the CLI; assert exit 2, one line on stderr holding every `expected` text, and `where` unchanged."""
    before = snapshot(where, locks)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aal-sweep: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert snapshot(where, locks) == before, "a refused command wrote something"
    return err.strip()


def _config(path: Path, root: Path, section: str, **values) -> Path:
    write_config(path, root)
    raw = yaml.safe_load(path.read_text())
    raw[section].update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


# ---- config values --------------------------------------------------------------------------------------

BAD_VALUES = [
    ("train", {"lr": math.nan}, "train.lr: expected a finite number, got nan"),
    ("train", {"lr": math.inf}, "train.lr: expected a finite number, got inf"),
    ("train", {"lr": -0.001}, "train.lr: -0.001 must be greater than 0"),
    ("train", {"weight_decay": math.nan}, "train.weight_decay: expected a finite number, got nan"),
    ("train", {"lr_gamma": math.inf}, "train.lr_gamma: expected a finite number, got inf"),
    ("adversarial", {"lambdas": [0.1, math.nan]}, "adversarial.lambdas: expected a list of finite numbers"),
    ("adversarial", {"gp_weight": math.nan}, "adversarial.gp_weight: expected a finite number, got nan"),
    ("resources", {"cpus_per_trial": 0}, "resources.cpus_per_trial: 0 must be greater than 0"),
]


@pytest.mark.parametrize(
    "section,values,message", BAD_VALUES, ids=[m.split(":")[0] + str(i) for i, (_, _, m) in enumerate(BAD_VALUES)]
)
def test_bad_config_value(work, capsys, section, values, message):
    tmp, root, _ = work
    cfg = _config(tmp / "bad.yaml", root, section, **values)
    refused(capsys, ["run", str(cfg)], tmp, message)
    assert not (tmp / "results").exists() and not (tmp / "cache").exists()


def test_yaml_syntax_error_gives_line_and_column(work, capsys):
    tmp, _, _ = work
    bad = tmp / "bad.yaml"
    bad.write_text("name: t\ndataset:\n  root: x\n   image_size: [16, 16]\n")
    refused(capsys, ["run", str(bad)], tmp, "not valid YAML at line 4, column 14: mapping values are not allowed here")


# ---- dataset files --------------------------------------------------------------------------------------


def _edit(path: Path, old: bytes, new: bytes, count: int = 1) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, count))


def _empty_val(root: Path) -> None:
    _edit(root / "list_eval_partition.txt", b" 1\r\n", b" 0\r\n", -1)


def _duplicate_names(root: Path) -> None:
    _edit(root / "list_attr_celeba.txt", b"Disc Square", b"Disc Disc")


def _duplicate_row(root: Path) -> None:
    _edit(root / "list_attr_celeba.txt", b"000003.jpg", b"000002.jpg")
    _edit(root / "list_eval_partition.txt", b"000003.jpg", b"000002.jpg")


def _non_utf8(root: Path) -> None:
    _edit(root / "list_attr_celeba.txt", b"000003.jpg", b"0000\xe93.jpg")


BAD_DATA = [
    (_empty_val, "list_eval_partition.txt: the val split is empty (no image has split 1)"),
    (_duplicate_names, "list_attr_celeba.txt:2: attribute name(s) ['Disc'] appear more than once on the names line"),
    (_duplicate_row, "list_attr_celeba.txt:5: image 000002.jpg is listed twice (first on line 4)"),
    (_non_utf8, "list_attr_celeba.txt:5: not UTF-8 text (byte 0xe9)"),
]


@pytest.mark.parametrize("damage,message", BAD_DATA, ids=[d.__name__.strip("_") for d, _ in BAD_DATA])
@pytest.mark.parametrize("command", ["run", "train", "dataset"])
def test_bad_dataset_files(work, capsys, damage, message, command):
    tmp, root, cfg = work
    damage(root)
    argv = {
        "run": ["run", str(cfg)],
        "train": ["train", str(cfg), "--kind", "single", "--attributes", "Disc"],
        "dataset": ["dataset", str(root)],
    }[command]
    refused(capsys, argv, tmp, message)
    assert not (tmp / "results").exists() and not (tmp / "cache").exists()


# ---- broken images (section 2) --------------------------------------------------------------------------


@pytest.mark.slow
def test_broken_images_run_names_every_file_writes_nothing(work):
    """Found where the driver builds its decode cache, after Ray started (a trial too large for every node
    is refused before that): the CLI in a process of its own, as a user runs it."""
    from helpers import cli

    tmp, root, cfg = work
    bad = break_images(root)
    before = snapshot(tmp, locks=True)
    out = cli("run", str(cfg))
    err = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and err.startswith("aal-sweep: error: ") and "Traceback" not in out.stderr, out.stderr
    assert snapshot(tmp, locks=True) == before
    for text in ("5 of 400 image(s) cannot be decoded", *bad):
        assert text in err, (text, err)
    for name, words in bad.items():
        assert words in err.split(name, 1)[1].split(")", 1)[0], (name, err)
    assert not (tmp / "results").exists()  # no sweep.yaml, no stub folder
    assert not [p for p in (tmp / "cache").iterdir() if p.is_dir()]  # no entry, no build folder


def test_truncated_jpeg_in_train_names_the_file(work, capsys):
    tmp, root, cfg = work
    image = root / "img_align_celeba" / "000007.jpg"
    image.write_bytes(image.read_bytes()[:-2])
    refused(
        capsys,
        ["train", str(cfg), "--kind", "single", "--attributes", "Disc"],
        tmp,
        "img_align_celeba/000007.jpg (truncated: image file is truncated",
        locks=True,
    )


def test_dataset_verify_lists_bad_images(work, capsys):
    tmp, root, _ = work
    assert main(["dataset", str(root), "--verify"]) == 0
    out = capsys.readouterr()
    assert "verified 400 images: all decode" in out.out and "400/400" in out.err
    bad = break_images(root)
    assert main(["dataset", str(root), "--verify"]) == 2
    out = capsys.readouterr()
    listed = [ln for ln in out.out.splitlines() if ln.startswith("bad: ")]
    assert sorted(ln.split()[1] for ln in listed) == sorted(f"img_align_celeba/{n}" for n in bad)
    error = [ln for ln in out.err.splitlines() if ln.startswith("aal-sweep: error: ")]
    assert len(error) == 1 and "5 of 400 image(s) cannot be decoded" in error[0] and "Traceback" not in out.err


# ---- paths that are files -------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "below"])
def test_results_path_is_a_file(work, capsys, sub):
    tmp, _, cfg = work
    (tmp / "taken").write_text("x")
    target = tmp / "taken" / sub if sub else tmp / "taken"
    refused(
        capsys, ["run", str(cfg), "--results", str(target)], tmp, f"--results: {tmp / 'taken'} is a file, not a folder"
    )


def test_results_key_is_a_file(work, capsys):
    tmp, root, _ = work
    (tmp / "taken").write_text("x")
    cfg = write_config(tmp / "c2.yaml", root, results=str(tmp / "taken" / "r"))
    refused(capsys, ["run", str(cfg)], tmp, f"results: {tmp / 'taken'} is a file, not a folder")


def test_report_out_is_a_file(work, capsys):
    tmp, _, _ = work
    (tmp / "page").write_text("x")
    refused(
        capsys,
        ["report", str(tmp / "results"), "--out", str(tmp / "page")],
        tmp,
        f"--out: {tmp / 'page'} is a file, not a folder",
    )


@pytest.mark.parametrize("sub", ["", "below"])
def test_make_synthetic_into_a_file(tmp_path, capsys, sub):
    (tmp_path / "taken").write_text("x")
    target = tmp_path / "taken" / sub if sub else tmp_path / "taken"
    refused(
        capsys,
        ["make-synthetic", str(target), "--images", "10"],
        tmp_path,
        f"{tmp_path / 'taken'} is a file, not a folder",
    )


def test_cache_folder_is_a_file(work, capsys):
    tmp, root, _ = work
    (tmp / "cachefile").write_text("x")
    cfg = write_config(tmp / "c2.yaml", root)
    raw = yaml.safe_load(cfg.read_text())
    raw["dataset"]["cache"] = str(tmp / "cachefile")
    cfg.write_text(yaml.safe_dump(raw))
    refused(
        capsys,
        ["train", str(cfg), "--kind", "single", "--attributes", "Disc"],
        tmp,
        f"dataset.cache: {tmp / 'cachefile'} is a file, not a folder",
    )


def test_user_errors_survive_pickling():
    """Ray and process pools copy exceptions with copy/pickle: each must rebuild with its message."""
    import copy
    import pickle

    from aal_sweep.errors import AalError, BadImagesError, ConfigError, DataError

    for e in (
        BadImagesError("/d", [("/d/img/1.jpg", "zero bytes")], 3),
        ConfigError("c.yaml", ["train.lr: bad"]),
        DataError("d"),
        AalError("a"),
    ):
        for clone in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
            assert type(clone) is type(e) and str(clone) == str(e)
    bad = [("/d/1.jpg", "zero bytes")]
    assert pickle.loads(pickle.dumps(BadImagesError("/d", bad, 3))).bad == bad


# ---- command-line arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--kind", "adversarial", "--attributes", "Disc,Square", "--lambda", "-1"],
            "--lambda: -1.0 must be a finite number greater than 0",
        ),
        (
            ["--kind", "adversarial", "--attributes", "Disc,Square", "--lambda", "nan"],
            "--lambda: nan must be a finite number greater than 0",
        ),
        (
            ["--kind", "pair", "--attributes", "Disc,Square", "--lambda", "0.1"],
            "--lambda applies to --kind adversarial only",
        ),
        (["--kind", "pair", "--attributes", "Disc,Disc"], "--attributes: Disc given twice"),
        (["--kind", "adversarial", "--attributes", "Disc,Disc", "--lambda", "0.1"], "--attributes: Disc given twice"),
    ],
)
def test_train_arguments(work, capsys, args, message):
    tmp, _, cfg = work
    refused(capsys, ["train", str(cfg), *args], tmp, message)


def test_log_level_loud_is_one_line(tmp_path):
    """The parser itself: run the installed entry point, as a user would."""
    p = subprocess.run(
        [AAL, "--log-level", "LOUD", "status", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("aal-sweep: error: argument --log-level: invalid choice: 'LOUD'")
    assert "DEBUG" in p.stderr and "WARNING" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_log_level_lower_case_still_works(tmp_path, capsys):
    assert main(["--log-level", "info", "dataset", str(tmp_path / "nope")]) == 2  # parsed; the folder is missing
    assert "no such folder" in capsys.readouterr().err


# ---- a worker that builds its own cache (section 2) -----------------------------------------------------


@pytest.mark.slow
def test_worker_data_error_fails_the_trial_once_naming_the_file(ray_local, work, capsys):
    """A node whose cache is not prebuilt (here: the Tune run starts without the driver's build_cache, as
    on another node of a cluster) meets a truncated JPEG: each trial fails at its first attempt, without
    Tune's retries, and the store's error names the file."""
    from aal_sweep.cli import show
    from aal_sweep.config import load_config
    from aal_sweep.orchestration.driver import Sweep
    from aal_sweep.orchestration.events import Events
    from aal_sweep.orchestration.graph import Graph
    from aal_sweep.store import Store

    tmp, root, _ = work
    image = root / "img_align_celeba" / "000007.jpg"
    image.write_bytes(image.read_bytes()[:-2])
    path = write_config(
        tmp / "w.yaml", root, phases=["single"], resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 2}
    )
    cfg = load_config(path)
    store = Store(cfg.results)
    store.write_config(cfg, ["Disc", "Square"])
    sweep = Sweep(cfg, store, Graph.build(cfg, ("Disc", "Square")), allow_partial=False, events=Events(show))
    assert sweep.run(verbose=0, recorder=None)  # ran to its end
    assert sweep.finish() == 1
    captured = capsys.readouterr()
    assert "0/2 done, 0 running, 2 failed" in captured.out  # the progress line counts them failed
    assert "2 trial(s) failed after their retries" in captured.err
    rows = store.trials()
    assert list(rows.status) == ["failed"] * 2 and list(rows.attempts) == [1, 1]
    assert rows.error.str.contains("img_align_celeba/000007.jpg \\(truncated").all()
    assert all(store.attempts(t) == 1 for t in rows.trial_id)  # one start each in the journal: no retry


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "the following arguments are required: command (see `aal-sweep --help`)"),
        (
            ["train", "c.yaml"],
            "the following arguments are required: --kind, --attributes (see `aal-sweep train --help`)",
        ),
        (["train", "c.yaml", "--kind", "x", "--attributes", "A"], "argument --kind: invalid choice: 'x'"),
        (["run", "c.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argument_errors_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("aal-sweep: error: ") and err.count("\n") == 1 and message in err


def test_dataset_verify_json_lists_bad_images(work, capsys):
    import json

    _, root, _ = work
    bad = break_images(root)
    assert main(["dataset", str(root), "--verify", "--format", "json"]) == 2
    out = capsys.readouterr()
    listed = json.loads(out.out)["bad_images"]
    assert sorted(e["file"] for e in listed) == sorted(f"img_align_celeba/{n}" for n in bad)
    assert "5 of 400 image(s) cannot be decoded" in out.err.splitlines()[-1]


@pytest.mark.parametrize("case", ["missing_partition", "nan_lr", "results_file"])
def test_real_entry_point(work, case):
    """The installed `aal-sweep` process itself: exit 2, one stderr line, no traceback, nothing written
    (broken images, found after Ray starts: test_broken_images_run_names_every_file_writes_nothing)."""
    tmp, root, cfg = work
    argv = ["run", str(cfg)]
    if case == "missing_partition":
        (root / "list_eval_partition.txt").unlink()
    elif case == "nan_lr":
        argv = ["run", str(_config(tmp / "bad.yaml", root, "train", lr=math.nan))]
    else:
        (tmp / "taken").write_text("x")
        argv += ["--results", str(tmp / "taken")]
    before = snapshot(tmp, locks=True)
    p = subprocess.run([AAL, *argv], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stderr.startswith("aal-sweep: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert snapshot(tmp, locks=True) == before and not (tmp / "results").exists()


# ---- what a path is, and what was expected (issue 20 §2) ----------------------------------------------


def test_a_config_given_as_the_dataset_and_a_folder_given_as_the_config(work, capsys):
    tmp, root, config = work
    refused(
        capsys, ["dataset", str(config)], tmp, f"{config}: is a file; expected the dataset folder", "`aal-sweep run`"
    )
    refused(capsys, ["run", str(root)], tmp, f"{root}: is a folder; expected a sweep YAML file")
    refused(capsys, ["plan", str(root)], tmp, "is a folder; expected a sweep YAML file")


@pytest.mark.parametrize(
    "pairs,message",
    [
        ({"mode": "sometimes"}, "pairs.mode: 'sometimes' is not one of exhaustive, screened"),
        (
            {"mode": "screened", "estimator": "oracle"},
            "pairs.estimator: 'oracle' is not one of lookahead, short, label_correlation",
        ),
        ({"mode": "screened", "confirm": 0}, "pairs.confirm: 0 must be at least 1"),
        ({"mode": "screened", "rule": "best"}, "pairs.rule: 'best' is not one of top_k, adaptive"),
        (
            {"confirm_all": True},
            "pairs.confirm_all: unknown key (valid: mode, strategy, budget, confidence, first_round, rank, seed, "
            "estimator, confirm, rule",
        ),
        (
            {"mode": "screened", "strategy": "psychic"},
            "pairs.strategy: 'psychic' is not one of active, uniform, static",
        ),
        ({"mode": "screened", "budget": 0}, "pairs.budget: 0 must be greater than 0"),
        (
            {"mode": "screened", "budget": 1.5},
            "pairs.budget: a share of the pair trials, at most 1 (every pair), got 1.5",
        ),
        ({"mode": "screened", "confidence": 1}, "pairs.confidence: a probability below 1 (e.g. 0.95), got 1"),
        ({"mode": "screened", "first_round": 0}, "pairs.first_round: 0 must be at least 1"),
    ],
)
def test_bad_pairs_settings_are_one_line(work, capsys, pairs, message):
    tmp, root, _ = work
    config = write_config(tmp / "p.yaml", root, pairs=pairs)
    refused(capsys, ["run", str(config)], tmp, message)


def test_screened_pairs_need_the_pair_matrix(work, capsys):
    tmp, root, _ = work
    config = write_config(tmp / "p.yaml", root, phases=["single"], pairs={"mode": "screened"})
    refused(
        capsys,
        ["run", str(config)],
        tmp,
        "pairs.mode: screened screens the pair matrix, which needs phases single and pair",
    )


@pytest.mark.slow
def test_a_bad_address_is_refused_even_with_nothing_to_do(tiny_sweep, capsys):
    cfg, results = tiny_sweep
    config = results.parent / "c.yaml"
    assert main(["run", str(config)]) == 0 and "nothing to do" in capsys.readouterr().out
    refused(
        capsys,
        ["run", str(config), "--address", "not an address"],
        results,
        "--address 'not an address': expected auto, ray://HOST:PORT or HOST:PORT",
    )
