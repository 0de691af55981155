"""A sweep config: YAML -> validated, typed dataclasses, once, at the edge.

Every problem is collected and reported together, each naming its key and the valid choices.
Relative paths are taken from the current working directory.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aal_sweep.backbones import name_problem
from aal_sweep.data.types import (
    FORMATS,
    IMAGE_COLUMN,
    MISSING_POLICIES,
    MISSING_POLICY,
    MISSING_VALUES,
    SPLIT_SEED,
    SPLITS,
    TEST_FRACTION,
    VAL_FRACTION,
)
from aal_sweep.errors import AalError, ConfigError, DataError

METHODS = ("grl", "gan", "wgan")
PHASES = ("single", "pair", "adversarial", "multitask_all", "adversarial_multiple", "adversarial_shared")
DEFAULT_PHASES = PHASES[:3]  # the paper's method; Table 1's other variants (aal_sweep.kinds) are asked for by name
# what each phase plans from: its trials are planned only once these phases' trials are done
PHASE_NEEDS = {
    "adversarial": ("single", "pair"),
    "adversarial_multiple": ("single", "pair"),
    "adversarial_shared": ("multitask_all", "single", "pair"),
}
_NEEDS_WHY = {
    "adversarial": "its partners come from them",
    "adversarial_multiple": "its partners come from them",
    "adversarial_shared": "it starts from the multitask_all model, against the partners of single and pair",
}
LAMBDA_SELECTION = ("per_attribute", "global")
DEVICES = ("auto", "cpu", "cuda")
PARTNER_RULES = ("argmin", "significant")
PAIR_MODES = ("exhaustive", "screened")
PAIR_STRATEGIES = ("active", "uniform", "static")  # analysis/strategies/ (static: an estimator, then confirm)
PAIR_ESTIMATORS = ("lookahead", "short", "label_correlation")  # analysis/screening.py, train/lookahead.py
CONFIRM_RULES = ("top_k", "adaptive")
CORRECTIONS = ("holm", "bh")  # partners.correction; aal_sweep.analysis.stats implements each
WANDB_MODES = ("online", "offline", "disabled")
# `submit --agent-timeout`'s default: how long submit waits for the job agent of a head that just started
AGENT_TIMEOUT_S = 60.0
# check_files: True, every file a run reads; "annotations", what `plan` can check before the images are
# there (the annotation files when present; a listed dataset.attributes is taken as it is); False, none
FILE_CHECKS = (True, "annotations", False)
# the formats of your own attributes (docs/datasets.md): the table's keys and dataset.missing apply to them
OWN_FORMATS = ("table", "huggingface")
TABLE_ONLY = ("labels", "split_column", "group_pattern")  # huggingface has its own splits, no paths to match
_KIND_WORD = {"int": "an integer", "float": "a number", "str": "a string"}


@dataclass(frozen=True)
class MissingConfig:
    """The table format's unknown labels (data/table.py): which cells mean unknown, and what becomes of them."""

    values: tuple[str | int | float, ...] = MISSING_VALUES  # "" is a blank cell; CheXpert adds -1 (uncertain)
    # ignore | negative | positive for every attribute, or {attribute: policy} (the others: ignore)
    policy: str | dict[str, str] = MISSING_POLICY


@dataclass(frozen=True)
class DatasetConfig:
    root: str
    format: str = "celeba"
    attributes: tuple[str, ...] | None = None
    image_size: tuple[int, int] = (218, 178)
    cache: str | None = None  # decoded-array cache; None = $AAL_SWEEP_CACHE or ~/.cache/aal_sweep
    # duke / market / table without a split column (CelebA has an official split): the share of training
    # identities (groups) held out for validation, and the seed that draws them
    val_fraction: float = VAL_FRACTION
    split_seed: int = SPLIT_SEED
    # table only (docs/datasets.md): the label file (or {split: file}), relative to root, and its columns
    labels: str | dict[str, str] | None = None
    image_column: str = IMAGE_COLUMN
    split_column: str | None = None  # train / val / test or 0 / 1 / 2; None: val and test carved by group
    group_column: str | None = None  # a group (patient, person) stays inside one carved split
    group_pattern: str | None = None  # or: a regex whose match in the image path is the group
    test_fraction: float = TEST_FRACTION
    missing: MissingConfig = field(default_factory=MissingConfig)

    def source(self):
        """The aal_sweep.data.types.DatasetSource these settings describe (what load_index and the cache take)."""
        from aal_sweep.data.table import cell_token
        from aal_sweep.data.types import DatasetSource

        if self.format not in OWN_FORMATS:
            return DatasetSource(self.root, self.format, self.val_fraction, self.split_seed)
        labels = self.labels
        if isinstance(labels, dict):
            labels = tuple((s, labels[s]) for s in SPLITS if s in labels)
        policy = self.missing.policy
        return DatasetSource(
            self.root,
            self.format,
            self.val_fraction,
            self.split_seed,
            labels=labels,
            image_column=self.image_column,
            split_column=self.split_column,
            group_column=self.group_column,
            group_pattern=self.group_pattern,
            test_fraction=self.test_fraction,
            attributes=self.attributes,
            missing_values=tuple(sorted({cell_token(v) for v in self.missing.values})),
            missing_policy=policy if isinstance(policy, str) else tuple(sorted(policy.items())),
        )


