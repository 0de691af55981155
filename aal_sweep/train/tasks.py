"""The loss recipe of each kind of trial, kept apart from the loop (as timm's `task/` does).

A task owns its modules and says which parameters each optimizer updates (`param_groups`); it never calls
backward nor steps an optimizer. `task.stages(x, y)` yields the losses of one batch as `Stage`s, in order;
the loop runs the forward part of each stage under autocast and, outside it, `backward()` on the stage's
loss and a step of the optimizers it names (train/loop.py, `_apply`): so compilation, clipping or a
GradScaler apply to every kind of trial in that one place. A stage is computed only after the previous
one was applied, so a recipe whose second loss needs the first update (WGAN's critic) keeps its order.
`y` holds the trial's attributes in order: primary first, then the partner (pair / adversarial). A label
below 0 is unknown (data.types.UNKNOWN: the table format's ignored missing labels): with `task.masked` set
(train/loop.py sets it when the data has such labels) every loss is the mean over the batch's images labelled
for that head, an image unlabelled for an attribute adds nothing to that attribute's loss. Unmasked, the
losses are computed exactly as before masks existed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aal_sweep.kinds import VARIANTS
from aal_sweep.models import GradientReversal

KINDS = ("single", "pair", "multitask", "adversarial", *VARIANTS)  # VARIANTS: Table 1's others, train/variants.py


def head_losses(logits: torch.Tensor, y: torch.Tensor, masked: bool = False) -> torch.Tensor:
    """[k]: each column's mean BCE over the batch; masked: over the images labelled (y >= 0) in that column,
    0 where the batch has none (no host sync)."""
    if not masked:
        return F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").mean(0)
    known = y >= 0
    loss = F.binary_cross_entropy_with_logits(logits.float(), y.clamp(min=0), reduction="none") * known
    return loss.sum(0) / known.sum(0).clamp(min=1)


def bce(logits: torch.Tensor, y: torch.Tensor, masked: bool = False) -> torch.Tensor:
    """The mean BCE of one head (1-d logits and labels); masked: over the labelled images only."""
    if not masked:
        return F.binary_cross_entropy_with_logits(logits.float(), y)
    return head_losses(logits[:, None], y[:, None], True)[0]


@dataclass
class Stage:
    """One backward pass: `loss.backward()`, then a step of each optimizer in `groups` (indices into
    `param_groups()`). `logged`: the loss recorded as the trial's train loss (detached), if any."""

    loss: torch.Tensor
    groups: tuple[int, ...]
    logged: torch.Tensor | None = None


class Task(nn.Module):
    """A backbone, its heads, and the losses one batch produces."""

    n_eval: int  # columns of `forward`: the heads whose accuracy is measured
    masked: bool = False  # some labels are unknown (y < 0): every loss averages over the labelled images

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def param_groups(self) -> list[list[nn.Parameter]]:
        """One list of parameters per optimizer; every trained parameter in exactly one."""
        return [list(self.parameters())]

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        raise NotImplementedError


class MultiHead(Task):
    """single (1 head), pair (2 heads, L_a + L_b) and multitask (k heads): one linear layer, k logits."""

    def __init__(self, backbone: nn.Module, width: int, n_heads: int):
        super().__init__(backbone)
        self.heads = nn.Linear(width, n_heads)
        self.n_eval = n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        logits = self(x).float()
        # Sum over heads of each head's mean BCE: L_a + L_b for a pair.
        loss = head_losses(logits, y, self.masked).sum()
        yield Stage(loss, (0,), loss.detach())


class Adversarial(Task):
    """Primary head C_a on the features; auxiliary head C_b that learns b. Only C_a is evaluated."""

    n_eval = 1

    def __init__(self, backbone: nn.Module, width: int, lam: float):
        super().__init__(backbone)
        self.head_a = nn.Linear(width, 1)
        self.head_b = nn.Linear(width, 1)
        self.lam = float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_a(self.backbone(x))


class GRL(Adversarial):
    """Eq. 5-6: C_b minimises L_b; F and C_a minimise L_a - lambda * L_b, in one backward pass.

    Unchanged from the former in-task step: one optimizer over every parameter, one backward of L_a + L_b."""

    def __init__(self, backbone: nn.Module, width: int, lam: float):
        super().__init__(backbone, width, lam)
        self.reverse = GradientReversal(lam)

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        f = self.backbone(x)
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0], self.masked)
        loss_b = bce(self.head_b(self.reverse(f))[:, 0], y[:, 1], self.masked)
        yield Stage(loss_a + loss_b, (0,), loss_a.detach())


