"""DukeMTMC-attribute and Market-1501-attribute: the official .mat files, the reID folders, the carved
validation split, bad input, the cache, `--compare paper-duke`, and one tiny Duke sweep end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml
from conftest import SHARED, write_config

from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config, resolve_attributes
from aal_sweep.data.cache import fingerprint, open_decoded
from aal_sweep.data.index import load_index
from aal_sweep.data.reid import split_validation
from aal_sweep.data.synthetic_reid import make_reid_tree, write_attribute_mat, write_images
from aal_sweep.data.types import DatasetSource
from aal_sweep.errors import ConfigError, DataError

DUKE_MAT = SHARED / "dukemtmc-attribute" / "duke_attribute.mat"
MARKET_MAT = SHARED / "market1501-attribute" / "market_attribute.mat"
needs_duke = pytest.mark.skipif(not DUKE_MAT.is_file(), reason=f"{DUKE_MAT} absent (real annotations not here)")
needs_market = pytest.mark.skipif(not MARKET_MAT.is_file(), reason=f"{MARKET_MAT} absent (real annotations not here)")


def raw_split(mat: Path, struct: str, split: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """The file read independently of aal_sweep: identities and each field's raw values, by name."""
    rec = scipy.io.loadmat(mat)[struct][split][0, 0]
    ids = [str(x[0]) for x in rec["image_index"][0, 0][0]]
    return ids, {n: rec[n][0, 0][0].astype(int) for n in rec.dtype.names if n != "image_index"}


def images_per_identity(ids: list[str], start: int = 1) -> dict[str, int]:
    return {i: start + k % 3 for k, i in enumerate(ids)}  # 1, 2 or 3 images: rates must be counted per image


def write_subset(root: Path, fmt: str, mat: Path, train: dict[str, int], test: dict[str, int]) -> Path:
    """The real .mat file and `n` tiny JPEGs for each chosen identity (labels drawn as patches don't matter here)."""
    make_reid_tree(root, fmt, mat, images_per_identity=0, size=(16, 8), identities={"train": [], "test": []})
    rng = np.random.default_rng(0)
    for folder, chosen in (("bounding_box_train", train), ("bounding_box_test", test)):
        for identity, n in chosen.items():
            write_images(root, fmt, folder, {identity: np.zeros(1, np.uint8)}, n, (16, 8), rng)
    return root


# ---- the real annotation files ------------------------------------------------------------------