@dataclass(frozen=True)
class ModelConfig:
    # resnet18 | small_cnn | timm/NAME | torchvision/NAME (aal_sweep/backbones/)
    backbone: str = "resnet18"
    # None | "imagenet" (the backbone's own pretrained weights, from the local caches) | a state_dict file
    pretrained: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 256
    lr: float = 1.0e-4
    weight_decay: float = 5.0e-4
    lr_milestones: tuple[int, ...] = (4,)
    lr_gamma: float = 0.1
    seed: int = 0  # the first seed; changing it changes the training hash
    # every seed the sweep trains, first == seed; None = (seed,). Not in the training hash: appending
    # seeds to a finished sweep only adds trials (their ids carry -s<seed>)
    seeds: tuple[int, ...] | None = None
    device: str = "auto"  # one of DEVICES
    num_threads: int | None = None  # torch CPU threads per trial; None = cpus_per_trial
    # torch.compile the backbone: auto = on CUDA only; true | false. Not in the training hash (an
    # execution setting, like device): the same trial, compiled or not, is the same trial.
    compile: bool | str = "auto"


@dataclass(frozen=True)
class AdversarialConfig:
    method: str = "grl"
    lambdas: tuple[float, ...] = (0.01, 0.1, 0.3, 0.5, 1.0)
    lambda_selection: str = "per_attribute"
    critic_hidden: int = 256  # wgan: the critic's hidden width
    gp_weight: float = 10.0  # wgan: gradient penalty weight


@dataclass(frozen=True)
class PartnersConfig:
    # argmin: the paper's most negative drop; significant: the most negative drop among those whose
    # adjusted p-value is below alpha (none otherwise). Holm by default: a partner is one claim per
    # attribute, and Holm bounds the chance that *any* of a row's M-1 candidates is a false partner
    # (BH bounds only their expected share); for the row's smallest p-value both adjust by M-1 alike.
    rule: str = "argmin"
    alpha: float = 0.05
    correction: str = "holm"


@dataclass(frozen=True)
class PairsConfig:
    """How the pair matrix is filled. exhaustive: every pair trained (the paper). screened: an estimator
    scores every ordered pair cheaply, then per attribute at most `confirm` candidates, most negative first,
    are trained as full pair trials (one pair serves both its attributes); partners come from confirmed
    cells only (docs/screening.md). Which trials run, not what a trial computes: not in the training hash."""

    mode: str = "exhaustive"
    # active: measured rounds (analysis/strategies/active.py); the benchmarks found it ahead of every static
    # estimator on structured matrices (docs/benchmarks.md, "Measured screening"); static: estimate, confirm
    strategy: str = "active"
    # measured strategies (active, uniform)
    budget: float = 0.3  # the most pair trials, as a share of the exhaustive M (M - 1) / 2
    confidence: float = 0.95  # a row is decided once P(its exhaustive partner is among its measured cells) >= this
    first_round: int = 2  # partners each attribute meets in the balanced first round
    rank: int = 1  # the active model's low-rank term (0: row and column effects only)
    seed: int = 0  # the first round's draw; not a training seed
    # static: label_correlation with K = 3 was the best recall per cost of the three estimators on both
    # benchmark sets (docs/benchmarks.md, "Screened pair phase"); none reached 90% recall at 30%
    estimator: str = "label_correlation"
    confirm: int = 3  # K; K >= M-1 trains every pair, as exhaustive does
    rule: str = "top_k"  # top_k: K candidates each; adaptive: fewer where one candidate stands out
    short_epochs: int = 1  # estimator short: the epochs each pair trains for its estimate
    every: int = 10  # estimator lookahead: a lookahead step every this many training steps

    @property
    def measured(self) -> bool:
        """Screened by a measured strategy (rounds of real pair trials), not by a static estimator."""
        return self.mode == "screened" and self.strategy != "static"


@dataclass(frozen=True)
class ResourcesConfig:
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_failures: int = 2  # retries of a trial's own errors, each from its last checkpoint (a lost node's: none)
    max_concurrent: int | None = None


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None  # None: MLflow's own ($MLFLOW_TRACKING_URI, else ./mlruns)
    experiment: str | None = None  # None: the sweep's name


@dataclass(frozen=True)
class WandbConfig:
    project: str | None = None  # None: the sweep's name
    mode: str = "online"  # online | offline (files under $WANDB_DIR, `wandb sync` later) | disabled


@dataclass(frozen=True)
class TrackingConfig:
    """Where trials are also logged (Tune's MLflow / W&B callbacks); off unless named. Not in the training
    hash: following a sweep elsewhere does not change its trials."""

    mlflow: MlflowConfig | None = None  # `mlflow: {}` turns it on with the defaults
    wandb: WandbConfig | None = None


