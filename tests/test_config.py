"""Config validation: every problem named with its key and the valid choices; the CLI exits 2, one line."""

from __future__ import annotations

import pytest
import yaml

from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config
from aal_sweep.errors import ConfigError

from conftest import write_config


def _raw(root, **overrides):
    raw = {"name": "t", "dataset": {"root": str(root), "image_size": [16, 16]}, "model": {"backbone": "small_cnn"}}
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            raw.setdefault(section, {})[sub] = value
        else:
            raw[section] = value
    return raw


BAD = [
    ({"colour": "red"}, "colour: unknown key (valid: name, results, dataset"),
    ({"train__epochs": "six"}, "train.epochs: expected an integer, got 'six'"),
    ({"train__epochs": 0}, "train.epochs: 0 must be at least 1"),
    ({"train__lr": True}, "train.lr: expected a number, got True"),
    ({"model__backbone": "vgg"}, "model.backbone: 'vgg' is not one of resnet18, small_cnn"),
    ({"adversarial__method": "mmd"}, "adversarial.method: 'mmd' is not one of grl, gan, wgan"),
    ({"adversarial__lambdas": [0.1, 0.1]}, "adversarial.lambdas: duplicates in [0.1, 0.1]"),
    ({"phases": ["single", "triple"]}, "phases: 'triple' is not a phase (valid: single, pair, adversarial)"),
    ({"phases": ["adversarial"]}, "phases: adversarial needs single and pair"),
    ({"dataset__attributes": ["Disc"]}, "dataset.attributes: needs at least two attributes"),
    ({"dataset__attributes": ["Disc", "Disc", "Ring"]}, "dataset.attributes: duplicates ['Disc']"),
    ({"dataset__attributes": ["Disc", "Smiling"]}, "dataset.attributes: unknown attribute 'Smiling' (valid: Disc, Square, Triangle, Cross)"),
    ({"dataset__image_size": [16]}, "dataset.image_size: expected [height, width]"),
    ({"dataset__format": "coco"}, "dataset.format: 'coco' is not one of celeba"),
    ({"model__pretrained": "/nowhere/w.pth"}, "model.pretrained: '/nowhere/w.pth' is not a file"),
    ({"resources__gpus_per_trial": 1.5}, "resources.gpus_per_trial: fractions must be below 1"),
    ({"train": [1, 2]}, "train: expected a mapping, got list"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_config_names_key_and_choices(tiny_root, overrides, message):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(tiny_root, **overrides), "c.yaml")
    assert message in str(e.value)


def test_all_problems_reported_together(tiny_root):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(tiny_root, train__epochs=-1, model__backbone="vgg", colour=1), "c.yaml")
    assert len(e.value.problems) == 3
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("make_root,message", [
    (lambda p: p / "absent", "does not exist"),
    (lambda p: p, "lacks img_align_celeba, list_attr_celeba.txt, list_eval_partition.txt"),
])
def test_missing_dataset_folder(tmp_path, make_root, message):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(make_root(tmp_path)), "c.yaml")
    assert "dataset.root" in str(e.value) and message in str(e.value)


def test_missing_root_key():
    with pytest.raises(ConfigError, match=r"dataset.root: missing"):
        parse_config({"dataset": {}}, "c.yaml")


def test_defaults_are_the_papers_recipe(tiny_root):
    cfg = parse_config({"dataset": {"root": str(tiny_root)}})
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.lr_milestones, t.lr_gamma) == (6, 256, 1e-4, 5e-4, (4,), 0.1)
    assert cfg.adversarial.lambdas == (0.01, 0.1, 0.3, 0.5, 1.0) and cfg.adversarial.method == "grl"
    assert cfg.model.backbone == "resnet18" and cfg.phases == ("single", "pair", "adversarial")


def test_training_hash_tracks_training_settings_only(tiny_root):
    base = parse_config(_raw(tiny_root))
    assert parse_config(_raw(tiny_root, adversarial__lambdas=[0.3])).training_hash() == base.training_hash()
    assert parse_config(_raw(tiny_root, resources__cpus_per_trial=2)).training_hash() == base.training_hash()
    assert parse_config(_raw(tiny_root, train__epochs=3)).training_hash() != base.training_hash()
    assert parse_config(_raw(tiny_root, dataset__image_size=[24, 24])).training_hash() != base.training_hash()


def test_load_config_makes_paths_absolute(tmp_path, tiny_root, monkeypatch):
    path = write_config(tmp_path / "c.yaml", tiny_root)
    raw = yaml.safe_load(path.read_text())
    raw["results"] = "rel/results"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert load_config(path).results == str(tmp_path / "rel" / "results")


def test_cli_bad_config_one_line_exit_2(tmp_path, tiny_root, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw(tiny_root, train__epochs="six", model__backbone="vgg")))
    assert main(["train", str(path), "--kind", "single", "--attributes", "Disc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aal-sweep: error: ")
    assert "train.epochs" in err and "model.backbone" in err and "Traceback" not in err


def test_cli_missing_and_invalid_yaml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["run", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