@needs_duke
def test_duke_label_counts_per_image_match_the_real_file(tmp_path, capsys, caplog):
    ids, raw = raw_split(DUKE_MAT, "duke_attribute", "train")
    test_ids, test_raw = raw_split(DUKE_MAT, "duke_attribute", "test")
    _, val_ids = split_validation([i for i in ids if i not in ("0370", "0679")], 0.1, 0)
    chosen = ids[:40] + val_ids[:8] + ["0370", "0679"]  # the two with train.top = 0, and some validation ones
    train_n, test_n = images_per_identity(chosen), images_per_identity(test_ids[:30])
    root = write_subset(tmp_path / "duke", "duke", DUKE_MAT, train_n, test_n)
    caplog.clear()
    assert main(["dataset", str(root), "--layout", "duke", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "0370 (train.top), 0679 (train.top)" in caplog.text  # the warning names the dropped identities
    assert list(info["attributes"]) == list(raw)  # the train struct's order: Table 6's order
    assert info["identities"] == {"train": 630, "val": 70, "test": 1110}
    assert info["val_identities"] == val_ids and info["excluded"] == {
        "0370": "train.top = 0 (no label)",
        "0679": "train.top = 0 (no label)",
    }
    kept = {i: n for i, n in train_n.items() if i not in ("0370", "0679")}
    expected_images = {
        "train": sum(n for i, n in kept.items() if i not in val_ids),
        "val": sum(n for i, n in kept.items() if i in val_ids),
        "test": sum(test_n.values()),
    }
    assert info["splits"] == expected_images
    for split, (split_ids, split_raw, counts) in {
        "train": (ids, raw, {i: n for i, n in kept.items() if i not in val_ids}),
        "val": (ids, raw, {i: n for i, n in kept.items() if i in val_ids}),
        "test": (test_ids, test_raw, test_n),
    }.items():
        for name, values in split_raw.items():  # test fields are in another order: matched by name
            positives = sum(n * (values[split_ids.index(i)] == 2) for i, n in counts.items())
            assert info["attributes"][name][split] * expected_images[split] == pytest.approx(positives), (split, name)


@needs_duke
def test_duke_identity_counts_and_codings_over_the_whole_file(tmp_path):
    """All 702 + 1,110 identities, one image each: the per-identity positive counts are the file's."""
    ids, raw = raw_split(DUKE_MAT, "duke_attribute", "train")
    test_ids, test_raw = raw_split(DUKE_MAT, "duke_attribute", "test")
    root = write_subset(tmp_path / "duke", "duke", DUKE_MAT, dict.fromkeys(ids, 1), dict.fromkeys(test_ids, 1))
    index = load_index(DatasetSource(root, "duke"))
    assert len(index.attributes) == 23 and sum(map(len, index.files.values())) == 700 + 1110
    names = list(index.attributes)
    train_val = np.concatenate([index.labels["train"], index.labels["val"]])
    for name, values in raw.items():
        keep = [k for k, i in enumerate(ids) if i not in ("0370", "0679")]
        assert train_val[:, names.index(name)].sum() == (values[keep] == 2).sum(), name
        assert index.labels["test"][:, names.index(name)].sum() == (test_raw[name] == 2).sum(), name
    assert (raw["gender"] == 2).sum() == 308  # gender: 2 = female, the positive class, named as in the file
    assert set(index.identities["train"]).isdisjoint(index.identities["val"])
    assert all(f.startswith("bounding_box_test/") for f in index.files["test"])


@needs_market
def test_market_age_is_expanded_one_vs_rest_and_an_empty_attribute_stays(tmp_path):
    ids, raw = raw_split(MARKET_MAT, "market_attribute", "train")
    test_ids, test_raw = raw_split(MARKET_MAT, "market_attribute", "test")
    root = write_subset(tmp_path / "market", "market", MARKET_MAT, dict.fromkeys(ids, 2), dict.fromkeys(test_ids, 1))
    index = load_index(DatasetSource(root, "market"))
    assert index.attributes[:4] == ("age_young", "age_teenager", "age_adult", "age_old")
    assert len(index.attributes) == 30 and "age" not in index.attributes
    train_val = np.concatenate([index.labels["train"], index.labels["val"]])
    assert list(train_val[:, :4].sum(axis=0)) == [2 * 14, 2 * 569, 2 * 160, 2 * 8]  # two images per identity
    assert list(index.labels["test"][:, :4].sum(axis=0)) == [2, 640, 103, 5]
    assert (index.labels["test"][:, :4].sum(axis=1) == 1).all()  # exactly one age per image
    assert index.labels["test"][:, index.attributes.index("downpurple")].sum() == 0
    assert index.identities["val"] and not index.excluded
    assert len(index.files["test"]) == 750  # distractors (0000) and junk (-1) are not identities
    assert main(["dataset", str(root), "--layout", "market", "--attributes", "downpurple,up"]) == 0


# ---- the validation split ---------------------------------------------------------------------


def test_validation_split_is_seeded_identity_disjoint_and_stated():
    ids = [f"{k:04d}" for k in range(1, 201)]
    train, val = split_validation(ids, 0.1, 0)
    assert len(val) == 20 and set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert split_validation(list(reversed(ids)), 0.1, 0)[1] == list(reversed(val))  # depends on the set only
    assert split_validation(ids, 0.1, 0) == (train, val)
    assert split_validation(ids, 0.1, 1)[1] != val
    assert len(split_validation(ids[:3], 0.1, 0)[1]) == 1  # at least one
    with pytest.raises(DataError, match="leaves none"):
        split_validation(ids[:1], 0.5, 0)


# ---- a written .mat: the traps and bad input ----------------------------------------------------

TRAIN = ["0001", "0002", "0004", "0005", "0007", "0008", "0011", "0012", "0014", "0016"]
TEST = ["0003", "0006", "0009", "0010"]


def tiny_duke(root: Path, train_fields=None, test_fields=None, images=2) -> Path:
    """Three Duke attributes; test's fields in another order than train's, as in the official file;
    identity 0005 has top = 0 (no label)."""
    train_fields = train_fields or {
        "backpack": [2, 1, 1, 2, 2, 1, 1, 2, 1, 2],
        "gender": [1, 2, 1, 2, 1, 1, 2, 2, 1, 1],
        "top": [1, 1, 2, 0, 1, 2, 1, 1, 2, 1],
    }
    test_fields = test_fields or {"top": [1, 2, 1, 1], "backpack": [2, 2, 1, 1], "gender": [2, 1, 1, 2]}
    write_attribute_mat(
        root / "duke_attribute.mat", "duke_attribute", {"train": (TRAIN, train_fields), "test": (TEST, test_fields)}
    )
    rng = np.random.default_rng(1)
    ones = np.zeros(3, np.uint8)
    write_images(root, "duke", "bounding_box_train", dict.fromkeys(TRAIN, ones), images, (16, 16), rng)
    write_images(root, "duke", "bounding_box_test", dict.fromkeys(TEST + ["0000", "-1"], ones), images, (16, 16), rng)
    return root


def test_tiny_duke_reads_by_name_drops_the_unlabelled_identity_and_counts_per_image(tmp_path, caplog, capsys):
    root = tiny_duke(tmp_path / "d", images=3)
    index = load_index(DatasetSource(root, "duke", val_fraction=0.2, split_seed=0))
    assert index.attributes == ("backpack", "gender", "top")
    assert "0005" not in sum(index.identities.values(), []) and "0005 (train.top)" in caplog.text
    assert index.excluded == {"0005": "train.top = 0 (no label)"}
    assert len(index.identities["val"]) == 2 and len(index.files["val"]) == 6
    assert len(index.files["test"]) == 12  # 4 identities x 3; 0000 and -1 skipped
    test = dict(zip(TEST, [[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]]))  # [backpack, gender, top], 2 = 1
    for f, row in zip(index.files["test"], index.labels["test"]):
        assert list(row) == test[Path(f).name[:4]]
    assert main(["dataset", str(root), "--layout", "duke", "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{root}: 39 images; train 21, val 6, test 12"  # 7 + 2 + 4 identities x 3
    assert out[-2].startswith(
        "identities: train 7, val 2, test 4; validation identities (val_fraction 0.2, split_seed 0): "
    ) and out[-2].endswith(" ".join(index.identities["val"]))
    assert out[-1] == "excluded: identity 0005, train.top = 0 (no label)"
    sub = load_index(DatasetSource(root, "duke", 0.2), ["top", "backpack"])
    assert sub.attributes == ("top", "backpack")
    np.testing.assert_array_equal(sub.labels["test"], index.labels["test"][:, [2, 0]])


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda r: tiny_duke(
                r, train_fields={"backpack": [2, 1, 3, 2, 2, 1, 1, 2, 1, 2], "gender": [1] * 10, "top": [1] * 10}
            ),
            r"train.backpack is 3 for identity 0004 .*the coding is 1 \(no\) or 2 \(yes\)",
        ),
        (
            lambda r: tiny_duke(r, test_fields={"top": [1, 2, 1, 1], "backpack": [2, 2, 1, 1]}),
            r"field\(s\) \['gender'\] missing from test",
        ),
        (
            lambda r: (
                tiny_duke(r),
                write_images(
                    r,
                    "duke",
                    "bounding_box_train",
                    {"0999": np.zeros(3, np.uint8)},
                    1,
                    (16, 16),
                    np.random.default_rng(0),
                ),
            ),
            r"images of identity 0999 .*has no train labels",
        ),
        (
            lambda r: (tiny_duke(r), shutil.rmtree(r / "bounding_box_test"), (r / "bounding_box_test").mkdir()),
            r"bounding_box_test: no \.jpg images",
        ),
        (lambda r: (tiny_duke(r), (r / "duke_attribute.mat").unlink()), r"no duke_attribute\.mat"),
        (
            lambda r: (tiny_duke(r), (r / "duke_attribute.mat").write_bytes(b"not a mat file")),
            r"not a readable MATLAB file",
        ),
        (
            lambda r: (tiny_duke(r), write_attribute_mat(r / "duke_attribute.mat", "market_attribute", {})),
            r"no variable 'duke_attribute'",
        ),
        (
            lambda r: (
                tiny_duke(r),
                write_images(
                    r,
                    "duke",
                    "bounding_box_train",
                    {"0003": np.zeros(3, np.uint8)},
                    1,
                    (16, 16),
                    np.random.default_rng(0),
                ),
            ),
            r"images of identity 0003 .*has no train labels",
        ),  # a test identity's image among the training images
        (
            lambda r: write_attribute_mat(
                r / "duke_attribute.mat",
                "duke_attribute",
                {"train": (["0001", "0002", "0001"], {"hat": [1, 2, 1]}), "test": (["0003"], {"hat": [1]})},
            ),
            r"train.image_index repeats identities \['0001'\]",
        ),
    ],
    ids=[
        "value-outside-coding",
        "missing-field",
        "identity-without-labels",
        "empty-folder",
        "no-mat",
        "damaged-mat",
        "wrong-struct",
        "test-identity-in-train-folder",
        "repeated-identity",
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, change, message):
    root = tmp_path / "d"
    root.mkdir()
    change(root)
    with pytest.raises(DataError, match=message):
        load_index(DatasetSource(root, "duke"))
    assert main(["dataset", str(root), "--layout", "duke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aal-sweep: error: ") and "Traceback" not in err


def test_market_age_out_of_coding(tmp_path):
    ids = ["0002", "0007", "0010"]
    fields = {"age": [1, 5, 2], "hat": [1, 2, 1]}
    write_attribute_mat(
        tmp_path / "m" / "attribute" / "market_attribute.mat",
        "market_attribute",  # the other place
        {"train": (ids, fields), "test": (["0001"], {"hat": [1], "age": [2]})},
    )
    with pytest.raises(DataError, match=r"train.age is 5 for identity 0007 .*the coding is 1 to 4"):
        load_index(DatasetSource(tmp_path / "m", "market"))


def test_empty_validation_split_is_refused(tmp_path):
    root = tiny_duke(tmp_path / "d")
    _, val = split_validation([i for i in TRAIN if i != "0005"], 0.1, 0)
    for f in (root / "bounding_box_train").glob(f"{val[0]}_*"):
        f.unlink()
    with pytest.raises(DataError, match="no image of the 1 val identities"):
        load_index(DatasetSource(root, "duke"))


# ---- config, cache ------------------------------------------------------------------------------


def duke_config(tmp_path: Path, root: Path, **dataset) -> dict:
    return {
        "name": "d",
        "results": str(tmp_path / "res"),
        "model": {"backbone": "small_cnn"},
        "dataset": {"format": "duke", "root": str(root), **dataset},
    }


def test_config_checks_the_duke_layout_and_resolves_its_attributes(tmp_path):
    root = tiny_duke(tmp_path / "d")
    cfg = parse_config(duke_config(tmp_path, root))
    assert resolve_attributes(cfg) == ("backpack", "gender", "top")
    assert (cfg.dataset.val_fraction, cfg.dataset.split_seed) == (0.1, 0)
    assert cfg.to_dict()["dataset"]["val_fraction"] == 0.1  # recorded in sweep.yaml's config
    other = parse_config(duke_config(tmp_path, root, split_seed=3))
    assert other.training_hash() != cfg.training_hash()  # another validation split, other results
    with pytest.raises(ConfigError) as e:
        parse_config(duke_config(tmp_path, root, val_fraction=1.5, attributes=["backpack", "Smiling"]))
    assert "dataset.val_fraction: 1.5 must be below 1" in str(e.value)
    assert "unknown attribute 'Smiling' (valid: backpack, gender, top)" in str(e.value)
    with pytest.raises(ConfigError, match="lacks bounding_box_test"):
        shutil.rmtree(root / "bounding_box_test")
        parse_config(duke_config(tmp_path, root))
    with pytest.raises(ConfigError, match="dataset.format: 'viper' is not one of celeba, duke, market"):
        parse_config({**duke_config(tmp_path, root), "dataset": {"format": "viper", "root": str(root)}})


def test_celeba_training_hash_ignores_the_split_settings(tiny_root, tmp_path):
    base = {"name": "c", "results": str(tmp_path / "r"), "dataset": {"root": str(tiny_root)}}
    a = parse_config(base).training_hash()
    b = parse_config(
        {**base, "dataset": {"root": str(tiny_root), "val_fraction": 0.3, "split_seed": 9}}
    ).training_hash()
    assert a == b  # CelebA has an official split: results folders written before these keys stay valid


def test_cache_holds_the_duke_split_and_keys_on_its_settings(tmp_path):
    root = tiny_duke(tmp_path / "d")
    source = DatasetSource(root, "duke", 0.2, 0)
    data = open_decoded(source, (16, 8), tmp_path / "c", workers=1)
    index = load_index(source)
    for split in ("train", "val", "test"):
        assert data.images[split].shape == (len(index.files[split]), 16, 8, 3)
        np.testing.assert_array_equal(data.labels[split], index.labels[split])
    meta = json.loads((data.path / "meta.json").read_text())
    assert meta["identities"]["val"] == index.identities["val"] and "0005" in meta["excluded"]
    assert fingerprint(DatasetSource(root, "duke", 0.2, 1), (16, 8)) != data.path.name  # another split
    assert fingerprint(DatasetSource(root, "duke", 0.3, 0), (16, 8)) != data.path.name
    assert open_decoded(source, (16, 8), tmp_path / "c").path == data.path  # reused


# ---- paper-duke ---------------------------------------------------------------------------------


def test_compare_paper_duke_matches_the_file_names_and_the_partners():
    """A store holding Table 6's numbers under the .mat's names lines up with every row, partner included."""
    from aal_sweep.analysis.matrix import pair_matrix  # here
    from aal_sweep.analysis.summary import partners_table  # here: the store is being rewritten under query
    from aal_sweep.report.tables import comparison, load_reference

    ref = load_reference("paper-duke")
    names = list(ref["name"])
    partner = {n: (names[int(k) - 1] if pd.notna(k) else None) for n, k in zip(names, ref["neg_att"])}
    single, multi = dict(zip(names, ref["single"] / 100)), dict(zip(names, ref["multi"] / 100))
    rows = [{"kind": "single", "status": "ok", "attribute": a, "partner": None, "val_acc": single[a]} for a in names]
    rows += [
        {
            "kind": "pair",
            "status": "ok",
            "attribute": a,
            "partner": b,
            "val_acc": multi[a] if partner[a] == b else single[a] + 0.0001,
        }
        for a in names
        for b in names
        if a != b
    ]
    rows += [
        {
            "kind": "adversarial",
            "status": "ok",
            "attribute": a,
            "partner": partner[a],
            "lambda": 0.1,
            "val_acc": v / 100,
            "test_acc": v / 100,
            "trial_id": f"adv-{a}",
        }
        for a, v in zip(names, ref["adversarial"])
        if partner[a]
    ]
    trials = pd.DataFrame(rows)
    trials["test_acc"] = trials["val_acc"]
    cmp = comparison(partners_table(trials, names), pair_matrix(trials, names), ref).set_index("attribute")
    assert len(cmp) == 24 and (cmp["partner (paper)"] == cmp["partner (ours)"]).all()
    assert cmp.loc["downblack", "partner (paper)"] == "backpack"  # neg_att 1, in the file's spelling
    assert cmp.loc["downgreen", "partner (paper)"] == "" and cmp.loc["downgreen", "multi (paper)"] == "—"
    for col, value in (("single", "91.19"), ("multi", "90.64"), ("adversarial", "91.32")):
        assert cmp.loc["mean", f"{col} (paper)"] == cmp.loc["mean", f"{col} (ours)"] == value


# ---- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_duke_sweep_end_to_end(tmp_path):
    """`aal-sweep run` on a Duke-layout folder: the real cache, Ray Tune, then matrix and report --compare."""
    root = tiny_duke(tmp_path / "duke", images=2)
    config = write_config(
        tmp_path / "sweep.yaml",
        root,
        dataset={
            "format": "duke",
            "root": str(root),
            "image_size": [16, 16],
            "cache": str(tmp_path / "cache"),
            "val_fraction": 0.2,
            "split_seed": 0,
        },
    )
    raw = yaml.safe_load(config.read_text())
    raw["train"] |= {"epochs": 1, "lr_milestones": []}
    raw["phases"] = ["single", "pair"]
    config.write_text(yaml.safe_dump(raw))
    cli = [sys.executable, "-m", "aal_sweep.cli"]
    run = subprocess.run(cli + ["run", str(config)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = load_config(config).results
    matrix = subprocess.run(cli + ["matrix", results, "--format", "csv"], capture_output=True, text=True, check=True)
    lines = matrix.stdout.splitlines()
    assert lines[0].split(",")[1:] == ["backpack", "gender", "top"]
    cells = [v for line in lines[1:4] for v in line.split(",")[1:]]
    assert len(cells) == 9 and all(0 <= float(v) <= 1 for v in cells)  # every single and pair cell is there
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 1  # trials decoded through one cache entry
    report = subprocess.run(
        cli + ["report", results, "--out", str(tmp_path / "report"), "--compare", "paper-duke"],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "index.html").read_text()
    assert "3 of this sweep" in html and "attributes matched the 23 rows" in html
    assert "val_fraction: 0.2" in html  # the split's settings are in the results' config


def test_the_shipped_duke_config_is_valid():
    cfg = load_config(Path(__file__).resolve().parents[1] / "jobs" / "duke.yaml", check_files=False)
    assert (cfg.dataset.format, cfg.dataset.val_fraction, cfg.model.backbone) == ("duke", 0.1, "resnet18")
