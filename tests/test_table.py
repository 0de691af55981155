"""Your own attributes (issue 28): the table format (CSV and Parquet), missing and uncertain labels, the
CheXpert-v1.0-small layout of jobs/chexpert.yaml on a miniature written here, `dataset --config`, bad input,
and sweeps end to end on tables built from the real MNIST digits."""

from __future__ import annotations

import contextlib
import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED, write_config
from PIL import Image
from test_bad_input import refused

from aal_sweep.backbones import build_backbone
from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config
from aal_sweep.data.cache import open_decoded
from aal_sweep.data.index import load_index
from aal_sweep.data.tensors import SplitTensors
from aal_sweep.train.evaluate import evaluate
from aal_sweep.train.factory import make_task

REPO = Path(__file__).resolve().parents[1]
MNIST = SHARED / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"the MNIST test files are not in {MNIST}"
)

# ---- a CheXpert-v1.0-small miniature, in exactly the distributed layout ---------------------------------

CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 20), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path, quality=90)  # greyscale, as CheXpert's JPEGs


def write_chexpert(root: Path, patients: int = 12, seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """ROOT/CheXpert-v1.0-small/{train.csv, valid.csv, train/patientNNNNN/studyK/viewV_frontal.jpg, valid/...}:
    train rows hold 1.0, 0.0, -1.0 (uncertain) and blanks, valid rows 1.0 / 0.0 only, as the release. Returns
    the rows written per file."""
    rng = np.random.default_rng(seed)
    base = root / "CheXpert-v1.0-small"
    rows: dict[str, list[dict[str, str]]] = {"train": [], "valid": []}
    for split, first, count in (("train", 1, patients), ("valid", 64541, 4)):
        for p in range(first, first + count):
            for study in range(1, 3 if split == "train" else 2):
                for view in (1, 2):
                    rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study{study}/view{view}_frontal.jpg"
                    _jpeg(root / rel, len(rows["train"]) + len(rows["valid"]) + 1000 * view)
                    choices = ["1.0", "0.0", "-1.0", ""] if split == "train" else ["1.0", "0.0"]
                    row = {
                        "Path": rel,
                        "Sex": "Female" if p % 2 else "Male",
                        "Age": str(40 + p),
                        "Frontal/Lateral": "Frontal",
                        "AP/PA": "AP" if view == 1 else "PA",
                    }
                    row |= {f: str(rng.choice(choices)) for f in FINDINGS}
                    rows[split].append(row)
    # every finding has each label at least once in train, and both classes in valid (else a note, tested apart)
    for k, f in enumerate(FINDINGS):
        for j, v in enumerate(["1.0", "0.0", "-1.0", ""]):
            rows["train"][(k + j * 5) % len(rows["train"])][f] = v
        rows["valid"][k % 4][f], rows["valid"][(k + 1) % 4][f] = "1.0", "0.0"
    for split, name in (("train", "train.csv"), ("valid", "valid.csv")):
        with open(base / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, CHEXPERT_COLUMNS + FINDINGS)
            w.writeheader()
            w.writerows(rows[split])
    return rows


def _chexpert_config(root: Path, tmp: Path, **dataset) -> Path:
    raw = yaml.safe_load((REPO / "jobs" / "chexpert.yaml").read_text())
    raw["dataset"] |= {"root": str(root), "image_size": [16, 16], "cache": str(tmp / "cache"), "val_fraction": 0.2}
    raw["dataset"] |= dataset
    raw["results"] = str(tmp / "results")
    raw["model"]["pretrained"] = None  # no ImageNet weights on a test machine: the job's dataset is under test
    path = tmp / "chexpert.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_chexpert_job_reads_the_layout_with_its_policies(tmp_path):
    root = tmp_path / "data"
    rows = write_chexpert(root)
    cfg = load_config(_chexpert_config(root, tmp_path))
    index = load_index(cfg.dataset.source())
    assert index.attributes == tuple(FINDINGS)
    # valid.csv is the test split, as written; val carved from train.csv by patient
    assert index.files["test"] == [r["Path"] for r in rows["valid"]]
    patient = lambda p: p.split("/")[2]  # noqa: E731
    train_p, val_p = ({patient(f) for f in index.files[s]} for s in ("train", "val"))
    assert val_p and train_p and not train_p & val_p
    assert sorted(index.files["train"] + index.files["val"]) == sorted(r["Path"] for r in rows["train"])
    assert len(val_p) == round(0.2 * 12)
    label = {r["Path"]: r for r in rows["train"] + rows["valid"]}
    policy = {"Atelectasis": 1, "Edema": 1, "Consolidation": 0}  # U-Ones, U-Ones, U-Zeros; the rest ignored
    for s in ("train", "val", "test"):
        for j, f in enumerate(FINDINGS):
            raw = [label[p][f] for p in index.files[s]]
            want = [1 if v == "1.0" else 0 if v == "0.0" else policy.get(f, -1) for v in raw]
            assert index.labels[s][:, j].tolist() == want, (s, f)
    # the decode cache reads the nested greyscale JPEGs as it reads CelebA's; labels as indexed (-1 kept)
    data = open_decoded(cfg.dataset.source(), (16, 16), cfg.dataset.cache)
    assert data.images["train"].shape == (len(index.files["train"]), 16, 16, 3)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(data.labels[s], index.labels[s])


@pytest.mark.parametrize("policy", ["ignore", "negative", "positive"])
def test_u_zeros_and_u_ones_counts(tmp_path, policy):
    root = tmp_path / "data"
    rows = write_chexpert(root)
    cfg = load_config(_chexpert_config(root, tmp_path, missing={"values": ["", -1], "policy": policy}))
    index = load_index(cfg.dataset.source())
    values = [r["Edema"] for r in rows["train"]]
    ones, zeros, unknown = values.count("1.0"), values.count("0.0"), values.count("-1.0") + values.count("")
    j = FINDINGS.index("Edema")
    y = np.concatenate([index.labels["train"][:, j], index.labels["val"][:, j]])
    labelled, positive = int((y >= 0).sum()), int((y == 1).sum())
    assert (labelled, positive) == {
        "ignore": (ones + zeros, ones),
        "negative": (ones + zeros + unknown, ones),
        "positive": (ones + zeros + unknown, ones + unknown),
    }[policy]


def test_dataset_config_reports_labelled_counts_and_rates(tmp_path, capsys):
    root = tmp_path / "data"
    write_chexpert(root)
    path = _chexpert_config(root, tmp_path)
    index = load_index(load_config(path).dataset.source())
    assert main(["dataset", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("(labelled images, positive rate)")
    j = FINDINGS.index("Pneumonia")
    line = next(line for line in out if line.startswith("Pneumonia "))
    counts = [int((index.labels[s][:, j] >= 0).sum()) for s in ("train", "val", "test")]
    assert [int(x) for x in line.split()[1::2]] == counts
    assert main(["dataset", "--config", str(path), "--format", "json"]) == 0
    info = yaml.safe_load(capsys.readouterr().out)
    assert info["labelled"]["Pneumonia"] == dict(zip(("train", "val", "test"), counts))
    y = index.labels["val"][:, j]
    assert info["attributes"]["Pneumonia"]["val"] == pytest.approx(float(y[y >= 0].mean()))
    assert main(["dataset", "--config", str(path), "--verify"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1] == f"verified {sum(map(len, index.files.values()))} images: all decode"
    )


def test_no_positive_in_a_split_is_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    write_chexpert(root)
    valid = root / "CheXpert-v1.0-small" / "valid.csv"
    lines = valid.read_text().splitlines()
    k = (CHEXPERT_COLUMNS + FINDINGS).index("Fracture")
    rows = [line.split(",") for line in lines[1:]]
    for r in rows:
        r[k] = "0.0"
    valid.write_text("\n".join([lines[0]] + [",".join(r) for r in rows]) + "\n")
    assert main(["dataset", "--config", str(_chexpert_config(root, tmp_path))]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    # (the miniature's small val split lacks positives of some findings too: each one line)
    assert [n for n in notes if " in test " in n] == [
        "note: Fracture: no positive image in test (8 labelled, all negative)"
    ]


# ---- a blank label counts for nothing ------------------------------------------------------------------


KINDS = [
    ("single", 1, {}),
    ("pair", 2, {}),
    ("multitask", 3, {}),
    ("adversarial", 2, {"method": "grl", "lam": 0.3}),
    ("adversarial", 2, {"method": "gan", "lam": 0.3}),
    ("adversarial", 2, {"method": "wgan", "lam": 0.3}),
    ("adversarial_multiple", 3, {"lam": 0.3}),
]


@pytest.mark.parametrize("kind,k,extra", KINDS, ids=[f"{k}-{e.get('method', '')}" for k, _, e in KINDS])
def test_an_unlabelled_image_changes_no_loss(kind, k, extra):
    """Every loss of every kind of trial, on a batch and on that batch plus images unlabelled for every
    attribute: equal (eval mode: batch norm's statistics would otherwise see the added images)."""
    torch.manual_seed(0)
    backbone, width = build_backbone("small_cnn", None)
    task = make_task(kind, backbone, width, k, extra.get("method"), extra.get("lam"))
    task.masked = True
    task.eval()
    x = torch.randn(8, 3, 16, 16)
    y = (torch.rand(8, k) < 0.5).float()
    y[0, 0], y[1, -1] = -1, -1  # some unknown labels already, as the data has them
    x_more = torch.cat([x, torch.randn(5, 3, 16, 16)])
    y_more = torch.cat([y, torch.full((5, k), -1.0)])

    def losses(xb, yb):
        torch.manual_seed(1)  # WGAN's gradient penalty draws its mixing weights
        out = []
        for stage in task.stages(xb, yb):
            out.append(stage.loss.detach())
            if stage.logged is not None:
                out.append(stage.logged)
        return out

    base, more = losses(x, y), losses(x_more, y_more)
    if extra.get("method") == "wgan":  # the critic's stage mixes random pairs (their count depends on B)
        base, more = base[1:], more[1:]
    assert len(base) == len(more) and base
    for a, b in zip(base, more):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_an_unlabelled_image_changes_no_accuracy_nor_bits():
    """evaluate(): an attribute's accuracy, loss and correctness bits on a split, and on that split plus
    images unlabelled for it (labelled for the other): the same; the other attribute counts them."""
    torch.manual_seed(0)
    backbone, width = build_backbone("small_cnn", None)
    task = make_task("pair", backbone, width, 2)
    task.masked = True
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (30, 2)).astype(np.int8)
    labels[3, 0] = -1
    more_images = np.concatenate([images, rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)])
    more_labels = np.concatenate([labels, np.stack([np.full(7, -1), np.ones(7)], axis=1).astype(np.int8)])
    base = evaluate(task, SplitTensors(images, labels, torch.device("cpu")), 8, contextlib.nullcontext)
    more = evaluate(task, SplitTensors(more_images, more_labels, torch.device("cpu")), 8, contextlib.nullcontext)
    assert base.n.tolist() == [29, 30] and more.n.tolist() == [29, 37]
    assert more.accuracy[0] == base.accuracy[0] and more.loss[0] == pytest.approx(
        base.loss[0], rel=1e-6
    )  # float sums in other batches
    assert bytes(more.packed[0].numpy()) == bytes(base.packed[0].numpy())
    assert len(base.packed[0]) == -(-29 // 8)


# ---- bad input: one line before Ray starts, nothing written -------------------------------------------


def _mnist_like(root: Path, n: int = 24, split: bool = False) -> Path:
    """A tiny table dataset of noise images: image, (split), A, B, C."""
    (root / "img").mkdir(parents=True)
    lines = ["image," + ("split," if split else "") + "A,B,C"]
    for i in range(n):
        _jpeg(root / "img" / f"{i:03d}.jpg", i)
        s = ["train", "val", "test"][i % 3] + "," if split else ""
        lines.append(f"img/{i:03d}.jpg,{s}{i % 2},{(i // 2) % 2},{'' if i % 4 == 0 else (i // 3) % 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _table_config(tmp: Path, root: Path, **dataset) -> Path:
    return write_config(
        tmp / "c.yaml",
        root,
        dataset={
            "format": "table",
            "root": str(root),
            "labels": "labels.csv",
            "image_size": [16, 16],
            "cache": str(tmp / "cache"),
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        }
        | dataset,
    )


def _edit_csv(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


BAD_TABLES = [
    ({"attributes": ["A", "Z"]}, None, "labels.csv: no column 'Z' for attribute(s) ['Z'] (dataset.attributes"),
    ({"image_column": "path"}, None, "labels.csv: no column 'path' (dataset.image_column; columns: image, A, B, C)"),
    ({}, ("img/005.jpg,1,0,", "img/005.jpg,1,2,"), "labels.csv:7: '2' in column 'B' is not binary"),
    ({}, ("img/005.jpg", "img/missing.jpg"), "img/missing.jpg: no such image (1 of the 24 image paths"),
    ({"split_column": "split"}, "nosplit", "the val split has no image"),
    ({}, ("img/001.jpg,1,0,0", "img/001.jpg,1,0,-1"), "column 'C' holds 1, 0 and -1"),
]


@pytest.mark.parametrize("dataset,damage,message", BAD_TABLES)
@pytest.mark.parametrize("command", ["run", "dataset"])
def test_bad_table(tmp_path, capsys, dataset, damage, message, command):
    root = _mnist_like(tmp_path / "data", split=damage == "nosplit")
    if damage == "nosplit":
        text = (root / "labels.csv").read_text().replace(",val,", ",train,")
        (root / "labels.csv").write_text(text)
    elif damage:
        _edit_csv(root / "labels.csv", *damage)
    cfg = _table_config(tmp_path, root, **dataset)
    argv = ["run", str(cfg)] if command == "run" else ["dataset", "--config", str(cfg)]
    refused(capsys, argv, tmp_path, message)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_table_keys_on_another_format_and_bad_policy(tiny_root):
    base = {"name": "t", "dataset": {"root": str(tiny_root), "format": "celeba"}}
    with pytest.raises(Exception, match=r"dataset.labels: applies to format table or huggingface only"):
        parse_config(base | {"dataset": base["dataset"] | {"labels": "x.csv"}}, check_files=False)
    table = {"root": str(tiny_root), "format": "table", "labels": "x.csv", "attributes": ["A", "B"]}
    with pytest.raises(Exception, match=r"dataset.missing.policy.A: 'maybe' is not one of ignore, negative, positive"):
        parse_config(base | {"dataset": table | {"missing": {"policy": {"A": "maybe"}}}}, check_files=False)


@pytest.mark.parametrize("fmt,expected", [("celeba", "e8e649d890"), ("duke", "e005680205")])
def test_existing_formats_keep_their_training_hash(tmp_path, fmt, expected):
    """The table keys are in the training hash of a table sweep only: the test config's hash per format is
    the value main computed before they existed (at 65353fd)."""
    raw = yaml.safe_load(write_config(tmp_path / "c.yaml", tmp_path / "absent").read_text())
    raw["dataset"]["format"] = fmt
    assert parse_config(raw, check_files=False).training_hash() == expected


# ---- end to end: a sweep on tables of real MNIST digits (CSV, Parquet) ----------------------------------


def write_mnist_table(root: Path, n: int, suffix: str) -> Path:
    """`n` MNIST test digits as PNGs and a label table: Even, Big, Loop (Loop blank for a sixth of them),
    a split column; `suffix` .csv or .parquet."""
    import pandas as pd

    images = np.frombuffer(gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    digits = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    images = images.reshape(-1, 28, 28)
    (root / "digits").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"digits/{i:05d}.png"
        Image.fromarray(images[i]).save(root / name)
        d = int(digits[i])
        rows.append(
            {
                "file": name,
                "split": "train" if i % 10 < 6 else "val" if i % 10 < 8 else "test",
                "Even": int(d % 2 == 0),
                "Big": bool(d >= 5),
                "Loop": None if i % 6 == 0 else (1 if d in (0, 6, 8, 9) else -1),
            }
        )
    frame = pd.DataFrame(rows)
    if suffix == ".csv":
        frame["Loop"] = frame["Loop"].map(lambda v: "" if v is None or v != v else str(int(v)))
        frame.to_csv(root / "labels.csv", index=False)
    else:
        frame.to_parquet(root / "labels.parquet")
    return root / f"labels{suffix}"


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_mnist_table_sweep_end_to_end(ray_local, tmp_path, suffix):
    from conftest import run_sweep

    from aal_sweep.analysis.results import Results

    root = tmp_path / "mnist"
    labels = write_mnist_table(root, 120, suffix)
    path = _table_config(tmp_path, root, labels=labels.name, image_column="file", split_column="split")
    raw = yaml.safe_load(path.read_text())
    raw["train"] |= {"epochs": 1, "lr_milestones": []}
    raw["adversarial"]["lambdas"] = [0.3]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert run_sweep(cfg) == 0
    data = open_decoded(cfg.dataset.source(), (16, 16), cfg.dataset.cache)
    assert data.attributes == ("Even", "Big", "Loop") and data.labels["val"].dtype == np.int8
    n_loop = {s: int((data.labels[s][:, 2] >= 0).sum()) for s in ("val", "test")}
    assert n_loop["val"] < len(data.labels["val"])  # some Loop labels are blank
    results = Results.open(cfg.results)
    rows = results.trials()
    ok = rows[rows["status"] == "ok"]
    assert set(ok["kind"]) == {"single", "pair", "adversarial"}
    loop = ok[ok["attribute"] == "Loop"]
    assert (loop["n_val"] == n_loop["val"]).all() and (loop["n_test"] == n_loop["test"]).all()
    even = ok[ok["attribute"] == "Even"]
    assert (even["n_val"] == len(data.labels["val"])).all()
    for _, r in loop.iterrows():  # the bits list Loop's labelled images only
        assert len(r["val_correct"]) == -(-n_loop["val"] // 8)
    pairs = results.pairs()
    cell = pairs[(pairs["attribute"] == "Loop") & (pairs["partner"] == "Even")].iloc[0]
    assert cell["test"] == "mcnemar" and 0 <= cell["p_value"] <= 1
    assert main(["pairs", cfg.results]) == 0
    assert sys.modules.get("ray") is not None  # ran on the shared local Ray


# ---- the huggingface format: a dataset saved with save_to_disk, from the real MNIST digits ---------------


def write_mnist_hf(root: Path, n: int) -> Path:
    """`n` MNIST test digits as a DatasetDict (train, test) saved to disk: an Image column, Even as a bool
    column, Big as 1/-1 (null for every seventh), and `shape`: a multi-label column of ClassLabels (loop,
    straight), expanded to attributes loop and straight."""
    import datasets

    images = np.frombuffer(gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    digits = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "Even": datasets.Value("bool"),
            "Big": datasets.Value("int64"),
            "shape": datasets.Sequence(datasets.ClassLabel(names=["loop", "straight"])),
        }
    )

    def part(rows):
        d = [int(digits[i]) for i in rows]
        return datasets.Dataset.from_dict(
            {
                "image": [Image.fromarray(images.reshape(-1, 28, 28)[i]) for i in rows],
                "Even": [x % 2 == 0 for x in d],
                "Big": [None if i % 7 == 0 else (1 if x >= 5 else -1) for i, x in zip(rows, d)],
                "shape": [[k for k, s in enumerate(((0, 6, 8, 9), (1, 4, 7))) if x in s] for x in d],
            },
            features=features,
        )

    cut = int(0.8 * n)
    datasets.DatasetDict({"train": part(range(cut)), "test": part(range(cut, n))}).save_to_disk(str(root))
    return root


def _hf_config(tmp: Path, root, **dataset) -> Path:
    return write_config(
        tmp / "hf.yaml",
        Path(str(root)),
        dataset={"format": "huggingface", "root": str(root), "image_size": [16, 16], "cache": str(tmp / "cache")}
        | {"val_fraction": 0.2}
        | dataset,
    )


@needs_mnist
def test_huggingface_saved_to_disk_reads_columns_and_multilabel(tmp_path, capsys):
    root = write_mnist_hf(tmp_path / "hf", 60)
    cfg = load_config(_hf_config(tmp_path, root))
    index = load_index(cfg.dataset.source())
    assert index.attributes == ("Even", "Big", "loop", "straight")
    assert len(index.files["test"]) == 12 and len(index.files["train"]) + len(index.files["val"]) == 48
    digits = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    for s in ("train", "val", "test"):
        for name, row in zip(index.files[s], index.labels[s]):
            i = int(name.split("/")[1]) + (48 if name.startswith("test/") else 0)
            d = int(digits[i])
            want = [int(d % 2 == 0), -1 if i % 7 == 0 else int(d >= 5), int(d in (0, 6, 8, 9)), int(d in (1, 4, 7))]
            assert row.tolist() == want, (name, d)
    data = open_decoded(cfg.dataset.source(), (16, 16), cfg.dataset.cache)
    assert data.images["test"].shape == (12, 16, 16, 3) and data.images["test"].max() > 0
    assert main(["dataset", "--config", str(_hf_config(tmp_path, root)), "--verify"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verified 60 images: all decode"


def test_huggingface_hub_id_not_cached_and_missing_extra(tmp_path, capsys):
    cfg = _hf_config(tmp_path, "nobody/not-a-cached-dataset")
    err = refused(capsys, ["dataset", "--config", str(cfg)], tmp_path, "is neither a folder nor a Hub dataset")
    assert "load_dataset('nobody/not-a-cached-dataset').save_to_disk('DIR')" in err
    # without the datasets package (an import that fails, as where it is not installed): one line, the pip install
    code = (
        "import sys; sys.modules['datasets'] = None; from aal_sweep.cli import main; "
        f"sys.exit(main(['dataset', '--config', {str(cfg)!r}]))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "pip install 'aal_sweep[hf]'" in out.stderr


@needs_mnist
@pytest.mark.slow
def test_huggingface_sweep_end_to_end(ray_local, tmp_path):
    from conftest import run_sweep

    from aal_sweep.analysis.results import Results

    root = write_mnist_hf(tmp_path / "hf", 100)
    path = _hf_config(tmp_path, root, attributes=["Even", "Big", "loop"])
    raw = yaml.safe_load(path.read_text())
    raw["train"] |= {"epochs": 1, "lr_milestones": []}
    raw["phases"] = ["single", "pair"]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert run_sweep(cfg) == 0
    rows = Results.open(cfg.results).trials()
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 3 + 2 * 3 and set(ok["kind"]) == {"single", "pair"}
    data = open_decoded(cfg.dataset.source(), (16, 16), cfg.dataset.cache)
    big = int((data.labels["val"][:, data.columns(["Big"])[0]] >= 0).sum())
    assert big < len(data.labels["val"]) and (ok[ok["attribute"] == "Big"]["n_val"] == big).all()
