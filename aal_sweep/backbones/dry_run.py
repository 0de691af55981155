"""Does a backbone take images of the sweep's size? Asked of the model on the meta device: no weights are
allocated and no arithmetic is done, so a ViT-H answers in about a second, before Ray starts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def image_size_problem(
    make: Callable[[], nn.Module], label: str, image_size: tuple[int, int], native: tuple[int, int] | None
) -> str | None:
    """One line when a training batch of `image_size` images fails in the model's forward, else None.
    `native`: the input size its pretrained weights were trained at, named in the line."""
    try:
        with torch.device("meta"):
            net = make()
    except Exception:  # a builder that computes on tensors it creates (torchvision's regnets): not checkable
        return None
    x = torch.zeros(2, 3, *image_size, device="meta")  # two images: batch norm in train mode needs more than one
    try:
        net(x)
    except NotImplementedError:  # an operator without a meta kernel: says nothing about the image size
        return None
    except Exception as e:  # the model's own shape checks (ViT's patch grid), or a layer the image is too small for
        first = (str(e).splitlines() or [""])[0][:160]
        takes = f"; its pretrained weights take {native[0]}x{native[1]}" if native else ""
        return (
            f"model.backbone: {label} does not take dataset.image_size {list(image_size)} images "
            f"({type(e).__name__}: {first}){takes}; set dataset.image_size to a size it takes or pick another backbone"
        )
    return None
