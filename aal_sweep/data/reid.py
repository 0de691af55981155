"""DukeMTMC-attribute and Market-1501-attribute: the official attribute .mat files beside the reID image folders.

    ROOT/bounding_box_train/0001_c2_f0046182.jpg ...      (Market-1501: 0002_c1s1_000451_03.jpg)
    ROOT/bounding_box_test/...
    ROOT/duke_attribute.mat  or  ROOT/attribute/duke_attribute.mat   (Market-1501: market_attribute.mat)

The .mat file is read exactly as distributed: a struct with `train` and `test`, each holding one uint8 row per
attribute and `image_index` (the 4-character identities). Fields are read by name (their order differs
between train and test); the sweep's attribute order is the train struct's (for Duke, Table 6's order).
Labels belong to identities and apply to every image of the identity; an image's identity is its file name
up to the first "_". Distractors (0000) and junk (-1) are not identities and are skipped. Decisions:

- Value 2 is the positive class of every binary attribute, as the files code them (1 = no, 2 = yes): so
  `gender` is "female", Duke's `top` "long sleeves", `shoes` "light", Market's `up` "short sleeves".
  Names stay as in the files.
- A 0 is no label (the official Duke `train.top` has two, identities 0370 and 0679). Such an identity is
  dropped from the dataset, with a warning naming it, rather than masked: every attribute then has a label
  for every image and the training loop needs no masks. Any other value outside the coding is a DataError.
- Market's `age` (1 young, 2 teenager, 3 adult, 4 old) is expanded one-vs-rest into `age_young`,
  `age_teenager`, `age_adult`, `age_old`, in its place: every attribute the method sees is binary, and this
  keeps all the file says without inventing a threshold (any cut, e.g. adult-or-old, would be ours, not
  the dataset's). The four are mutually exclusive, which the pair sweep will show as strong transfer.
- The paper has no validation split: `val_fraction` of the labelled training identities (rounded, at least
  one) become it, drawn with numpy's default_rng(`split_seed`) over the sorted identities, so the split
  depends only on the .mat file and those two numbers, identity-disjoint from train. It is not stratified:
  a rare attribute (Duke `downgreen` has one positive training identity) may have no positive in a split.
- Test is bounding_box_test, every labelled test identity.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aal_sweep.data.types import DatasetIndex, DatasetSource
from aal_sweep.errors import DataError

log = logging.getLogger(__name__)

TRAIN_DIR, TEST_DIR = "bounding_box_train", "bounding_box_test"
NOT_IDENTITIES = ("0000", "-1")  # distractors and junk detections in the reID folders
MISSING = 0  # the coding's "no label"
NO, YES = 1, 2


@dataclass(frozen=True)
class Layout:
    mat_file: str
    struct: str
    # a multi-valued field -> the names of its values 1, 2, ...; expanded one-vs-rest into field_value
    multi_valued: dict[str, tuple[str, ...]] = field(default_factory=dict)


LAYOUTS = {
    "duke": Layout("duke_attribute.mat", "duke_attribute"),
    "market": Layout("market_attribute.mat", "market_attribute", {"age": ("young", "teenager", "adult", "old")}),
}


@dataclass(frozen=True)
class Annotations:
    """The .mat file's labels, binarised: per split the identities (file order) and 0/1 labels [ids, A]."""

    attributes: tuple[str, ...]
    identities: dict[str, list[str]]  # "train" | "test" -> identities
    labels: dict[str, np.ndarray]
    excluded: dict[str, str]  # identity -> why it was left out


# ---- the attribute file --------------------------------------------------------------------------


def find_mat(root: Path, layout: Layout) -> Path:
    for path in (root / layout.mat_file, root / "attribute" / layout.mat_file):
        if path.is_file():
            return path
    raise DataError(
        f"{root}: no {layout.mat_file} (place the official attribute file in the dataset root "
        f"or in {root / 'attribute'})"
    )


