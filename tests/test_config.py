"""Config validation: every problem named with its key and the valid choices; the CLI exits 2, one line."""

from __future__ import annotations

import pytest
import yaml
from conftest import write_config

from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config
from aal_sweep.errors import ConfigError


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
    (
        {"phases": ["single", "triple"]},
        "phases: 'triple' is not a phase (valid: single, pair, adversarial, multitask_all, "
        "adversarial_multiple, adversarial_shared)",
    ),
    ({"phases": ["adversarial"]}, "phases: adversarial needs single and pair"),
    ({"dataset__attributes": ["Disc"]}, "dataset.attributes: needs at least two attributes"),
    ({"dataset__attributes": ["Disc", "Disc", "Ring"]}, "dataset.attributes: duplicates ['Disc']"),
    (
        {"dataset__attributes": ["Disc", "Smiling"]},
        "dataset.attributes: unknown attribute 'Smiling' (valid: Disc, Square, Triangle, Cross)",
    ),
    ({"dataset__image_size": [16]}, "dataset.image_size: expected [height, width]"),
    ({"dataset__format": "coco"}, "dataset.format: 'coco' is not one of celeba"),
    ({"model__pretrained": "/nowhere/w.pth"}, "model.pretrained: '/nowhere/w.pth' is not a file"),
    ({"resources__gpus_per_trial": 1.5}, "resources.gpus_per_trial: fractions must be below 1"),
    ({"train": [1, 2]}, "train: expected a mapping, got list"),
    # not finite, or out of range (issue 8 section 4)
    ({"train__lr": float("nan")}, "train.lr: expected a finite number, got nan"),
    ({"train__lr": float("inf")}, "train.lr: expected a finite number, got inf"),
    ({"train__lr": -0.1}, "train.lr: -0.1 must be greater than 0"),
    ({"train__lr": 0}, "train.lr: 0 must be greater than 0"),
    ({"train__weight_decay": float("nan")}, "train.weight_decay: expected a finite number, got nan"),
    ({"train__lr_gamma": float("-inf")}, "train.lr_gamma: expected a finite number, got -inf"),
    ({"adversarial__gp_weight": float("nan")}, "adversarial.gp_weight: expected a finite number, got nan"),
    (
        {"adversarial__lambdas": [0.1, float("nan")]},
        "adversarial.lambdas: expected a list of finite numbers, got [0.1, nan]",
    ),
    ({"adversarial__lambdas": [float("inf")]}, "adversarial.lambdas: expected a list of finite numbers, got [inf]"),
    ({"resources__cpus_per_trial": 0}, "resources.cpus_per_trial: 0 must be greater than 0"),
    ({"resources__gpus_per_trial": float("inf")}, "resources.gpus_per_trial: expected a finite number, got inf"),
    ({"resources__gpus_per_trial": -1}, "resources.gpus_per_trial: -1 must be at least 0"),
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


@pytest.mark.parametrize(
    "make_root,message",
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: p, "lacks img_align_celeba, list_attr_celeba.txt, list_eval_partition.txt"),
    ],
)
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
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.lr_milestones, t.lr_gamma) == (
        6,
        256,
        1e-4,
        5e-4,
        (4,),
        0.1,
    )
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


@pytest.mark.parametrize(
    "text,where",
    [
        ("name: t\ndataset: {root: [unclosed\n", "line 3, column 1"),
        ("name: t\ndataset:\n  root: x\n   bad: 1\n", "line 4, column 7"),
        ("name: t\n\tdataset: x\n", "line 2, column 1"),
    ],
)
def test_yaml_syntax_error_gives_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"not valid YAML at {where}:" in str(e.value) and "\n" not in str(e.value)


def test_yaml_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text"):
        load_config(path)


def test_duplicate_names_in_the_attribute_file_are_a_config_problem(tmp_path, tiny_root):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny_root, root)
    attr = root / "list_attr_celeba.txt"
    attr.write_bytes(attr.read_bytes().replace(b"Disc Square", b"Disc Disc", 1))
    with pytest.raises(ConfigError, match=r"attribute name\(s\) \['Disc'\] appear more than once"):
        parse_config(_raw(root))


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: t\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 1.0\n")
    with pytest.raises(
        ConfigError,
        match=r"not valid YAML at line 5, column 3: key 'lr' given twice \(first at "
        r"line 3\); keep one$",
    ):
        load_config(path)


