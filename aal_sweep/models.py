"""The gradient reversal layer. The backbones are built by name in aal_sweep/backbones/."""

from __future__ import annotations

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


class GradientReversal(nn.Module):
    """Identity forward; multiplies the gradient by -lambda backward (Ganin & Lempitsky 2015)."""

    def __init__(self, lam: float):
        super().__init__()
        self.lam = float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.lam)
