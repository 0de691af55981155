"""The loss recipe of each kind of trial, kept apart from the loop (as timm's `task/` does).

The loop calls `task.train_step(x, y)` and `task(x)`; a task owns its modules and optimizers.
`y` holds the trial's attributes in order: primary first, then the partner (pair / adversarial).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aal_sweep.models import GradientReversal

KINDS = ("single", "pair", "multitask", "adversarial")


def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), y)


class Task(nn.Module):
    """A backbone, its heads, and how one batch updates them."""

    n_eval: int  # columns of `forward`: the heads whose accuracy is measured

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.optimizers: list[torch.optim.Optimizer] = []

    def make_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        self.optimizers = [torch.optim.Adam(g, lr=lr, weight_decay=weight_decay) for g in self.param_groups()]
        return self.optimizers

    def param_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]

    def _step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


class MultiHead(Task):
    """single (1 head), pair (2 heads, L_a + L_b) and multitask (k heads): one linear layer, k logits."""

    def __init__(self, backbone: nn.Module, width: int, n_heads: int):
        super().__init__(backbone)
        self.heads = nn.Linear(width, n_heads)
        self.n_eval = n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self(x).float()
        # Sum over heads of each head's mean BCE: L_a + L_b for a pair.
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(0).sum()
        self._step(loss, self.optimizers[0])
        return loss.detach()


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
    """Eq. 5-6: C_b minimises L_b; F and C_a minimise L_a - lambda * L_b, in one backward pass."""

    def __init__(self, backbone: nn.Module, width: int, lam: float):
        super().__init__(backbone, width, lam)
        self.reverse = GradientReversal(lam)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0])
        loss_b = bce(self.head_b(self.reverse(f))[:, 0], y[:, 1])
        self._step(loss_a + loss_b, self.optimizers[0])
        return loss_a.detach()


class GAN(Adversarial):
    """Eq. 4-5, alternating: F, C_a minimise L_a + lambda * L(C_b(f), 1 - y_b); then C_b fits y_b on detached f."""

    def param_groups(self) -> list[list[nn.Parameter]]:
        main = list(self.backbone.parameters()) + list(self.head_a.parameters())
        return [main, list(self.head_b.parameters())]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0])
        fooled = bce(self.head_b(f)[:, 0], 1 - y[:, 1])
        self._step(loss_a + self.lam * fooled, self.optimizers[0])  # C_b's grads from this are discarded below
        self._step(bce(self.head_b(f.detach())[:, 0], y[:, 1]), self.optimizers[1])
        return loss_a.detach()


class WGAN(Adversarial):
    """WDGRL reading: a critic D on the features estimates W = E[D(f) | y_b=1] - E[D(f) | y_b=0]; D maximises
    W minus a gradient penalty; F and C_a minimise L_a + lambda * W."""

    def __init__(self, backbone: nn.Module, width: int, lam: float, hidden: int = 256, gp_weight: float = 10.0):
        super().__init__(backbone, width, lam)
        del self.head_b  # the critic replaces the auxiliary classifier
        self.critic = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.gp_weight = gp_weight

    def param_groups(self) -> list[list[nn.Parameter]]:
        main = list(self.backbone.parameters()) + list(self.head_a.parameters())
        return [main, list(self.critic.parameters())]

    def _estimate(self, f: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pos = yb > 0.5
        d = self.critic(f)[:, 0].float()
        # masked means, no host sync: a batch with one class only gives 0
        n_pos, n_neg = pos.sum(), (~pos).sum()
        w = (d * pos).sum() / n_pos.clamp(min=1) - (d * ~pos).sum() / n_neg.clamp(min=1)
        return w * ((n_pos > 0) & (n_neg > 0))

    def _gradient_penalty(self, f: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pos, neg = f[yb > 0.5], f[yb <= 0.5]
        n = min(len(pos), len(neg))
        if n == 0:
            return f.new_zeros(())
        alpha = torch.rand(n, 1, device=f.device, dtype=f.dtype)
        mix = (alpha * pos[:n] + (1 - alpha) * neg[:n]).requires_grad_(True)
        grad, = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        return ((grad.float().norm(dim=1) - 1) ** 2).mean()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        fd = f.detach()
        critic_loss = -self._estimate(fd, y[:, 1]) + self.gp_weight * self._gradient_penalty(fd, y[:, 1])
        self._step(critic_loss, self.optimizers[1])
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0])
        self._step(loss_a + self.lam * self._estimate(f, y[:, 1]), self.optimizers[0])
        return loss_a.detach()


def make_task(kind: str, backbone: nn.Module, width: int, n_attributes: int, method: str | None = None,
              lam: float | None = None, critic_hidden: int = 256, gp_weight: float = 10.0) -> Task:
    if kind in ("single", "pair", "multitask"):
        return MultiHead(backbone, width, n_attributes)
    if kind != "adversarial":
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if n_attributes != 2 or lam is None:
        raise ValueError("an adversarial trial needs two attributes (primary, partner) and a lambda")
    if method == "grl":
        return GRL(backbone, width, lam)
    if method == "gan":
        return GAN(backbone, width, lam)
    if method == "wgan":
        return WGAN(backbone, width, lam, critic_hidden, gp_weight)
    raise ValueError(f"adversarial method {method!r} is not one of grl, gan, wgan")
