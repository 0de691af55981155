"""The loss recipes of Table 1's other variants (tasks in the sense of train/tasks.py).

- `MultipleAdversarial` (eq. 10-11, Appendix A.2): one primary head C_a and one auxiliary head per partner
  b_1..b_B on a shared backbone F. C_b's minimise (1/B) sum_j L_bj; F and C_a minimise
  L_a - lambda (1/B) sum_j L_bj. Group a is the one primary attribute, so its average is L_a itself.
- `SharedAdversarial` (Sec. 4.2.1, "sharing representations"): the convolutional layers of the
  multitask_all model, frozen; two added hidden layers give the representation of both heads; only those
  layers and the heads are trained, adversarially (gradient reversal) against the partner.

Both use gradient reversal (one backward pass), as the paper's default training does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL
from aal_sweep.models import GradientReversal
from aal_sweep.train.tasks import MultiHead, Stage, Task, bce, head_losses

BACKBONE_PREFIX = "backbone."  # the multitask_all model's state_dict keys that hold its backbone


class MultipleAdversarial(Task):
    """y: [primary, partner_1, ..., partner_B]. Only C_a is evaluated."""

    n_eval = 1

    def __init__(self, backbone: nn.Module, width: int, n_partners: int, lam: float):
        super().__init__(backbone)
        if n_partners < 1:
            raise ValueError("an adversarial_multiple trial needs at least one partner")
        self.head_a = nn.Linear(width, 1)
        self.heads_b = nn.Linear(width, n_partners)  # one linear classifier (one output) per partner
        self.reverse = GradientReversal(lam)
        self.lam = float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_a(self.backbone(x))

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        f = self.backbone(x)
        loss_a = bce(self.head_a(f)[:, 0], y[:, 0], self.masked)
        # the mean over partners of each partner's mean BCE: eq. 11's (1/B) sum_j L_bj; through the reversal
        # F receives -lambda times its gradient (eq. 10)
        logits_b = self.heads_b(self.reverse(f)).float()
        loss_b = head_losses(logits_b, y[:, 1:], self.masked).mean()
        yield Stage(loss_a + loss_b, (0,), loss_a.detach())


class SharedAdversarial(Task):
    """Frozen backbone -> two hidden layers -> C_a, and C_b behind a gradient reversal. Only C_a is evaluated.

    The backbone stays in eval mode (its batch-norm statistics are part of what is frozen) and outside the
    optimizer: `param_groups` holds the hidden layers and the heads only."""

    n_eval = 1

    def __init__(self, backbone: nn.Module, width: int, lam: float, hidden: int | None = None):
        super().__init__(backbone)
        hidden = hidden or width  # the paper gives no size: the backbone's own width
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.hidden = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head_a = nn.Linear(hidden, 1)
        self.head_b = nn.Linear(hidden, 1)
        self.reverse = GradientReversal(lam)
        self.lam = float(lam)
        self.backbone.eval()

    def train(self, mode: bool = True) -> SharedAdversarial:
        super().train(mode)
        self.backbone.eval()
        return self

    def param_groups(self) -> list[list[nn.Parameter]]:
        return [[p for name, p in self.named_parameters() if not name.startswith(BACKBONE_PREFIX)]]

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Take the backbone of a multitask_all model's state_dict (the keys under `backbone.`)."""
        own = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
        if not own:
            raise ValueError("the multitask_all weights hold no backbone.* keys")
        self.backbone.load_state_dict(own)  # strict: another backbone's weights fail here, naming the keys

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # frozen: no activations kept for a backward through the conv layers
            f = self.backbone(x)
        return self.hidden(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_a(self.representation(x))

    def stages(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[Stage]:
        h = self.representation(x)
        loss_a = bce(self.head_a(h)[:, 0], y[:, 0], self.masked)
        loss_b = bce(self.head_b(self.reverse(h))[:, 0], y[:, 1], self.masked)
        yield Stage(loss_a + loss_b, (0,), loss_a.detach())


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A model's state_dict as the bytes of a .pt file (plain tensors; `load_weights` reads it back)."""
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A state_dict written by `weights_bytes` (plain tensors, loaded without unpickling code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def make_variant_task(
    kind: str, backbone: nn.Module, width: int, n_attributes: int, lam: float | None, init_weights: str | None = None
) -> Task:
    if kind == MULTITASK_ALL:
        return MultiHead(backbone, width, n_attributes)
    if lam is None:
        raise ValueError(f"an {kind} trial needs a lambda")
    if kind == ADVERSARIAL_MULTIPLE:
        return MultipleAdversarial(backbone, width, n_attributes - 1, lam)
    if kind == ADVERSARIAL_SHARED:
        if n_attributes != 2:
            raise ValueError("an adversarial_shared trial takes two attributes (primary, partner)")
        if init_weights is None:
            raise ValueError("an adversarial_shared trial needs the multitask_all model's weights (init_weights)")
        task = SharedAdversarial(backbone, width, lam)
        task.load_backbone(load_weights(init_weights))
        return task
    raise ValueError(f"kind {kind!r} is not one of {MULTITASK_ALL}, {ADVERSARIAL_MULTIPLE}, {ADVERSARIAL_SHARED}")