def _load_struct(path: Path, layout: Layout) -> dict[str, dict[str, np.ndarray]]:
    """{split: {field: 1-D array}} with image_index as strings, exactly the file's fields."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise DataError(
            f"{path}: not a readable MATLAB file ({type(e).__name__}: {e}); restore the official {layout.mat_file}"
        ) from None
    if layout.struct not in mat:
        found = [k for k in mat if not k.startswith("__")]
        raise DataError(f"{path}: no variable {layout.struct!r} (found {found}); use the official {layout.mat_file}")
    top = mat[layout.struct]
    out = {}
    for split in ("train", "test"):
        if top.dtype.names is None or split not in top.dtype.names:
            raise DataError(f"{path}: {layout.struct} has no {split!r} struct; use the official {layout.mat_file}")
        rec = top[split][0, 0]
        if rec.dtype.names is None or "image_index" not in rec.dtype.names:
            raise DataError(f"{path}: {split}.image_index is missing; use the official {layout.mat_file}")
        fields = {name: np.asarray(rec[name][0, 0]).ravel() for name in rec.dtype.names}
        fields["image_index"] = np.array([_identity_text(x, path, split) for x in fields["image_index"]])
        out[split] = fields
    return out


def _identity_text(x, path: Path, split: str) -> str:
    v = np.asarray(x).ravel()
    if v.size != 1 or not isinstance(v[0], str):
        raise DataError(f"{path}: {split}.image_index holds {x!r}; expected one identity string per entry")
    return str(v[0])


def read_annotations(root: Path, layout: Layout) -> Annotations:
    path = find_mat(root, layout)
    splits = _load_struct(path, layout)
    fields = [n for n in splits["train"] if n != "image_index"]
    test_fields = [n for n in splits["test"] if n != "image_index"]
    for split, have, other in (("test", test_fields, fields), ("train", fields, test_fields)):
        lacking = [n for n in other if n not in have]
        if lacking:
            raise DataError(
                f"{path}: field(s) {lacking} missing from {split} (train and test must hold the same "
                f"attributes); use the official {layout.mat_file}"
            )
    attributes = tuple(_expanded_names(fields, layout))
    identities, labels, excluded = {}, {}, {}
    for split, raw in splits.items():
        ids = raw["image_index"]
        dupes = sorted(i for i, n in Counter(ids.tolist()).items() if n > 1)
        if dupes:
            raise DataError(f"{path}: {split}.image_index repeats identities {dupes[:5]}; use the official file")
        values = np.stack([_checked(raw[n], n, split, ids, path, layout) for n in fields], axis=1)
        unlabelled = (values == MISSING).any(axis=1)
        dropped = {
            str(ids[k]): ", ".join(f"{split}.{n}" for n, v in zip(fields, values[k]) if v == MISSING)
            for k in np.flatnonzero(unlabelled)
        }
        if dropped:
            log.warning(
                "%s: identities left out with their images, having no label (value 0): %s",
                path,
                ", ".join(f"{i} ({where})" for i, where in dropped.items()),
            )
        excluded |= {i: f"{where} = 0 (no label)" for i, where in dropped.items()}
        keep = ~unlabelled
        identities[split] = [str(i) for i in ids[keep]]
        labels[split] = _binarise(values[keep], fields, layout)
    both = set(identities["train"]) & set(identities["test"])
    if both:
        raise DataError(f"{path}: identities {sorted(both)[:5]} are in both train and test; use the official file")
    return Annotations(attributes, identities, labels, excluded)


def _expanded_names(fields: list[str], layout: Layout) -> list[str]:
    names = []
    for n in fields:
        names += [f"{n}_{v}" for v in layout.multi_valued[n]] if n in layout.multi_valued else [n]
    return names


def _checked(values: np.ndarray, name: str, split: str, ids: np.ndarray, path: Path, layout: Layout) -> np.ndarray:
    """The field's values as int64, after checking each is in the coding (or 0, no label)."""
    if len(values) != len(ids):
        raise DataError(f"{path}: {split}.{name} has {len(values)} values for {len(ids)} identities")
    top = len(layout.multi_valued[name]) if name in layout.multi_valued else YES
    coding = f"1 to {top}" if name in layout.multi_valued else "1 (no) or 2 (yes)"
    if not np.issubdtype(values.dtype, np.number):
        raise DataError(f"{path}: {split}.{name} holds {values.dtype} values; the coding is {coding}")
    bad = np.flatnonzero((values != np.round(values)) | (values < MISSING) | (values > top))
    if len(bad):
        k = bad[0]
        raise DataError(
            f"{path}: {split}.{name} is {values[k].item()} for identity {ids[k]} "
            f"({len(bad)} such value(s)); the coding is {coding}, 0 for no label"
        )
    return values.astype(np.int64)


def _binarise(values: np.ndarray, fields: list[str], layout: Layout) -> np.ndarray:
    columns = []
    for j, n in enumerate(fields):
        if n in layout.multi_valued:
            columns += [values[:, j] == v for v in range(1, len(layout.multi_valued[n]) + 1)]
        else:
            columns.append(values[:, j] == YES)
    return np.stack(columns, axis=1).astype(np.uint8).reshape(len(values), -1)


# ---- the validation identities and the image folders -------------------------------------------


def split_validation(identities: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) identities, disjoint, in the input's order; val is `val_fraction` of them, at least one."""
    if not 0 < val_fraction < 1:
        raise DataError(f"dataset.val_fraction: {val_fraction} must be between 0 and 1 (e.g. 0.1)")
    ordered = sorted(identities)
    n_val = max(1, round(val_fraction * len(ordered)))
    if n_val >= len(ordered):
        raise DataError(
            f"dataset.val_fraction: {val_fraction} of {len(ordered)} training identities leaves none "
            f"to train on (lower it)"
        )
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val = {ordered[k] for k in perm[:n_val]}
    return [i for i in identities if i not in val], [i for i in identities if i in val]


