"""fit(spec, data, on_epoch) -> FitResult: one training of any kind, in plain PyTorch (no Ray).

The task computes the losses (train/tasks.py); this loop runs backward and the optimizer steps, outside
autocast, in `_apply`: the one place where clipping or a GradScaler would go for every kind of trial.
After every epoch it measures validation accuracy and loss and test accuracy of every evaluated head, keeps
which images the best epoch so far classified correctly (bit-packed), and hands the full training state to
`on_epoch`; `fit(..., state=that)` continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from aal_sweep.backbones import build_backbone, normalisation
from aal_sweep.config import AdversarialConfig, ModelConfig, TrainConfig
from aal_sweep.data.cache import DecodedDataset
from aal_sweep.data.tensors import SplitTensors
from aal_sweep.kinds import evaluated
from aal_sweep.train.evaluate import evaluate
from aal_sweep.train.factory import make_task
from aal_sweep.train.tasks import KINDS, Stage, Task

log = logging.getLogger(__name__)

EVAL_BATCH_FACTOR = 4  # evaluation batches are this many training batches: no activations are kept


@dataclass(frozen=True)
class TrainSpec:
    """Everything one training needs, as plain values. `attributes`: primary first."""

    kind: str
    attributes: tuple[str, ...]
    lam: float | None = None
    method: str | None = None
    # the defaults are the config's (config.py's dataclasses): written once, there
    backbone: str = ModelConfig.backbone
    pretrained: str | None = ModelConfig.pretrained
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    weight_decay: float = TrainConfig.weight_decay
    lr_milestones: tuple[int, ...] = TrainConfig.lr_milestones
    lr_gamma: float = TrainConfig.lr_gamma
    seed: int = TrainConfig.seed
    critic_hidden: int = AdversarialConfig.critic_hidden
    gp_weight: float = AdversarialConfig.gp_weight
    device: str = TrainConfig.device
    num_threads: int | None = TrainConfig.num_threads
    compile: bool | str = TrainConfig.compile  # auto | True | False: see use_compile
    # Benchmark knobs, not config keys: torch.compile's mode (None = its default; "reduce-overhead" uses
    # CUDA graphs, "max-autotune" also searches kernels), the GPU-resident data rule (data/residency.py)
    # and a cap on the training steps of an epoch (the benchmark times a slice of a full-size split).
    compile_mode: str | None = None
    resident: str = "auto"
    max_steps_per_epoch: int | None = None
    # a local .pt state_dict the task starts from (adversarial_shared: the multitask_all model's weights,
    # fetched from the results storage by the sweep); not a training setting: the trial id names its source
    init_weights: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        want = {"single": 1, "pair": 2, "adversarial": 2, "adversarial_shared": 2}.get(self.kind)
        if want is not None and len(self.attributes) != want:
            raise ValueError(f"a {self.kind} training takes {want} attribute(s), got {list(self.attributes)}")

    @classmethod
    def from_config(cls, cfg, kind: str, attributes, lam: float | None = None) -> TrainSpec:
        t, m, a = cfg.train, cfg.model, cfg.adversarial
        return cls(
            kind=kind,
            attributes=tuple(attributes),
            lam=lam,
            method=a.method if kind == "adversarial" else None,
            backbone=m.backbone,
            pretrained=m.pretrained,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            weight_decay=t.weight_decay,
            lr_milestones=tuple(t.lr_milestones),
            lr_gamma=t.lr_gamma,
            seed=t.seed,
            critic_hidden=a.critic_hidden,
            gp_weight=a.gp_weight,
            device=t.device,
            num_threads=t.num_threads,
            compile=t.compile,
        )

    def evaluated(self) -> tuple[str, ...]:
        """The attributes whose heads are measured: the partner's C_b is thrown away by design."""
        return evaluated(self.kind, self.attributes)


@dataclass
class HeadResult:
    attribute: str
    val_acc_by_epoch: list[float]
    val_loss_by_epoch: list[float]
    test_acc_by_epoch: list[float]
    best_epoch: int  # 0-based epoch with the best validation accuracy (first on ties)
    val_acc: float
    test_acc: float
    # the images labelled for this attribute (every image of the split unless some labels are unknown):
    # what its accuracies and bits count, the row's n_val / n_test
    n_val: int
    n_test: int
    # Which images the best epoch classified correctly, in split order (data.images[split]):
    # numpy.packbits(bool vector).tobytes(), big bit order; numpy.unpackbits(...)[:n_val] gives them back.
    val_correct: bytes = b""
    test_correct: bytes = b""


