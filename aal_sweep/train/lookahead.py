"""TAG's inter-task affinity (Fifty et al., NeurIPS 2021), recorded during one all-attribute training.

    result = lookahead_affinity(TrainSpec(kind="multitask_all", attributes=names, ...), data, every=10)
    result.estimates   # ESTIMATE_COLUMNS (analysis/screening.py), estimator "lookahead"
    result.val_acc     # the trained model's per-head best validation accuracy

One shared trunk, one linear head per attribute, trained by the ordinary loop (`fit`). Every `every` steps,
before the step, on the step's own batch: for each attribute j, a lookahead SGD step on the shared (backbone)
parameters using j's loss alone, at the optimizer's current learning rate, and every attribute i's loss on
the same batch before and after it:

    Z[i <- j] = 1 - L_i(after j's step) / L_i(before)

averaged over the recorded steps. Z > 0: j's gradient lowers i's loss (j helps i); Z < 0: it raises it. So
the score of (attribute a = i, partner b = j) is Z[i <- j] itself: negative = b hurts a, the screening sign.
The lookahead never touches the model: the stepped parameters and copies of the buffers (batch-norm running
statistics) go through `torch.func.functional_call`, so training with the measurement is training without it.
The measurement runs in float32 outside autocast: a lookahead step at lr 1e-4 changes a loss by about 1e-4 of
itself, below bfloat16's resolution.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call

from aal_sweep.analysis.screening import estimates_frame
from aal_sweep.data.cache import DecodedDataset
from aal_sweep.kinds import MULTITASK_ALL
from aal_sweep.train.loop import FitResult, Model, TrainSpec, fit
from aal_sweep.train.tasks import Task, head_losses

EVERY = 10  # training steps between recordings: each costs about M + 1 forward and M backward passes
SHARED_PREFIX = "backbone."  # the shared trunk's parameter names; the heads are task-specific


@dataclass
class LookaheadResult:
    estimates: pd.DataFrame  # ESTIMATE_COLUMNS: score = mean Z[attribute <- partner]
    affinity: pd.DataFrame  # M x M mean Z[i <- j] (row i, column j), the diagonal (a task's own step) included
    val_acc: dict[str, float]  # per head, at its best validation epoch
    seconds: float  # the training's seconds, lookahead steps included: the estimator's cost
    lookahead_seconds: float  # of which the recordings
    steps: int  # recorded steps
    fit: FitResult


def affinity_step(task: Task, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
    """Z [M, M] on one batch (row i: the measured attribute, column j: the attribute whose loss stepped),
    on the device; the model's parameters, buffers and gradients are left as they were."""
    shared = [(n, p) for n, p in task.named_parameters() if n.startswith(SHARED_PREFIX) and p.requires_grad]
    # copies: batch norm in train mode updates its running statistics in place during a forward
    buffers = {n: b.clone() for n, b in task.named_buffers()}
    y = y.float()

    def losses(params: dict[str, torch.Tensor]) -> torch.Tensor:  # [M]: each head's mean BCE
        logits = functional_call(task, {**params, **buffers}, (x,)).float()
        return head_losses(logits, y, task.masked)  # masked: over each head's labelled images

    before = losses({})
    m = len(before)
    z = torch.empty(m, m, device=before.device)
    for j in range(m):
        grads = torch.autograd.grad(before[j], [p for _, p in shared], retain_graph=j < m - 1, allow_unused=True)
        stepped = {n: p.detach() - lr * g if g is not None else p.detach() for (n, p), g in zip(shared, grads)}
        with torch.no_grad():
            if task.masked:  # a head with no labelled image in the batch (loss 0) records no change
                z[:, j] = torch.where(before > 0, 1 - losses(stepped) / before.detach().clamp(min=1e-30), 0.0)
            else:
                z[:, j] = 1 - losses(stepped) / before.detach()
    return z


class AffinityRecorder:
    """fit's `before_step`: every `every` steps, adds `affinity_step` at the optimizer's current learning rate
    (or a fixed `lr`) to a running sum kept on the device (no host sync but for timing)."""

    def __init__(self, every: int = EVERY, lr: float | None = None):
        if every < 1:
            raise ValueError(f"lookahead: every must be at least 1 step, got {every}")
        self.every, self.lr = every, lr
        self.step, self.recorded, self.seconds = 0, 0, 0.0
        self.total: torch.Tensor | None = None

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.step % self.every == 0:
            t0 = time.perf_counter()
            lr = self.lr if self.lr is not None else model.optimizers[0].param_groups[0]["lr"]
            z = affinity_step(model.task, x, y, lr)
            self.total = z if self.total is None else self.total + z
            self.recorded += 1
            if z.device.type == "cuda":  # only to time the recording honestly
                torch.cuda.synchronize(z.device)
            self.seconds += time.perf_counter() - t0
        self.step += 1

    def mean(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("lookahead: no step was recorded (the training had no batch)")
        return (self.total / self.recorded).cpu().numpy().astype(np.float64)


def lookahead_affinity(
    spec: TrainSpec, data: DecodedDataset, every: int = EVERY, lr: float | None = None
) -> LookaheadResult:
    """Train `spec` (kind multitask_all: every attribute's head on one trunk) once, recording TAG's affinity.

    `lr`: the lookahead step's learning rate; None = the optimizer's at that step (TAG's choice). The
    backbone is not compiled (a compiled module would recompile for every substituted set of parameters)."""
    if spec.kind not in ("multitask", MULTITASK_ALL):
        raise ValueError(f"lookahead needs one multi-task training (kind {MULTITASK_ALL}), got kind {spec.kind!r}")
    if len(spec.attributes) < 2:
        raise ValueError(f"lookahead needs at least two attributes, got {list(spec.attributes)}")
    recorder = AffinityRecorder(every, lr)
    result = fit(dataclasses.replace(spec, compile=False), data, before_step=recorder)
    z = recorder.mean()
    names = list(spec.attributes)
    return LookaheadResult(
        estimates=estimates_frame("lookahead", names, z, seed=spec.seed, cost=result.train_seconds),
        affinity=pd.DataFrame(z, index=pd.Index(names, name="attribute"), columns=names),
        val_acc={h.attribute: h.val_acc for h in result.heads},
        seconds=result.train_seconds,
        lookahead_seconds=recorder.seconds,
        steps=recorder.recorded,
        fit=result,
    )