def list_images(folder: Path) -> dict[str, list[str]]:
    """{identity: sorted image names} of one reID folder, distractors and junk skipped."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing (unpack the dataset's {folder.name}/ folder there)")
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(".jpg"))
    if not names:
        raise DataError(f"{folder}: no .jpg images (unpack the dataset's {folder.name}/ images there)")
    by_id: dict[str, list[str]] = {}
    for name in names:
        identity = name.split("_", 1)[0]
        if identity not in NOT_IDENTITIES:
            by_id.setdefault(identity, []).append(name)
    if not by_id:
        raise DataError(f"{folder}: only distractor or junk images (identity 0000 or -1); unpack the full folder")
    return by_id


def _per_image(
    folder: str, images: dict[str, list[str]], ids: list[str], labels: np.ndarray
) -> tuple[list[str], np.ndarray]:
    files, rows = [], []
    for k, identity in enumerate(ids):
        names = images.get(identity, [])
        files += [f"{folder}/{n}" for n in names]
        rows += [k] * len(names)
    return files, labels[np.asarray(rows, dtype=np.int64)].reshape(len(rows), labels.shape[1])


def load(source: DatasetSource, attributes=None) -> DatasetIndex:
    """The per-image index: labels from the .mat file, images from the two folders, val carved from train."""
    root, layout = source.path, LAYOUTS[source.format]
    if root.is_file():
        raise DataError(
            f"{root}: is a file; expected the dataset folder holding {TRAIN_DIR}/, {TEST_DIR}/ and "
            f"{layout.mat_file} (a sweep YAML goes to `aal-sweep run` or `plan`)"
        )
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder (pass the dataset root holding {TRAIN_DIR}/, {TEST_DIR}/ and {layout.mat_file})"
        )
    ann = read_annotations(root, layout)
    names = tuple(attributes) if attributes is not None else ann.attributes
    unknown = [a for a in names if a not in ann.attributes]
    if unknown:
        raise DataError(
            f"{find_mat(root, layout)}: unknown attribute(s) {unknown} (valid: {', '.join(ann.attributes)})"
        )
    columns = [ann.attributes.index(a) for a in names]
    images = {"train": list_images(root / TRAIN_DIR), "test": list_images(root / TEST_DIR)}
    for split, folder in (("train", TRAIN_DIR), ("test", TEST_DIR)):
        _check_labelled(
            root / folder,
            images[split],
            set(ann.identities[split]) | set(ann.excluded),
            f"{layout.mat_file} has no {split} labels for it",
        )
    train_ids, val_ids = split_validation(ann.identities["train"], source.val_fraction, source.split_seed)
    ids = {"train": train_ids, "val": val_ids, "test": ann.identities["test"]}
    files, labels = {}, {}
    for split, split_ids in ids.items():
        origin = "test" if split == "test" else "train"  # val identities are training identities
        folder = TEST_DIR if split == "test" else TRAIN_DIR
        position = {i: k for k, i in enumerate(ann.identities[origin])}
        rows = ann.labels[origin][[position[i] for i in split_ids]][:, columns].reshape(len(split_ids), len(columns))
        files[split], labels[split] = _per_image(folder, images[origin], split_ids, rows)
        if not files[split]:  # an empty val or test split would be stored as accuracy 0.0, silently wrong
            raise DataError(
                f"{root / folder}: no image of the {len(split_ids)} {split} identities "
                f"(e.g. {split_ids[0]}); training and measuring need images in train, val and test "
                f"(unpack the complete folder)"
            )
    return DatasetIndex(
        root=root,
        attributes=names,
        files=files,
        labels=labels,
        image_dir="",
        identities=ids,
        excluded=dict(ann.excluded),
    )


def _check_labelled(folder: Path, images: dict[str, list[str]], known: set[str], why: str) -> None:
    stray = sorted(i for i in images if i not in known)
    if stray:
        raise DataError(
            f"{folder}: images of identity {stray[0]} (e.g. {images[stray[0]][0]}) but {why} "
            f"({len(stray)} such identities); use the image folders and the attribute file of one release"
        )


# ---- the hooks aal_sweep.data.index dispatches to --------------------------------------------------


def load_source(source: DatasetSource, attributes, check_images: bool) -> DatasetIndex:
    # The folder listing *is* the per-image index here (labels are per identity), so images are always listed.
    return load(source, attributes)


def source_attribute_names(source: DatasetSource) -> list[str]:
    return list(read_annotations(source.path, LAYOUTS[source.format]).attributes)


def fingerprint_inputs(source: DatasetSource) -> tuple[list[Path], list[Path], str]:
    root = source.path
    mat = find_mat(root, LAYOUTS[source.format])
    return (
        [mat],
        [root / TRAIN_DIR, root / TEST_DIR],
        f"{source.format} val_fraction={source.val_fraction} split_seed={source.split_seed}",
    )
