"""Evaluation of a split: per-head accuracy, mean BCE loss, and which images each head got right.

Everything stays on the device until the end: one host transfer per split and epoch, no per-batch sync.
Only the images labelled for a head count for it (a label below 0 is unknown): its accuracy and loss are
over them, and its correctness bits list them alone, in split order, so every statistic of the attribute
(paired tests, bootstrap) sees exactly its labelled images; `n[head]` is their number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aal_sweep.data.tensors import SplitTensors
from aal_sweep.train.tasks import Task

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # numpy.packbits' default (big) bit order


def packbits(bits: torch.Tensor) -> torch.Tensor:
    """numpy.packbits for a 1-d bool tensor, on its device: uint8 [ceil(N / 8)], first image in the top bit."""
    n = len(bits)
    padded = torch.zeros(-(-n // 8) * 8, dtype=torch.uint8, device=bits.device)
    padded[:n] = bits
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    return (padded.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


@dataclass
class Evaluation:
    accuracy: np.ndarray  # [k] float64: correct / n, exactly
    loss: np.ndarray  # [k] float64: mean BCE
    packed: list[torch.Tensor]  # per head: packbits of the per-image correctness (its labelled images), host
    n: np.ndarray  # [k] int64: the images labelled for each head (the split's size when none is unknown)

    def packed_correct(self, head: int) -> torch.Tensor:
        return self.packed[head]


@torch.no_grad()
def evaluate(task: Task, split: SplitTensors, batch_size: int, autocast) -> Evaluation:
    """Every evaluated head of `task` on `split`, images in split order."""
    was_training = task.training
    task.eval()
    k = task.n_eval
    correct = torch.zeros(split.n, k, dtype=torch.bool, device=split.device)
    known = torch.zeros(split.n, k, dtype=torch.bool, device=split.device)
    loss = torch.zeros(k, device=split.device, dtype=torch.float64)
    start = 0
    for x, y in split.batches(batch_size):
        with autocast():
            logits = task(x).float()
        y = y[:, :k]
        labelled = y >= 0
        known[start : start + len(x)] = labelled
        # an unknown image counts as wrong here and is then left out of n, the accuracy and the bits
        correct[start : start + len(x)] = ((logits > 0) == (y > 0.5)) & labelled
        # times 1.0 where every label is known: the same sum, bit for bit, as before masks existed
        loss += (F.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none") * labelled).sum(0)
        start += len(x)
    task.train(was_training)
    n = known.sum(0, dtype=torch.int64)
    accuracy = correct.sum(0, dtype=torch.int64).double() / n.clamp(min=1).double()
    loss = loss / n.clamp(min=1).double()
    if task.masked:  # each head's bits list its labelled images only: one host sync per head
        packed = [packbits(correct[known[:, j], j]).cpu() for j in range(k)]
    else:
        flat = torch.cat([packbits(correct[:, j]) for j in range(k)]).cpu()  # one host sync per evaluation
        packed = [p.clone() for p in flat.reshape(k, -(-split.n // 8))]
    return Evaluation(accuracy.cpu().numpy(), loss.cpu().numpy(), packed, n.cpu().numpy())
