"""--set KEY=VALUE on run, submit, plan, train and config; `aal-sweep config`; --version (issue 19).

An override is the same edit in the file: same validation, same one-line errors, same training hash.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import write_config

import aal_sweep
from aal_sweep.cli import main
from aal_sweep.config import apply_overrides, load_config, parse_override, resolve_attributes
from aal_sweep.errors import AalError
from aal_sweep.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_an_override_is_the_same_edit_in_the_file(tmp_path, tiny_root):
    path = write_config(tmp_path / "c.yaml", tiny_root)
    sets = [
        "train.lr=0.01",
        "dataset.attributes=[Disc,Square]",
        "train.seeds=[0, 1]",
        "model.backbone=resnet18",
        "partners.rule=significant",
    ]  # partners is not in the file: the section is created
    overridden = load_config(path, overrides=sets)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["lr"] = 0.01
    raw["dataset"]["attributes"] = ["Disc", "Square"]
    raw["train"]["seeds"] = [0, 1]
    raw["model"]["backbone"] = "resnet18"
    raw["partners"] = {"rule": "significant"}
    edited = load_config(write_config(tmp_path / "edited.yaml", tiny_root, **{k: raw[k] for k in raw if k != "name"}))
    assert overridden == edited
    assert overridden.training_hash() == edited.training_hash() != load_config(path).training_hash()
    assert overridden.dataset.attributes == ("Disc", "Square") and overridden.partners.rule == "significant"


def test_overrides_apply_in_order_to_a_copy():
    raw = {"train": {"lr": 0.1}, "model": None}
    out = apply_overrides(raw, ["train.lr=0.2", "train.lr=0.3", "model.backbone=small_cnn", "dataset.cache="])
    assert out == {"train": {"lr": 0.3}, "model": {"backbone": "small_cnn"}, "dataset": {"cache": None}}
    assert raw == {"train": {"lr": 0.1}, "model": None}  # the parsed file is left as it was
    assert parse_override("dataset.attributes=[Smiling, Male]") == (("dataset", "attributes"), ["Smiling", "Male"])
    assert parse_override("name=a=b") == (("name",), "a=b")  # the first = splits


BAD_SETS = [
    ("train.lr", "--set 'train.lr': expected KEY=VALUE (e.g. --set train.lr=0.01"),
    ("=0.1", "--set '=0.1': empty key or key part in ''"),
    ("train..lr=0.1", "--set 'train..lr=0.1': empty key or key part in 'train..lr'"),
    ("train.epochs.x=1", "--set 'train.epochs.x=1': train.epochs is 2, not a mapping, so it has no key 'x'"),
    ("train.lr=[0.1", "--set 'train.lr=[0.1': the value is not valid YAML at line 1, column 5"),
    # the validation of the config itself, as if the file said so
    ("train.lrr=0.1", "--set train.lrr=0.1: train.lrr: unknown key (valid: epochs, batch_size, lr, "),
    ("train.epochs=zero", "train.epochs: expected an integer, got 'zero'"),
    ("dataset.attributes=[Disc,Smiling]", "dataset.attributes: unknown attribute 'Smiling' (valid: Disc, Square, "),
]


@pytest.mark.parametrize("bad,message", BAD_SETS, ids=[b for b, _ in BAD_SETS])
def test_a_bad_override_is_one_line_and_exit_2(tmp_path, tiny_root, capsys, bad, message):
    path = write_config(tmp_path / "c.yaml", tiny_root)
    assert main(["plan", str(path), "--set", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aal-sweep: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{c}"],
        ["submit", "{c}", "--address", "http://127.0.0.1:9"],
        ["plan", "{c}"],
        ["config", "{c}"],
        ["train", "{c}", "--kind", "single", "--attributes", "Disc"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_takes_set(tmp_path, tiny_root, capsys, argv):
    """Each command reads its config through --set: an unknown key is refused before anything runs."""
    path = write_config(tmp_path / "c.yaml", tiny_root)
    assert main([a.format(c=path) for a in argv] + ["--set", "train.epochs=1", "--set", "train.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "train.nope: unknown key (valid: epochs" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()  # nothing written


def test_submit_sends_the_overridden_config(tmp_path, tiny_root):
    from aal_sweep.orchestration.submit import cluster_config

    path = write_config(tmp_path / "c.yaml", tiny_root)
    cfg = cluster_config(path, "s3://bucket/sweep", ["train.epochs=3", "dataset.attributes=[Disc,Square]"])
    assert cfg.train.epochs == 3 and cfg.dataset.attributes == ("Disc", "Square") and cfg.results == "s3://bucket/sweep"
    with pytest.raises(AalError, match="train.epochs is 2, not a mapping"):
        cluster_config(path, "s3://bucket/sweep", ["train.epochs.x=3"])


def test_config_prints_what_sweep_yaml_records(tmp_path, tiny_root, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_root)
    sets = ["train.lr=0.01", "tracking.mlflow={experiment: e}"]
    assert main(["config", str(path), *sum((["--set", s] for s in sets), [])]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    cfg = load_config(path, overrides=sets)
    assert f"training hash {cfg.training_hash()}" in out.splitlines()[0]
    store = Store(cfg.results)
    store.write_config(cfg, resolve_attributes(cfg))
    recorded = yaml.safe_load((Path(cfg.results) / "sweep.yaml").read_text())
    assert printed == recorded["config"]
    assert (
        printed["dataset"]["attributes"] == ["Disc", "Square", "Triangle", "Cross"] and printed["train"]["lr"] == 0.01
    )
    # what it prints is itself a config: it loads back as the same one
    (tmp_path / "printed.yaml").write_text(out)
    assert load_config(tmp_path / "printed.yaml").training_hash() == cfg.training_hash()


def test_version_is_pyproject_s_and_names_ray_torch_pyarrow_without_importing_them():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert aal_sweep.__version__ == pyproject
    code = (
        "import sys\nfrom aal_sweep.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
        "    print(e.code, sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    v = aal_sweep.versions()
    assert first == f"aal-sweep {pyproject} (ray {v['ray']}, torch {v['torch']}, pyarrow {v['pyarrow']})"
    assert last == "0 []" and None not in v.values()


def test_sweep_yaml_records_the_versions(tmp_path, tiny_root):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_root))
    store = Store(cfg.results)
    store.write_config(cfg, ["Disc", "Square"], versions=aal_sweep.versions())
    reopened = Store.open(cfg.results)
    assert reopened.meta["versions"] == aal_sweep.versions() and reopened.config.name == "t"
