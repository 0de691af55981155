"""The CelebA reader on tiny fake trees (CRLF and LF) and on the real official annotation files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from aal_sweep.cli import main
from aal_sweep.data.celeba import load_index, read_attributes
from aal_sweep.data.types import describe
from aal_sweep.errors import DataError

ROWS = [
    ("000001.jpg", [-1, 1, 1], 0),
    ("000002.jpg", [1, -1, 1], 0),
    ("000003.jpg", [1, 1, -1], 1),
    ("000004.jpg", [-1, -1, -1], 2),
]


def fake_tree(root: Path, newline: str = "\r\n", rows=ROWS, count: int | None = None, images=True) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    lines = [str(len(rows) if count is None else count), "Smiling Male  Young "]
    lines += [f"{name}  " + "  ".join(f"{v:2d}" if isinstance(v, int) else v for v in vals) for name, vals, _ in rows]
    (root / "list_attr_celeba.txt").write_bytes((newline.join(lines) + newline).encode())
    (root / "list_eval_partition.txt").write_bytes((newline.join(f"{n} {p}" for n, _, p in rows) + newline).encode())
    if images:
        for name, _, _ in rows:
            Image.new("RGB", (8, 10), (10, 20, 30)).save(root / "img_align_celeba" / name)
    return root


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_reader_crlf_and_lf(tmp_path, newline):
    index = load_index(fake_tree(tmp_path / "d", newline))
    assert index.attributes == ("Smiling", "Male", "Young")
    assert index.files == {"train": ["000001.jpg", "000002.jpg"], "val": ["000003.jpg"], "test": ["000004.jpg"]}
    np.testing.assert_array_equal(index.labels["train"], [[0, 1, 1], [1, 0, 1]])
    assert index.labels["val"].dtype == np.uint8


def test_subset_in_given_order(tmp_path):
    index = load_index(fake_tree(tmp_path / "d"), ["Young", "Smiling"])
    assert index.attributes == ("Young", "Smiling")
    np.testing.assert_array_equal(index.labels["train"], [[1, 0], [1, 1]])


@pytest.mark.parametrize(
    "mutate,message",
    [
        (dict(count=7), "the count line says 7 images but the file has 4 rows"),
        (
            dict(rows=ROWS[:1] + [("000002.jpg", [1, 0, 1], 0)] + ROWS[2:]),
            ":4: value 0 for 'Male'; values must be 1 or -1",
        ),
        (
            dict(rows=ROWS[:1] + [("000002.jpg", [1, 1], 0)] + ROWS[2:]),
            ":4: expected an image name and 3 values, got 3 fields",
        ),
        (
            dict(rows=ROWS[:2] + [("000003.jpg", [1, "yes", 1], 1)] + ROWS[3:]),
            ":5: values must be 1 or -1, got '1 yes 1'",
        ),
        (dict(images=False), "4 image(s) listed in list_attr_celeba.txt are missing (first: 000001.jpg)"),
    ],
)
def test_bad_dataset_errors_name_file_and_line(tmp_path, mutate, message):
    root = fake_tree(tmp_path / "d", **mutate)
    with pytest.raises(DataError) as e:
        load_index(root)
    assert message in str(e.value)
    assert "list_" in str(e.value) or "img_align_celeba" in str(e.value)


def test_partition_disagreement(tmp_path):
    root = fake_tree(tmp_path / "d")
    with open(root / "list_eval_partition.txt", "a") as f:
        f.write("000099.jpg 0\r\n")
    with pytest.raises(DataError, match="1 split row.s. without attributes"):
        load_index(root)
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:2: expected 'image_name 0\|1\|2'"):
        load_index(root)


def test_unknown_attribute(tmp_path):
    with pytest.raises(DataError, match=r"unknown attribute\(s\) \['Bald'\] \(valid: Smiling, Male, Young\)"):
        load_index(fake_tree(tmp_path / "d"), ["Bald"])


def test_dataset_cli_json_and_errors(tmp_path, capsys):
    root = fake_tree(tmp_path / "d")
    assert main(["dataset", str(root), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == {"train": 2, "val": 1, "test": 1}
    assert info["attributes"]["Male"] == {"train": 0.5, "val": 1.0, "test": 0.0}
    assert main(["dataset", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def real_celeba(tmp_path_factory):
    src = SHARED / "celeba"
    if not (src / "list_attr_celeba.zip").is_file():
        pytest.skip(f"real CelebA annotations not present at {src}")
    root = tmp_path_factory.mktemp("celeba")
    with zipfile.ZipFile(src / "list_attr_celeba.zip") as z:
        z.extract("list_attr_celeba.txt", root)
    shutil.copy(src / "list_eval_partition.txt", root)
    return root


def test_real_annotation_files(real_celeba):
    names, files, labels = read_attributes(real_celeba / "list_attr_celeba.txt")
    assert len(names) == 40 and len(files) == 202_599 and labels.shape == (202_599, 40)
    info = describe(load_index(real_celeba, check_images=False))
    assert info["splits"] == {"train": 162_770, "val": 19_867, "test": 19_962}
    rates = info["attributes"]
    assert round(rates["Male"]["train"], 4) == 0.4194
    assert round(rates["Smiling"]["train"], 4) == 0.4797
    assert [round(rates["Big_Lips"][s], 4) for s in ("train", "val", "test")] == [0.2409, 0.1532, 0.3270]
    majority = np.mean([max(r["val"], 1 - r["val"]) for r in rates.values()])
    assert round(100 * majority, 2) == 80.77


def test_real_files_without_images_is_a_clear_error(real_celeba, capsys):
    assert main(["dataset", str(real_celeba), "--attributes", "Male,Smiling"]) == 2
    assert "img_align_celeba: missing" in capsys.readouterr().err


# ---- bad list files: each a one-line DataError naming the file and line ---------------------------------


def test_duplicate_attribute_names(tmp_path):
    root = fake_tree(tmp_path / "d")
    path = root / "list_attr_celeba.txt"
    path.write_bytes(path.read_bytes().replace(b"Smiling Male  Young", b"Smiling Male  Smiling"))
    with pytest.raises(
        DataError,
        match=r"list_attr_celeba.txt:2: attribute name\(s\) \['Smiling'\] appear more "
        r"than once on the names line",
    ):
        load_index(root)


@pytest.mark.parametrize("file,line", [("list_attr_celeba.txt", 6), ("list_eval_partition.txt", 5)])
def test_duplicate_image_row(tmp_path, file, line):
    root = fake_tree(tmp_path / "d")
    path = root / file
    if file == "list_attr_celeba.txt":  # the count line must still agree, so this is the only defect
        rows = ROWS[:3] + [("000002.jpg", [1, -1, 1], 2)]
        root = fake_tree(tmp_path / "e", rows=rows)
        (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n")
        path = root / file
    else:
        with open(path, "ab") as f:
            f.write(b"000002.jpg 1\r\n")
    with pytest.raises(DataError) as e:
        load_index(root)
    assert f"{file}:{line}: image 000002.jpg is listed twice" in str(e.value)


@pytest.mark.parametrize("file,line", [("list_attr_celeba.txt", 4), ("list_eval_partition.txt", 2)])
def test_non_utf8_file_name_names_the_line(tmp_path, file, line):
    root = fake_tree(tmp_path / "d")
    path = root / file
    path.write_bytes(path.read_bytes().replace(b"000002.jpg", b"00000\xe9.jpg"))
    with pytest.raises(DataError) as e:
        load_index(root)
    assert f"{file}:{line}: not UTF-8 text" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("split,code", [("val", 1), ("test", 2), ("train", 0)])
def test_empty_split_is_refused(tmp_path, split, code):
    rows = [(n, v, p) for n, v, p in ROWS if p != code]
    with pytest.raises(
        DataError,
        match=rf"list_eval_partition.txt: the {split} split is empty \(no image has "
        rf"split {code}\)",
    ):
        load_index(fake_tree(tmp_path / "d", rows=rows))


def test_byte_order_mark_is_accepted(tmp_path):
    """A list file saved by an editor that writes a UTF-8 byte-order mark reads like the original."""
    root = fake_tree(tmp_path / "d")
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_index(root).files["train"] == ["000001.jpg", "000002.jpg"]