class GAN(Adversarial):
    """Eq. 4-5: F, C_a minimise L_a + lambda * L(C_b(f), 1 - y_b); C_b fits y_b on the same (detached) f.

    The former code took two steps per batch: first F and C_a on L_a + lambda * fooled (C_b's gradients from
    it discarded), then C_b on its own loss with the features of that same forward pass and C_b's weights
    unchanged by the first step (C_b is not in the first optimizer). Both gradients therefore come from the
    same parameters, and one backward gives each group exactly its gradient when the fooling term sees C_b's
    weights detached and C_b's own loss sees the features detached: the update is the same; only the number
    of backward passes (one instead of two) changed."""

    def param_groups(self) -> list[list[nn.Parameter]]:
        main = list(self.backbone.parameters()) + list(self.head_a.parameters())
        return [main, list(self.head_b.parameters())]

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        f = self.backbone(x)
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0], self.masked)
        # the flipped label of b; an unknown b stays unknown (y < 0), so it fools nothing
        flipped = torch.where(y[:, 1] < 0, y[:, 1], 1 - y[:, 1]) if self.masked else 1 - y[:, 1]
        fooled = bce(F.linear(f, self.head_b.weight.detach(), self.head_b.bias.detach())[:, 0], flipped, self.masked)
        loss_b = bce(self.head_b(f.detach())[:, 0], y[:, 1], self.masked)
        yield Stage(loss_a + self.lam * fooled + loss_b, (0, 1), loss_a.detach())


class WGAN(Adversarial):
    """WDGRL reading: a critic D on the features estimates W = E[D(f) | y_b=1] - E[D(f) | y_b=0]; D maximises
    W minus a gradient penalty; F and C_a minimise L_a + lambda * W.

    Two stages, as the former code's two steps: the critic steps first (on detached features), then F and C_a
    step against the updated critic. The features come from one forward pass, computed before both. Changed:
    the gradient penalty draws one mixing weight per batch row (it drew one per pair), so the same formula
    runs on other random numbers, without a host sync."""

    def __init__(self, backbone: nn.Module, width: int, lam: float, hidden: int, gp_weight: float):
        super().__init__(backbone, width, lam)
        del self.head_b  # the critic replaces the auxiliary classifier
        self.critic = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.gp_weight = gp_weight

    def param_groups(self) -> list[list[nn.Parameter]]:
        main = list(self.backbone.parameters()) + list(self.head_a.parameters())
        return [main, list(self.critic.parameters())]

    def _estimate(self, f: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pos = yb > 0.5
        neg = (yb >= 0) & ~pos  # an unknown label (y < 0) is in neither class; with none, neg == ~pos
        d = self.critic(f)[:, 0].float()
        # masked means, no host sync: a batch with one class only gives 0
        n_pos, n_neg = pos.sum(), neg.sum()
        w = (d * pos).sum() / n_pos.clamp(min=1) - (d * neg).sum() / n_neg.clamp(min=1)
        return w * ((n_pos > 0) & (n_neg > 0))

    def _gradient_penalty(self, f: torch.Tensor, yb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """Mean (|grad D(mix)| - 1)^2 over mixes of the k-th positive and the k-th negative (batch order),
        k < n = min(positives, negatives); 0 when a class is absent.

        Fixed shapes, no host sync (boolean indexing would wait for the GPU every batch): B candidate pairs
        from a stable sort, the k >= n masked out. `alpha`: the B mixing weights (drawn when None)."""
        b = len(f)
        pos = yb > 0.5
        # positives, then negatives, then unknown labels (y < 0), each in batch order
        order = torch.argsort((~pos).to(torch.uint8) + (yb < 0).to(torch.uint8), stable=True)
        n_pos = pos.sum()
        n = torch.minimum(n_pos, ((yb >= 0) & ~pos).sum())
        k = torch.arange(b, device=f.device)
        valid = k < n
        pos_k, neg_k = order[k.clamp(max=b - 1)], order[(n_pos + k).clamp(max=b - 1)]
        if alpha is None:
            alpha = torch.rand(b, 1, device=f.device, dtype=f.dtype)
        mix = (alpha * f[pos_k] + (1 - alpha) * f[neg_k]).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        penalty = (grad.float().norm(dim=1) - 1) ** 2
        return (penalty * valid).sum() / n.clamp(min=1)

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        f = self.backbone(x)
        fd = f.detach()
        yield Stage(-self._estimate(fd, y[:, 1]) + self.gp_weight * self._gradient_penalty(fd, y[:, 1]), (1,))
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0], self.masked)
        yield Stage(loss_a + self.lam * self._estimate(f, y[:, 1]), (0,), loss_a.detach())