def test_yaml_merge_keys_still_work(tmp_path, tiny_root):
    path = tmp_path / "m.yaml"
    path.write_text(f"""
dataset: {{root: {tiny_root}, image_size: [16, 16]}}
model: {{backbone: small_cnn}}
train:
  <<: {{epochs: 2, lr: 0.01}}
  epochs: 3
""")
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.01)  # the mapping's own key overrides the merged one


def test_shipped_configs_still_load():
    from pathlib import Path

    jobs = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml"))
    assert jobs
    for path in jobs:
        load_config(path, check_files=False)


# ---- validation for planning: before the images are there (issue 19.5) ------------------------------


def _annotations_only(tmp_path, tiny_root):
    """The CelebA list files without img_align_celeba/: what a researcher has before the image download."""
    import shutil

    root = tmp_path / "celeba"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        shutil.copy(tiny_root / name, root / name)
    return root


def test_planning_takes_listed_attributes_without_any_data(tmp_path):
    from aal_sweep.config import unchecked_files

    raw = _raw(
        tmp_path / "absent",
        dataset__attributes=["Smiling", "Male"],
        model__pretrained="/nowhere/w.pth",
        model__backbone="resnet18",
    )
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(raw)  # a run still needs the folder
    cfg = parse_config(raw, check_files="annotations")
    assert cfg.dataset.attributes == ("Smiling", "Male")
    assert unchecked_files(cfg) == [
        f"dataset not checked: {tmp_path / 'absent'} missing (attributes taken as listed)",
        "model.pretrained not checked: /nowhere/w.pth missing",
    ]


def test_planning_without_attributes_needs_the_annotation_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(tmp_path / "absent"), "c.yaml", check_files="annotations")
    assert "list dataset.attributes (e.g. --set dataset.attributes=[Smiling,Male]) to plan" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="lacks list_attr_celeba.txt, which names the attributes"):
        parse_config(_raw(tmp_path / "empty"), "c.yaml", check_files="annotations")


def test_planning_checks_the_annotation_file_when_it_is_there(tmp_path, tiny_root):
    from aal_sweep.config import unchecked_files

    root = _annotations_only(tmp_path, tiny_root)
    cfg = parse_config(_raw(root), check_files="annotations")
    assert unchecked_files(cfg) == [f"images not checked: {root / 'img_align_celeba'} missing"]
    with pytest.raises(ConfigError, match=r"dataset.attributes: unknown attribute 'Smiling' \(valid: Disc, "):
        parse_config(_raw(root, dataset__attributes=["Disc", "Smiling"]), check_files="annotations")
    with pytest.raises(ConfigError, match="lacks img_align_celeba"):
        parse_config(_raw(root))  # a run needs the images
    assert unchecked_files(parse_config(_raw(tiny_root))) == []


def test_planning_a_reid_dataset_from_its_attribute_file(tmp_path):
    from aal_sweep.config import unchecked_files
    from aal_sweep.data.synthetic_reid import write_attribute_mat

    root = tmp_path / "duke"
    write_attribute_mat(
        root / "duke_attribute.mat",
        "duke_attribute",
        {
            "train": (["0001", "0002"], {"backpack": [1, 2], "gender": [2, 1]}),
            "test": (["0003", "0004"], {"backpack": [2, 1], "gender": [1, 2]}),
        },
    )
    cfg = parse_config(_raw(root, dataset__format="duke"), check_files="annotations")
    assert [x.split(":")[0] for x in unchecked_files(cfg)] == ["images not checked"] * 2
    with pytest.raises(ConfigError, match=r"unknown attribute 'hat' \(valid: backpack, gender\)"):
        parse_config(
            _raw(root, dataset__format="duke", dataset__attributes=["backpack", "hat"]), check_files="annotations"
        )
