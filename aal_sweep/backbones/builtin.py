"""The built-in backbones: resnet18 (torchvision's, with ImageNet weights from the local torch cache) and
small_cnn (fast enough to sweep on a laptop CPU). Both normalise with ImageNet's mean and std."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aal_sweep.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from aal_sweep.backbones.weights import NOT_FOUND_FIX, load_features, torch_hub_checkpoint
from aal_sweep.errors import AalError


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

    return torch_hub_checkpoint(ResNet18_Weights.IMAGENET1K_V1.url)


def _missing_weights(path: Path) -> str:
    return (
        f"ImageNet weights for resnet18 not found at {path} (copy {path.name} there, set TORCH_HOME, {NOT_FOUND_FIX})"
    )


def build(name: str, pretrained: str | None) -> tuple[nn.Module, int]:
    if name == "small_cnn":
        if pretrained is not None:
            raise AalError("model.pretrained: small_cnn has no pretrained weights (set it to null)")
        net = SmallCNN()
        return net, net.out_dim
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    width = net.fc.in_features
    net.fc = nn.Identity()
    if pretrained == "imagenet":
        path = _imagenet_weights_file()
        if not path.is_file():
            raise AalError(_missing_weights(path))
        pretrained = str(path)
    if pretrained is not None:
        load_features(net, pretrained, ("fc",), "resnet18")
    return net, width


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return IMAGENET_MEAN, IMAGENET_STD


def check(name: str, pretrained: str | None, image_size, weights: bool) -> list[str]:
    """Only resnet18's ImageNet file: both take any image of at least 8x8 (the config's minimum)."""
    if weights and name == "resnet18" and pretrained == "imagenet" and not _imagenet_weights_file().is_file():
        return [f"model.pretrained: {_missing_weights(_imagenet_weights_file())}"]
    return []