@dataclass
class FitResult:
    heads: list[HeadResult]
    epochs_run: int
    train_seconds: float
    train_images_per_second: float
    n_val: int
    n_test: int
    device: str
    history: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the correctness bits as hex strings."""
        d = dataclasses.asdict(self)
        for h in d["heads"]:
            h["val_correct"], h["test_correct"] = h["val_correct"].hex(), h["test_correct"].hex()
        return d


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


def use_compile(setting: bool | str, device: torch.device) -> bool:
    """train.compile: auto compiles on CUDA only (on a CPU the compile time outweighs the gain here)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A generator per epoch, derived from (seed, epoch): a resumed run shuffles and flips exactly as an
    # uninterrupted one without carrying generator state across the checkpoint.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _apply(stage: Stage, optimizers: list[torch.optim.Optimizer]) -> None:
    """Backward and step, outside autocast: the one place every kind of trial updates its parameters."""
    for g in stage.groups:
        optimizers[g].zero_grad(set_to_none=True)
    stage.loss.backward()
    for g in stage.groups:
        optimizers[g].step()


@dataclass
class Model:
    """A task ready to train: its optimizers and schedulers (one per parameter group) and its autocast."""

    task: Task
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]
    autocast: Callable[[], Any]
    compiled: bool


def build_model(spec: TrainSpec, device: torch.device) -> Model:
    """The seeded model of `spec` on `device`: channels_last and bf16 autocast on CUDA, compiled if asked."""
    torch.manual_seed(spec.seed)  # model initialisation (seeds the CUDA generators too)
    backbone, width = build_backbone(spec.backbone, spec.pretrained)
    task = make_task(
        spec.kind,
        backbone,
        width,
        len(spec.attributes),
        spec.method,
        spec.lam,
        spec.critic_hidden,
        spec.gp_weight,
        spec.init_weights,
    ).to(device)
    if device.type == "cuda":
        task = task.to(memory_format=torch.channels_last)
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    compiled = use_compile(spec.compile, device)
    if compiled:
        # In place, so state_dict keys (and checkpoints) are those of the eager model. Only the backbone:
        # it is nearly all the compute, and the heads, the GRL's autograd.Function and the WGAN critic's
        # double backward stay eager. Compiled once per trial, on its first batch (and once more per new
        # batch shape and for evaluation).
        task.backbone.compile(**({"mode": spec.compile_mode} if spec.compile_mode else {}))
    optimizers = [torch.optim.Adam(g, lr=spec.lr, weight_decay=spec.weight_decay) for g in task.param_groups()]
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, list(spec.lr_milestones), spec.lr_gamma) for o in optimizers]
    return Model(task, optimizers, schedulers, autocast, compiled)


def train_epoch(
    task: Task,
    batches,
    optimizers,
    autocast,
    on_first_step: Callable[[], None] | None = None,
    max_steps: int | None = None,
    before_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, int, int]:
    """One pass over `batches` of (x, y); returns (sum of the logged losses on the device, steps, images).

    `before_step(x, y)`: called with each batch before its step, at the parameters the step starts from."""
    loss_sum = torch.zeros((), device=next(task.parameters()).device)
    n_batches = n_images = 0
    for x, y in batches:
        if max_steps is not None and n_batches >= max_steps:
            break
        if before_step is not None:
            before_step(x, y)
        stages = task.stages(x, y)
        while True:
            with autocast():  # the forward part of the next stage, after the previous stage's step
                stage = next(stages, None)
            if stage is None:
                break
            _apply(stage, optimizers)
            if stage.logged is not None:
                loss_sum += stage.logged
        n_batches += 1
        n_images += len(x)
        if on_first_step is not None and n_batches == 1:
            on_first_step()
    return loss_sum, n_batches, n_images


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _new_history(n_heads: int) -> dict[str, Any]:
    empty = torch.zeros(0, dtype=torch.uint8)
    return {
        "val_acc": [[] for _ in range(n_heads)],
        "val_loss": [[] for _ in range(n_heads)],
        "test_acc": [[] for _ in range(n_heads)],
        "train_loss": [],
        "epoch_seconds": [],
        "train_epoch_seconds": [],
        "train_images": [],
        "eval_seconds": [],
        # the best epoch so far's packed correctness per head, as uint8 tensors (plain checkpoint values)
        "val_correct": [empty] * n_heads,
        "test_correct": [empty] * n_heads,
    }


