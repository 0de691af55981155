"""fit(spec, data, on_epoch) -> FitResult: one training of any kind, in plain PyTorch (no Ray).

After every epoch it measures validation accuracy and loss and test accuracy of every evaluated head, and
hands the full training state to `on_epoch`; `fit(..., state=that)` continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aal_sweep.data.cache import DecodedDataset
from aal_sweep.data.tensors import SplitTensors
from aal_sweep.models import build_backbone
from aal_sweep.train.tasks import KINDS, Task, make_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """Everything one training needs, as plain values. `attributes`: primary first."""

    kind: str
    attributes: tuple[str, ...]
    lam: float | None = None
    method: str | None = None
    backbone: str = "resnet18"
    pretrained: str | None = None
    epochs: int = 6
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (4,)
    lr_gamma: float = 0.1
    seed: int = 0
    critic_hidden: int = 256
    gp_weight: float = 10.0
    device: str = "auto"
    num_threads: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        want = {"single": 1, "pair": 2, "adversarial": 2}.get(self.kind)
        if want is not None and len(self.attributes) != want:
            raise ValueError(f"a {self.kind} training takes {want} attribute(s), got {list(self.attributes)}")

    @classmethod
    def from_config(cls, cfg, kind: str, attributes, lam: float | None = None) -> "TrainSpec":
        t, m, a = cfg.train, cfg.model, cfg.adversarial
        return cls(kind=kind, attributes=tuple(attributes), lam=lam,
                   method=a.method if kind == "adversarial" else None,
                   backbone=m.backbone, pretrained=m.pretrained, epochs=t.epochs, batch_size=t.batch_size,
                   lr=t.lr, weight_decay=t.weight_decay, lr_milestones=tuple(t.lr_milestones),
                   lr_gamma=t.lr_gamma, seed=t.seed, critic_hidden=a.critic_hidden, gp_weight=a.gp_weight,
                   device=t.device, num_threads=t.num_threads)

    def evaluated(self) -> tuple[str, ...]:
        """The attributes whose heads are measured: the partner's C_b is thrown away by design."""
        return self.attributes[:1] if self.kind == "adversarial" else self.attributes


@dataclass
class HeadResult:
    attribute: str
    val_acc_by_epoch: list[float]
    val_loss_by_epoch: list[float]
    test_acc_by_epoch: list[float]
    best_epoch: int  # 0-based epoch with the best validation accuracy (first on ties)
    val_acc: float
    test_acc: float


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
        return dataclasses.asdict(self)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible (use auto or cpu)")
    return torch.device(name)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A generator per epoch, derived from (seed, epoch): a resumed run shuffles and flips exactly as an
    # uninterrupted one without carrying generator state across the checkpoint.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def evaluate(task: Task, split: SplitTensors, batch_size: int, autocast) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluated head: (accuracy, mean BCE loss) over the split."""
    task.eval()
    k = task.n_eval
    correct = torch.zeros(k, device=split.device, dtype=torch.float64)
    loss = torch.zeros(k, device=split.device, dtype=torch.float64)
    for x, y in split.batches(batch_size):
        with autocast():
            logits = task(x).float()
        y = y[:, :k]
        correct += ((logits > 0) == (y > 0.5)).sum(0)
        loss += F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(0)
    task.train()
    n = max(split.n, 1)
    return (correct / n).cpu().numpy(), (loss / n).cpu().numpy()  # one host sync per evaluation


def fit(spec: TrainSpec, data: DecodedDataset, on_epoch: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
        state: dict[str, Any] | None = None) -> FitResult:
    """Train `spec` on `data`; call `on_epoch(state, metrics)` after each epoch; resume from `state` if given.

    `state` refers to the live model and optimizer tensors: `on_epoch` must save or copy it before returning."""
    device = pick_device(spec.device)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    torch.manual_seed(spec.seed)  # model initialisation
    backbone, width = build_backbone(spec.backbone, spec.pretrained)
    task = make_task(spec.kind, backbone, width, len(spec.attributes), spec.method, spec.lam,
                     spec.critic_hidden, spec.gp_weight).to(device)
    if device.type == "cuda":
        task = task.to(memory_format=torch.channels_last)
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    optimizers = task.make_optimizers(spec.lr, spec.weight_decay)
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, list(spec.lr_milestones), spec.lr_gamma) for o in optimizers]

    cols = data.columns(spec.attributes)
    splits = {s: SplitTensors(data.images[s], data.labels[s][:, cols], device) for s in ("train", "val", "test")}
    evaluated = spec.evaluated()
    history = {"val_acc": [[] for _ in evaluated], "val_loss": [[] for _ in evaluated],
               "test_acc": [[] for _ in evaluated], "train_loss": [], "epoch_seconds": []}
    start_epoch, train_seconds = 0, 0.0
    if state is not None:
        task.load_state_dict(state["model"])
        for o, s in zip(optimizers, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        torch.set_rng_state(state["rng"])
        history, start_epoch, train_seconds = state["history"], state["epoch"] + 1, state["train_seconds"]

    for epoch in range(start_epoch, spec.epochs):
        t0 = time.perf_counter()
        gen = _epoch_generator(spec.seed, epoch)
        loss_sum = torch.zeros((), device=device)
        n_batches = 0
        for x, y in splits["train"].batches(spec.batch_size, gen, augment=True):
            with autocast():
                loss_sum += task.train_step(x, y)
            n_batches += 1
        for s in schedulers:
            s.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t0
        val_acc, val_loss = evaluate(task, splits["val"], 2 * spec.batch_size, autocast)
        test_acc, _ = evaluate(task, splits["test"], 2 * spec.batch_size, autocast)
        for j in range(len(evaluated)):
            history["val_acc"][j].append(float(val_acc[j]))
            history["val_loss"][j].append(float(val_loss[j]))
            history["test_acc"][j].append(float(test_acc[j]))
        history["train_loss"].append(float(loss_sum) / max(n_batches, 1))
        history["epoch_seconds"].append(time.perf_counter() - t0)
        metrics = {"epoch": epoch, "train_loss": history["train_loss"][-1],
                   **{f"val_acc/{a}": float(val_acc[j]) for j, a in enumerate(evaluated)}}
        log.info("epoch %d %s", epoch, metrics)
        if on_epoch is not None:
            on_epoch({"epoch": epoch, "model": task.state_dict(),
                      "optimizers": [o.state_dict() for o in optimizers],
                      "schedulers": [s.state_dict() for s in schedulers],
                      "rng": torch.get_rng_state(), "history": history, "train_seconds": train_seconds}, metrics)

    heads = []
    for j, a in enumerate(evaluated):
        va = history["val_acc"][j]
        best = int(np.argmax(va)) if va else -1
        heads.append(HeadResult(a, va, history["val_loss"][j], history["test_acc"][j], best,
                                va[best] if va else float("nan"),
                                history["test_acc"][j][best] if va else float("nan")))
    n_train = splits["train"].n
    epochs_run = len(history["train_loss"])
    return FitResult(heads=heads, epochs_run=epochs_run, train_seconds=train_seconds,
                     train_images_per_second=n_train * epochs_run / train_seconds if train_seconds else 0.0,
                     n_val=splits["val"].n, n_test=splits["test"].n, device=str(device),
                     history={"train_loss": history["train_loss"], "epoch_seconds": history["epoch_seconds"]})