@dataclass(frozen=True)
class SweepConfig:
    name: str
    results: str
    dataset: DatasetConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    phases: tuple[str, ...] = DEFAULT_PHASES
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    partners: PartnersConfig = field(default_factory=PartnersConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds every single, pair and adversarial training runs with (train.seeds, else train.seed)."""
        return self.train.seeds or (self.train.seed,)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def training_settings(self) -> dict[str, Any]:
        """Every setting that changes a trial's result (not which trials run), flat: {"train.lr": 1e-4, ...}."""
        d = self.to_dict()
        settings = {"dataset.format": self.dataset.format, "dataset.image_size": list(self.dataset.image_size)}
        if self.dataset.format != "celeba":  # the carved validation split; CelebA's hash stays as it was
            settings |= {
                "dataset.val_fraction": self.dataset.val_fraction,
                "dataset.split_seed": self.dataset.split_seed,
            }
        if self.dataset.format in OWN_FORMATS:  # how the table becomes splits and labels (not where it is)
            settings |= {
                f"dataset.{k}": d["dataset"][k]
                for k in ("split_column", "group_column", "group_pattern", "test_fraction", "missing")
            }
        settings |= {f"model.{k}": v for k, v in d["model"].items()}
        # train.seeds is not a setting of a trial (its seed is in its id); train.seed, the first seed, stays
        # in, so the hash of every config written before seeds existed is unchanged
        execution = ("device", "num_threads", "seeds", "compile")
        settings |= {f"train.{k}": v for k, v in d["train"].items() if k not in execution}
        settings |= {f"adversarial.{k}": d["adversarial"][k] for k in ("critic_hidden", "gp_weight")}
        return settings

    def training_hash(self) -> str:
        blob = json.dumps(self.training_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---- validation ---------------------------------------------------------------------------


class _Checker:
    """Reads one mapping, recording a problem per bad key instead of stopping at the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def section(self, raw: dict, key: str) -> dict:
        value = raw.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, raw: dict, allowed: type | tuple[str, ...], prefix: str) -> None:
        names = allowed if isinstance(allowed, tuple) else tuple(f.name for f in dataclasses.fields(allowed))
        for key in raw:
            if key not in names:
                self.problems.append(f"{prefix}{key}: unknown key (valid: {', '.join(names)})")

    def value(
        self,
        raw: dict,
        key: str,
        kind: str,
        default: Any,
        prefix: str,
        choices=None,
        minimum=None,
        nullable=False,
        above=None,
    ) -> Any:
        if key not in raw:
            return default
        v, name = raw[key], prefix + key
        if v is None and nullable:
            return None
        ok = {
            "int": isinstance(v, int) and not isinstance(v, bool),
            "float": isinstance(v, (int, float)) and not isinstance(v, bool),
            "str": isinstance(v, str),
        }[kind]
        if not ok:
            self.problems.append(f"{name}: expected {_KIND_WORD[kind]}, got {v!r}")
            return default
        if choices is not None and v not in choices:
            self.problems.append(f"{name}: {v!r} is not one of {', '.join(choices)}")
            return default
        if kind == "float" and not math.isfinite(v):  # YAML's .nan and .inf compare false to any bound
            self.problems.append(f"{name}: expected a finite number, got {v!r}")
            return default
        if above is not None and v <= above:
            self.problems.append(f"{name}: {v!r} must be greater than {above}")
            return default
        if minimum is not None and v < minimum:
            self.problems.append(f"{name}: {v!r} must be at least {minimum}")
            return default
        return float(v) if kind == "float" else v

    def listof(self, raw: dict, key: str, kind: str, default: Any, prefix: str, min_len=0) -> Any:
        if key not in raw:
            return default
        v, name = raw[key], prefix + key
        if not isinstance(v, list) or len(v) < min_len:
            at_least = f" with at least {min_len} items" if min_len else ""
            self.problems.append(f"{name}: expected a list of {kind}s{at_least}, got {v!r}")
            return default
        good = (
            all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            if kind == "int"
            else all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            if kind == "float"
            else all(isinstance(x, str) for x in v)
        )
        if not good:
            self.problems.append(f"{name}: expected a list of {kind}s, got {v!r}")
            return default
        if kind == "float" and not all(math.isfinite(x) for x in v):
            self.problems.append(f"{name}: expected a list of finite numbers, got {v!r}")
            return default
        return tuple(float(x) for x in v) if kind == "float" else tuple(v)


def parse_config(raw: Any, source: str = "config", check_files: bool | str = True) -> SweepConfig:
    """Validate a parsed YAML mapping; raise ConfigError listing every problem. `check_files`: one of
    FILE_CHECKS (True: the dataset's folders and files and model.pretrained, as a run needs them)."""
    assert check_files in FILE_CHECKS, check_files
    problems: list[str] = []
    c = _Checker(problems)
    if not isinstance(raw, dict):
        raise ConfigError(
            source, [f"expected a mapping of keys (name, results, dataset, ...), got {type(raw).__name__}"]
        )
    c.unknown(raw, SweepConfig, "")

    name = c.value(raw, "name", "str", "sweep", "")
    results = c.value(raw, "results", "str", f"results/{name}", "")

    d = c.section(raw, "dataset")
    c.unknown(d, DatasetConfig, "dataset.")
    if "root" not in d:
        problems.append(
            "dataset.root: missing (the dataset folder: for celeba the one holding img_align_celeba/ "
            "and the list files; for duke / market bounding_box_train/, bounding_box_test/ and the .mat)"
        )
    root = c.value(d, "root", "str", "", "dataset.")
    fmt = c.value(d, "format", "str", DatasetConfig.format, "dataset.", choices=FORMATS)
    attributes = c.listof(d, "attributes", "str", None, "dataset.") if d.get("attributes") is not None else None
    size = c.listof(d, "image_size", "int", DatasetConfig.image_size, "dataset.")
    if len(size) != 2 or min(size) < 8:
        problems.append(f"dataset.image_size: expected [height, width], each at least 8, got {list(size)}")
        size = DatasetConfig.image_size
    cache = c.value(d, "cache", "str", DatasetConfig.cache, "dataset.", nullable=True)
    val_fraction = c.value(d, "val_fraction", "float", VAL_FRACTION, "dataset.", above=0)
    if val_fraction >= 1:
        problems.append(f"dataset.val_fraction: {val_fraction} must be below 1 (e.g. {VAL_FRACTION})")
        val_fraction = VAL_FRACTION
    split_seed = c.value(d, "split_seed", "int", SPLIT_SEED, "dataset.", minimum=0)
    table = _table_settings(c, d, fmt, attributes, problems)

    m = c.section(raw, "model")
    c.unknown(m, ModelConfig, "model.")
    model = ModelConfig(
        backbone=c.value(m, "backbone", "str", ModelConfig.backbone, "model."),
        pretrained=c.value(m, "pretrained", "str", ModelConfig.pretrained, "model.", nullable=True),
    )
    backbone_problem = name_problem(model.backbone)
    if backbone_problem:
        problems.append(backbone_problem)
    if model.pretrained not in (None, "imagenet") and check_files is True and not Path(model.pretrained).is_file():
        problems.append(
            f"model.pretrained: {model.pretrained!r} is not a file (use null, imagenet, or a state_dict path)"
        )
    if model.backbone == "small_cnn" and model.pretrained is not None:
        problems.append("model.pretrained: small_cnn has no pretrained weights (set it to null)")
    elif check_files and not backbone_problem:
        # the backbone's library, name, weights file (not when planning: see unchecked_files) and image
        # size, here where the CLI reads the config: one line each before Ray starts, nothing written
        from aal_sweep.backbones import check_backbone

        problems += check_backbone(model.backbone, model.pretrained, tuple(size), weights=check_files is True)

    t = c.section(raw, "train")
    c.unknown(t, TrainConfig, "train.")
    seeds = _seeds(c, t, problems)
    train = TrainConfig(
        epochs=c.value(t, "epochs", "int", TrainConfig.epochs, "train.", minimum=1),
        batch_size=c.value(t, "batch_size", "int", TrainConfig.batch_size, "train.", minimum=1),
        lr=c.value(t, "lr", "float", TrainConfig.lr, "train.", above=0),
        weight_decay=c.value(t, "weight_decay", "float", TrainConfig.weight_decay, "train.", minimum=0),
        lr_milestones=c.listof(t, "lr_milestones", "int", TrainConfig.lr_milestones, "train."),
        lr_gamma=c.value(t, "lr_gamma", "float", TrainConfig.lr_gamma, "train.", minimum=0),
        # train.seed is the first seed: `seeds: [3, 4]` alone means seed 3
        seed=(
            seeds[0] if seeds and "seed" not in t else c.value(t, "seed", "int", TrainConfig.seed, "train.", minimum=0)
        ),
        seeds=seeds,
        device=c.value(t, "device", "str", TrainConfig.device, "train.", choices=DEVICES),
        num_threads=c.value(t, "num_threads", "int", TrainConfig.num_threads, "train.", minimum=1, nullable=True),
        compile=_compile_setting(t.get("compile", TrainConfig.compile), problems),
    )

    a = c.section(raw, "adversarial")
    c.unknown(a, AdversarialConfig, "adversarial.")
    adversarial = AdversarialConfig(
        method=c.value(a, "method", "str", AdversarialConfig.method, "adversarial.", choices=METHODS),
        lambdas=c.listof(a, "lambdas", "float", AdversarialConfig.lambdas, "adversarial.", min_len=1),
        lambda_selection=c.value(
            a, "lambda_selection", "str", AdversarialConfig.lambda_selection, "adversarial.", choices=LAMBDA_SELECTION
        ),
        critic_hidden=c.value(a, "critic_hidden", "int", AdversarialConfig.critic_hidden, "adversarial.", minimum=1),
        gp_weight=c.value(a, "gp_weight", "float", AdversarialConfig.gp_weight, "adversarial.", minimum=0),
    )
    if len(set(adversarial.lambdas)) != len(adversarial.lambdas):
        problems.append(f"adversarial.lambdas: duplicates in {list(adversarial.lambdas)}")
    if any(x <= 0 for x in adversarial.lambdas):
        problems.append(f"adversarial.lambdas: every lambda must be > 0, got {list(adversarial.lambdas)}")

    phases = c.listof(raw, "phases", "str", SweepConfig.phases, "", min_len=1)
    for p in phases:
        if p not in PHASES:
            problems.append(f"phases: {p!r} is not a phase (valid: {', '.join(PHASES)})")
    if len(set(phases)) != len(phases):
        problems.append(f"phases: duplicates in {list(phases)}")
    for p, needs in PHASE_NEEDS.items():
        lacking = [n for n in needs if n not in phases]
        if p in phases and lacking:
            problems.append(
                f"phases: {p} needs {' and '.join(needs)} ({_NEEDS_WHY[p]}); add "
                f"{', '.join(lacking)} to phases or drop {p}"
            )

    pr = c.section(raw, "partners")
    c.unknown(pr, PartnersConfig, "partners.")
    partners = PartnersConfig(
        rule=c.value(pr, "rule", "str", PartnersConfig.rule, "partners.", choices=PARTNER_RULES),
        alpha=c.value(pr, "alpha", "float", PartnersConfig.alpha, "partners.", minimum=0),
        correction=c.value(pr, "correction", "str", PartnersConfig.correction, "partners.", choices=CORRECTIONS),
    )
    if not 0 < partners.alpha < 1:
        problems.append(f"partners.alpha: must be between 0 and 1 (e.g. 0.05), got {partners.alpha}")

    pairs = _pairs(c, raw, problems)
    if pairs.mode == "screened" and not {"single", "pair"} <= set(phases):
        problems.append(
            "pairs.mode: screened screens the pair matrix, which needs phases single and pair; add "
            "them to phases or set pairs.mode: exhaustive"
        )

    r = c.section(raw, "resources")
    c.unknown(r, ResourcesConfig, "resources.")
    resources = ResourcesConfig(
        cpus_per_trial=c.value(r, "cpus_per_trial", "float", ResourcesConfig.cpus_per_trial, "resources.", above=0),
        gpus_per_trial=c.value(r, "gpus_per_trial", "float", ResourcesConfig.gpus_per_trial, "resources.", minimum=0),
        max_failures=c.value(r, "max_failures", "int", ResourcesConfig.max_failures, "resources.", minimum=0),
        max_concurrent=c.value(
            r, "max_concurrent", "int", ResourcesConfig.max_concurrent, "resources.", minimum=1, nullable=True
        ),
    )
    if resources.gpus_per_trial > 1 and resources.gpus_per_trial != int(resources.gpus_per_trial):
        problems.append(f"resources.gpus_per_trial: fractions must be below 1, got {resources.gpus_per_trial}")

    if attributes is not None:
        if len(attributes) < 2:
            problems.append(f"dataset.attributes: needs at least two attributes, got {list(attributes)}")
        dupes = sorted({x for x in attributes if attributes.count(x) > 1})
        if dupes:
            problems.append(f"dataset.attributes: duplicates {dupes}")
    tracking = _tracking(c, raw, problems)
    if root and check_files and fmt in OWN_FORMATS:
        _check_table(
            DatasetConfig(root, fmt, attributes, val_fraction=val_fraction, split_seed=split_seed, **table),
            problems,
            images=check_files is True,
        )
    elif root and check_files:
        _check_dataset(fmt, Path(root), attributes, problems, images=check_files is True)

    if problems:
        raise ConfigError(source, problems)
    return SweepConfig(
        name=name,
        results=results,
        dataset=DatasetConfig(
            root=root,
            format=fmt,
            attributes=attributes,
            image_size=tuple(size),
            cache=cache,
            val_fraction=val_fraction,
            split_seed=split_seed,
            **table,
        ),
        model=model,
        train=train,
        adversarial=adversarial,
        phases=tuple(phases),
        resources=resources,
        partners=partners,
        pairs=pairs,
        tracking=tracking,
    )


def _pairs(c: _Checker, raw: dict, problems: list[str]) -> PairsConfig:
    """The `pairs:` section (its check against phases is the caller's, once phases are known)."""
    pc = c.section(raw, "pairs")
    c.unknown(pc, PairsConfig, "pairs.")
    pairs = PairsConfig(
        mode=c.value(pc, "mode", "str", PairsConfig.mode, "pairs.", choices=PAIR_MODES),
        strategy=c.value(pc, "strategy", "str", PairsConfig.strategy, "pairs.", choices=PAIR_STRATEGIES),
        budget=c.value(pc, "budget", "float", PairsConfig.budget, "pairs.", above=0),
        confidence=c.value(pc, "confidence", "float", PairsConfig.confidence, "pairs.", above=0),
        first_round=c.value(pc, "first_round", "int", PairsConfig.first_round, "pairs.", minimum=1),
        rank=c.value(pc, "rank", "int", PairsConfig.rank, "pairs.", minimum=0),
        seed=c.value(pc, "seed", "int", PairsConfig.seed, "pairs.", minimum=0),
        estimator=c.value(pc, "estimator", "str", PairsConfig.estimator, "pairs.", choices=PAIR_ESTIMATORS),
        confirm=c.value(pc, "confirm", "int", PairsConfig.confirm, "pairs.", minimum=1),
        rule=c.value(pc, "rule", "str", PairsConfig.rule, "pairs.", choices=CONFIRM_RULES),
        short_epochs=c.value(pc, "short_epochs", "int", PairsConfig.short_epochs, "pairs.", minimum=1),
        every=c.value(pc, "every", "int", PairsConfig.every, "pairs.", minimum=1),
    )
    if pairs.budget > 1:
        problems.append(f"pairs.budget: a share of the pair trials, at most 1 (every pair), got {pairs.budget}")
    if pairs.confidence >= 1:
        problems.append(f"pairs.confidence: a probability below 1 (e.g. 0.95), got {pairs.confidence}")
    return pairs


def parse_pairs(raw: Any, source: str) -> PairsConfig:
    """A `pairs:` section alone ({"pairs": {...}}), checked as in a sweep config (`aal-sweep simulate`)."""
    problems: list[str] = []
    c = _Checker(problems)
    c.unknown(raw, ("pairs",), "")
    pairs = _pairs(c, raw, problems)
    if problems:
        raise ConfigError(source, problems)
    return pairs


def _table_settings(c: _Checker, d: dict, fmt: str, attributes, problems: list[str]) -> dict[str, Any]:
    """The table format's keys of the dataset section (DatasetConfig's keyword arguments)."""
    out: dict[str, Any] = {
        "image_column": c.value(d, "image_column", "str", IMAGE_COLUMN, "dataset."),
        "split_column": c.value(d, "split_column", "str", None, "dataset.", nullable=True),
        "group_column": c.value(d, "group_column", "str", None, "dataset.", nullable=True),
        "group_pattern": c.value(d, "group_pattern", "str", None, "dataset.", nullable=True),
        "test_fraction": c.value(d, "test_fraction", "float", TEST_FRACTION, "dataset.", above=0),
    }
    if out["test_fraction"] >= 1:
        problems.append(f"dataset.test_fraction: {out['test_fraction']} must be below 1 (e.g. {TEST_FRACTION})")
        out["test_fraction"] = TEST_FRACTION
    if out["group_column"] and out["group_pattern"]:
        problems.append("dataset.group_pattern: set either group_column or group_pattern, not both")
    if out["group_pattern"]:
        import re

        try:
            re.compile(out["group_pattern"])
        except re.error as e:
            problems.append(f"dataset.group_pattern: {out['group_pattern']!r} is not a regular expression ({e})")
    labels = d.get("labels")
    if isinstance(labels, dict):
        bad = [k for k, v in labels.items() if k not in SPLITS or not isinstance(v, str)]
        if bad or "train" not in labels:
            problems.append(
                f"dataset.labels: expected a file, or a mapping of train (required), val, test to files, got {labels!r}"
            )
            labels = None
        else:
            labels = dict(labels)
    elif labels is not None and not isinstance(labels, str):
        problems.append(f"dataset.labels: expected a file path (or {{train: FILE, test: FILE}}), got {labels!r}")
        labels = None
    if fmt == "table" and labels is None and "labels" not in d:
        problems.append(
            "dataset.labels: missing (the table format reads a CSV or Parquet file of labels: its path, "
            "relative to dataset.root)"
        )
    out["labels"] = labels
    m = c.section(d, "missing") if "missing" in d else {}
    c.unknown(m, MissingConfig, "dataset.missing.")
    values = m.get("values", MISSING_VALUES)
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values
    ):
        problems.append(f'dataset.missing.values: expected a list of cell values (e.g. ["", -1]), got {values!r}')
        values = MISSING_VALUES
    policy = m.get("policy", MISSING_POLICY)
    choices = ", ".join(MISSING_POLICIES)
    if isinstance(policy, dict):
        for a, p in policy.items():
            if p not in MISSING_POLICIES:
                problems.append(f"dataset.missing.policy.{a}: {p!r} is not one of {choices}")
            elif attributes is not None and a not in attributes:
                problems.append(f"dataset.missing.policy: {a!r} is not in dataset.attributes ({', '.join(attributes)})")
        policy = dict(policy)
    elif policy not in MISSING_POLICIES:
        problems.append(f"dataset.missing.policy: {policy!r} is not one of {choices}, or a mapping attribute: policy")
        policy = MISSING_POLICY
    out["missing"] = MissingConfig(tuple(values), policy)
    # a recorded config (sweep.yaml) holds every key at its default: only a key set otherwise is refused
    default = DatasetConfig("")
    keys = ("labels", "image_column", "split_column", "group_column", "group_pattern", "test_fraction")
    extra = [k for k in keys if k in d and out[k] != getattr(default, k)]
    extra += ["missing"] if "missing" in d and out["missing"] != default.missing else []
    if fmt not in OWN_FORMATS and extra:
        problems.append(f"dataset.{extra[0]}: applies to format table or huggingface only (this is {fmt}; drop it)")
    wrong = [k for k in extra if k in TABLE_ONLY]
    if fmt == "huggingface" and wrong:
        problems.append(f"dataset.{wrong[0]}: applies to format table only (a huggingface dataset has its splits)")
    return out


def _check_table(dataset: DatasetConfig, problems: list[str], images: bool = True) -> None:
    """A table dataset's columns, labels and splits, as a run reads them. Not its image paths: a run checks
    those once, before Ray starts (driver.check_data), and `config` or `plan` need none (`images`: whether
    the files are required here, or may be absent as for a sweep planned before its data arrives)."""
    from aal_sweep.data.index import load_index

    root = Path(dataset.root)
    if dataset.format == "huggingface" and not root.exists():
        pass  # a Hub id: looked up in the local cache by load_index
    elif not root.is_dir():
        if images or dataset.attributes is None:
            problems.append(
                f"dataset.root: folder {str(root)!r} does not exist (the folder the image paths are relative to)"
            )
        return
    try:
        index = load_index(dataset.source(), None, check_images=False)
    except DataError as e:
        if images or dataset.attributes is None or "missing (the label table" not in str(e):
            problems.append(f"dataset: {e}")
        return
    if len(index.attributes) < 2:
        problems.append(
            f"dataset.attributes: a sweep needs at least two attributes, the table has {list(index.attributes)}"
        )


def _tracking(c: _Checker, raw: dict, problems: list[str]) -> TrackingConfig:
    """tracking.mlflow / tracking.wandb: absent or null is off, a mapping (even {}) is on."""
    t = c.section(raw, "tracking")
    c.unknown(t, TrackingConfig, "tracking.")
    on = {}
    for key, kind in (("mlflow", MlflowConfig), ("wandb", WandbConfig)):
        if t.get(key) is None:
            continue
        if not isinstance(t[key], dict):
            fields = ", ".join(f.name for f in dataclasses.fields(kind))
            problems.append(
                f"tracking.{key}: expected a mapping ({fields}; {{}} for the defaults) or null (off), got {t[key]!r}"
            )
            continue
        c.unknown(t[key], kind, f"tracking.{key}.")
        on[key] = t[key]
    prefix, mlflow, wandb = "tracking.{}.", None, None
    if "mlflow" in on:
        m, default = on["mlflow"], MlflowConfig()
        mlflow = MlflowConfig(
            tracking_uri=c.value(
                m, "tracking_uri", "str", default.tracking_uri, prefix.format("mlflow"), nullable=True
            ),
            experiment=c.value(m, "experiment", "str", default.experiment, prefix.format("mlflow"), nullable=True),
        )
    if "wandb" in on:
        w, default = on["wandb"], WandbConfig()
        wandb = WandbConfig(
            project=c.value(w, "project", "str", default.project, prefix.format("wandb"), nullable=True),
            mode=c.value(w, "mode", "str", default.mode, prefix.format("wandb"), choices=WANDB_MODES),
        )
    return TrackingConfig(mlflow=mlflow, wandb=wandb)


def _compile_setting(value: Any, problems: list[str]) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    problems.append(f"train.compile: {value!r} is not one of auto, true, false")
    return TrainConfig.compile


def _seeds(c: _Checker, t: dict, problems: list[str]) -> tuple[int, ...] | None:
    """train.seeds: distinct integers >= 0 whose first is train.seed when both are given."""
    seeds = c.listof(t, "seeds", "int", None, "train.", min_len=1) if t.get("seeds") is not None else None
    if seeds is None:
        return None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        problems.append(f"train.seeds: expected distinct integers >= 0, got {list(seeds)}")
        return None
    if "seed" in t and t["seed"] != seeds[0]:
        problems.append(
            f"train.seed: {t['seed']!r} is not the first of train.seeds {list(seeds)} "
            f"(drop train.seed, or list it first)"
        )
    return seeds


def _check_dataset(fmt: str, root: Path, attributes, problems: list[str], images: bool = True) -> None:
    """The dataset folder's layout and attribute names. images=False (planning): only what is there is
    checked; a listed dataset.attributes needs nothing, else the annotation file must name the attributes."""
    from aal_sweep.data.celeba import ATTR_FILE, IMAGE_DIR, PARTITION_FILE, read_attribute_names

    if fmt != "celeba" and root.is_dir():
        _check_reid(fmt, root, attributes, problems, images)
        return
    plan_hint = (
        "; or list dataset.attributes (e.g. --set dataset.attributes=[Smiling,Male]) to plan before the data is there"
    )
    if not root.is_dir():
        if images or attributes is None:
            problems.append(
                f"dataset.root: folder {str(root)!r} does not exist (point it at the dataset folder"
                f"{plan_hint if not images else ''})"
            )
        return
    if not images:
        if (root / ATTR_FILE).is_file():
            _check_names(lambda: read_attribute_names(root / ATTR_FILE), ATTR_FILE, attributes, problems)
        elif attributes is None:
            problems.append(f"dataset.root: {str(root)!r} lacks {ATTR_FILE}, which names the attributes{plan_hint}")
        return
    missing = [n for n in (IMAGE_DIR, ATTR_FILE, PARTITION_FILE) if not (root / n).exists()]
    if missing:
        problems.append(
            f"dataset.root: {str(root)!r} lacks {', '.join(missing)} (the CelebA layout needs "
            f"{IMAGE_DIR}/, {ATTR_FILE} and {PARTITION_FILE})"
        )
        return
    _check_names(lambda: read_attribute_names(root / ATTR_FILE), ATTR_FILE, attributes, problems)


def _check_names(read, source: str, attributes, problems: list[str]) -> None:
    """The annotation file's attribute names (read()): at least two, and every listed attribute among them."""
    try:
        names = read()
    except DataError as e:  # not UTF-8, or duplicate names: reported with the other problems
        problems.append(f"dataset.root: {e}")
        return
    if len(names) < 2:
        problems.append(f"dataset.root: {source} has {len(names)} attribute(s); a sweep needs at least two")
    for a in attributes or ():
        if a not in names:
            problems.append(f"dataset.attributes: unknown attribute {a!r} (valid: {', '.join(names)})")


def _check_reid(fmt: str, root: Path, attributes, problems: list[str], images: bool = True) -> None:
    """The duke / market layout: both image folders and a readable .mat file holding the attributes."""
    from aal_sweep.data.index import attribute_names
    from aal_sweep.data.reid import LAYOUTS, TEST_DIR, TRAIN_DIR, find_mat
    from aal_sweep.data.types import DatasetSource

    missing = [n for n in (TRAIN_DIR, TEST_DIR) if not (root / n).is_dir()]
    if missing and images:
        problems.append(
            f"dataset.root: {str(root)!r} lacks {', '.join(missing)} (the {fmt} layout needs "
            f"{TRAIN_DIR}/, {TEST_DIR}/ and {LAYOUTS[fmt].mat_file})"
        )
        return
    if not images:
        try:
            find_mat(root, LAYOUTS[fmt])
        except DataError as e:
            if attributes is None:
                problems.append(f"dataset.root: {e}")
            return
    _check_names(lambda: attribute_names(DatasetSource(root, fmt)), LAYOUTS[fmt].mat_file, attributes, problems)


def unchecked_files(cfg: SweepConfig) -> list[str]:
    """What validation with check_files="annotations" could not look at because it is not there yet, one
    phrase each ("images not checked: /data/celeba/img_align_celeba missing")."""
    from aal_sweep.data.index import fingerprint_inputs

    out = []
    root = Path(cfg.dataset.root)
    if not root.is_dir():
        out.append(f"dataset not checked: {root} missing (attributes taken as listed)")
    else:
        try:
            files, folders, _ = fingerprint_inputs(cfg.dataset.source())
        except DataError as e:  # duke / market without their .mat file
            files, folders = [], []
            out.append(f"annotations not checked: {e}")
        out += [f"annotations not checked: {p} missing (attributes taken as listed)" for p in files if not p.is_file()]
        out += [f"images not checked: {p} missing" for p in folders if not p.is_dir()]
    if cfg.model.pretrained not in (None, "imagenet") and not Path(cfg.model.pretrained).is_file():
        out.append(f"model.pretrained not checked: {cfg.model.pretrained} missing")
    if cfg.model.pretrained == "imagenet":
        from aal_sweep.backbones import check_backbone

        out += [f"not checked: {p}" for p in check_backbone(cfg.model.backbone, "imagenet", None, weights=True)]
    return out


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error as one line with the line and column (1-based) where it found the problem."""

    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    text = " ".join(str(problem or e).split())
    if context:
        text += f" ({context}" + (f" started at {at(context_mark)})" if context_mark else ")")
    return "not valid YAML" + (f" at {at(mark)}" if mark else "") + f": {text}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `lr:` further down would quietly win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; the mapping's own keys override merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unhashable key: SafeLoader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (first at line {seen[key].line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`--set train.lr=0.01` -> (("train", "lr"), 0.01): a dotted key, and a YAML value (`[A,B]` is a list,
    `null` is None, an empty value too). AalError, one line, when it is not KEY=VALUE."""
    key, eq, value = text.partition("=")
    example = "e.g. --set train.lr=0.01 or --set dataset.attributes=[Smiling,Male]"
    if not eq:
        raise AalError(f"--set {text!r}: expected KEY=VALUE ({example})")
    path = tuple(key.strip().split("."))
    if not all(path):
        raise AalError(f"--set {text!r}: empty key or key part in {key!r} (a dotted key, {example})")
    try:
        return path, yaml.load(value, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise AalError(f"--set {text!r}: the value is {_yaml_problem(e)} (quote it or fix it, {example})") from None


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """A copy of the YAML mapping `raw` with each `--set KEY=VALUE` applied in order, as the same edit in the
    file would be; the validation that follows judges the result. A raw that is not a mapping is returned
    as it is (its own error is clearer)."""
    edits = [(text, *parse_override(text)) for text in overrides]  # every --set read before any is applied
    if not edits:
        return raw
    if raw is None:  # an empty file: the overrides are all there is
        raw = {}
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for text, path, value in edits:
        node = raw
        for depth, part in enumerate(path[:-1]):
            if node.get(part) is None:  # absent, or an empty section (`train:`)
                node[part] = {}
            if not isinstance(node[part], dict):
                above = ".".join(path[: depth + 1])
                raise AalError(
                    f"--set {text!r}: {above} is {node[part]!r}, not a mapping, so it has no key "
                    f"{path[depth + 1]!r} (set {above} itself, e.g. --set {above}=VALUE)"
                )
            node = node[part]
        node[path[-1]] = value
    return raw


def load_raw(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """The YAML file's mapping with `overrides` (--set KEY=VALUE) applied, not yet validated."""
    path = Path(path)
    if path.is_dir():  # e.g. a dataset or results folder where the config belongs
        raise ConfigError(str(path), ["is a folder; expected a sweep YAML file (e.g. jobs/demo.yaml)"])
    if not path.is_file():
        raise ConfigError(str(path), ["no such file (pass the path of a sweep YAML, e.g. jobs/demo.yaml)"])
    try:
        raw = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise ConfigError(
            str(path), [f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the file as UTF-8"]
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [_yaml_problem(e)]) from None
    return apply_overrides(raw, overrides)


def config_source(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """How errors name a config: its path, and the --set given with it."""
    return str(path) + "".join(f" --set {o}" for o in overrides)


def load_config(path: str | Path, check_files: bool | str = True, overrides: Sequence[str] = ()) -> SweepConfig:
    """Read, override (--set KEY=VALUE, in order), validate; every path made absolute."""
    cfg = parse_config(load_raw(path, overrides), config_source(path, overrides), check_files=check_files)
    # Trials run in other working directories (and on other nodes): every path becomes absolute here.
    absolute = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731
    pretrained = cfg.model.pretrained
    mlflow = cfg.tracking.mlflow
    if mlflow is not None and mlflow.tracking_uri and ":" not in mlflow.tracking_uri:  # a plain folder
        mlflow = dataclasses.replace(mlflow, tracking_uri=absolute(mlflow.tracking_uri))
    return dataclasses.replace(
        cfg,
        results=cfg.results if "://" in cfg.results else absolute(cfg.results),  # s3://... stays a URI
        dataset=dataclasses.replace(
            cfg.dataset,
            # a huggingface root that is no path is a Hub id (user/name), kept as it is
            root=cfg.dataset.root
            if cfg.dataset.format == "huggingface" and not Path(cfg.dataset.root).expanduser().exists()
            else absolute(cfg.dataset.root),
            cache=absolute(cfg.dataset.cache) if cfg.dataset.cache else None,
        ),
        model=dataclasses.replace(
            cfg.model, pretrained=pretrained if pretrained in (None, "imagenet") else absolute(pretrained)
        ),
        tracking=dataclasses.replace(cfg.tracking, mlflow=mlflow),
    )


def recorded_config(cfg: SweepConfig, attributes, results: str) -> dict[str, Any]:
    """The config as sweep.yaml records it (and `aal-sweep config` prints it): `results` where the store
    really is, dataset.attributes resolved to the sweep's list. It loads back as the same config."""
    d = cfg.to_dict()
    d["results"] = results
    d["dataset"]["attributes"] = list(attributes)
    return d


def resolve_attributes(cfg: SweepConfig) -> tuple[str, ...]:
    """The sweep's attributes in order: the configured subset, or every attribute in the file."""
    if cfg.dataset.attributes is not None:
        return cfg.dataset.attributes
    from aal_sweep.data.index import attribute_names

    return tuple(attribute_names(cfg.dataset.source()))