def fit(
    spec: TrainSpec,
    data: DecodedDataset,
    on_epoch: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    state: dict[str, Any] | None = None,
    before_step: Callable[[Model, torch.Tensor, torch.Tensor], None] | None = None,
) -> FitResult:
    """Train `spec` on `data`; call `on_epoch(state, metrics)` after each epoch; resume from `state` if given.

    `state` refers to the live model and optimizer tensors: `on_epoch` must save or copy it before returning.
    `before_step(model, x, y)`: called before each training step (train/lookahead.py measures there); it
    must leave the model as it found it. Its time counts as training time."""
    t_start = time.perf_counter()
    device = pick_device(spec.device)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    model = build_model(spec, device)
    task, optimizers, schedulers, autocast = model.task, model.optimizers, model.schedulers, model.autocast

    cols = data.columns(spec.attributes)
    mean, std = normalisation(spec.backbone)  # the backbone's own (timm's pretrained config), ImageNet's for ours
    splits = {
        s: SplitTensors(data.images[s], data.labels[s][:, cols], device, spec.resident, mean, std)
        for s in ("train", "val", "test")
    }
    # unknown labels (< 0; only a signed label array can hold them): every loss and accuracy is masked
    task.masked = any(data.labels[s].dtype.kind == "i" and (data.labels[s][:, cols] < 0).any() for s in splits)
    evaluated = spec.evaluated()
    history = _new_history(len(evaluated))
    start_epoch, train_seconds = 0, 0.0
    if state is not None:
        task.load_state_dict(state["model"])
        for o, s in zip(optimizers, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = {**history, **state["history"]}  # checkpoints written before a key existed lack it
        start_epoch, train_seconds = state["epoch"] + 1, state["train_seconds"]

    first_step = {}

    def on_first_step() -> None:  # once per fit: the time to first step includes building and compiling
        _sync(device)
        first_step["seconds"] = time.perf_counter() - t_start

    eval_batch = EVAL_BATCH_FACTOR * spec.batch_size
    for epoch in range(start_epoch, spec.epochs):
        t0 = time.perf_counter()
        batches = splits["train"].batches(spec.batch_size, _epoch_generator(spec.seed, epoch), augment=True)
        loss_sum, n_batches, n_images = train_epoch(
            task,
            batches,
            optimizers,
            autocast,
            on_first_step if not first_step else None,
            spec.max_steps_per_epoch,
            None if before_step is None else partial(before_step, model),
        )
        for s in schedulers:
            s.step()
        _sync(device)
        t1 = time.perf_counter()
        train_seconds += t1 - t0
        val, test = (evaluate(task, splits[s], eval_batch, autocast) for s in ("val", "test"))
        _record(history, val, test)
        history["train_loss"].append(float(loss_sum) / max(n_batches, 1))
        history["train_epoch_seconds"].append(t1 - t0)
        history["train_images"].append(n_images)
        history["eval_seconds"].append(time.perf_counter() - t1)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        metrics = {
            "epoch": epoch,
            "train_loss": history["train_loss"][-1],
            **{f"val_acc/{a}": float(val.accuracy[j]) for j, a in enumerate(evaluated)},
        }
        log.info("epoch %d %s", epoch, metrics)
        if on_epoch is not None:
            train_state = {
                "epoch": epoch,
                "model": task.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [s.state_dict() for s in schedulers],
                "rng": torch.get_rng_state(),
                "history": history,
                "train_seconds": train_seconds,
            }
            if device.type == "cuda":
                train_state["cuda_rng"] = torch.cuda.get_rng_state(device)
            on_epoch(train_state, metrics)

    return _result(spec, history, splits, train_seconds, device, model.compiled, first_step.get("seconds"))


def _record(history: dict[str, Any], val, test) -> None:
    """Append one epoch's accuracies and losses; keep the correctness bits of each head's best epoch so far."""
    for j in range(len(history["val_acc"])):
        earlier = history["val_acc"][j]
        if not earlier or val.accuracy[j] > max(earlier):  # strictly better: the first best epoch wins ties
            history["val_correct"][j] = val.packed_correct(j)
            history["test_correct"][j] = test.packed_correct(j)
        history["val_acc"][j].append(float(val.accuracy[j]))
        history["val_loss"][j].append(float(val.loss[j]))
        history["test_acc"][j].append(float(test.accuracy[j]))


def _result(
    spec: TrainSpec,
    history: dict[str, Any],
    splits: dict[str, SplitTensors],
    train_seconds: float,
    device: torch.device,
    compiled: bool,
    first_step_seconds: float | None,
) -> FitResult:
    heads = []
    for j, a in enumerate(spec.evaluated()):
        va = history["val_acc"][j]
        best = int(np.argmax(va)) if va else -1
        heads.append(
            HeadResult(
                a,
                va,
                history["val_loss"][j],
                history["test_acc"][j],
                best,
                va[best] if va else float("nan"),
                history["test_acc"][j][best] if va else float("nan"),
                int((splits["val"].labels[:, j] >= 0).sum()),
                int((splits["test"].labels[:, j] >= 0).sum()),
                history["val_correct"][j].numpy().tobytes(),
                history["test_correct"][j].numpy().tobytes(),
            )
        )
    epochs_run = len(history["train_loss"])
    # checkpoints written before train_images existed: every epoch saw the whole split
    n_trained = sum(history["train_images"]) + splits["train"].n * (epochs_run - len(history["train_images"]))
    return FitResult(
        heads=heads,
        epochs_run=epochs_run,
        train_seconds=train_seconds,
        train_images_per_second=n_trained / train_seconds if train_seconds else 0.0,
        n_val=splits["val"].n,
        n_test=splits["test"].n,
        device=str(device),
        history={
            k: history[k]
            for k in ("train_loss", "epoch_seconds", "train_epoch_seconds", "train_images", "eval_seconds")
        }
        | {
            "compiled": compiled,
            "first_step_seconds": first_step_seconds,
            "resident": {s: t.resident for s, t in splits.items()},
        },
    )
