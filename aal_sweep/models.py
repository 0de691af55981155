"""Backbones (resnet18, small_cnn), linear heads and the gradient reversal layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aal_sweep.errors import AalError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks and a global average: fast enough to sweep on a laptop CPU."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 4 * width, 8 * width):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _imagenet_weights_file() -> Path:
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def build_backbone(name: str, pretrained: str | None = None) -> tuple[nn.Module, int]:
    """Return (feature extractor, feature width). `pretrained`: None | "imagenet" | a state_dict path.

    ImageNet weights come from the local torch cache only (nothing is downloaded at run time)."""
    if name == "small_cnn":
        if pretrained is not None:
            raise AalError("model.pretrained: small_cnn has no pretrained weights (set it to null)")
        net = SmallCNN()
        return net, net.out_dim
    if name != "resnet18":
        raise AalError(f"model.backbone: {name!r} is not one of resnet18, small_cnn")
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if pretrained == "imagenet":
        path = _imagenet_weights_file()
        if not path.is_file():
            raise AalError(
                f"ImageNet weights for resnet18 not found at {path} (copy resnet18-f37072fd.pth there, "
                f"set TORCH_HOME, or set model.pretrained to a state_dict path)"
            )
        pretrained = str(path)
    if pretrained is not None:
        try:
            state = torch.load(pretrained, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt file, a pickle of a whole model, ...
            raise AalError(
                f"model.pretrained: cannot load {pretrained!r} as a state_dict ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]})"
            ) from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError:  # shape mismatches
            missing, unexpected = ["(shapes differ)"], []
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise AalError(
                f"model.pretrained: {pretrained!r} is not a resnet18 state_dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width
