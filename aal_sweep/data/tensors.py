"""Batches from the decoded uint8 arrays: gather, flip and normalise as tensors, on the GPU when there is one.

No JPEG is decoded here. On CUDA a split that fits in a fraction of free GPU memory is copied there once and
gathered on the device; otherwise each batch is gathered from the memmap into pinned memory and copied
asynchronously.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from aal_sweep.models import IMAGENET_MEAN, IMAGENET_STD

GPU_RESIDENT_FRACTION = 0.4  # at most this share of free GPU memory holds a resident split


class SplitTensors:
    """One split's images [N, H, W, 3] uint8 and labels [N, k] as batches of normalised float tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device):
        self.device = device
        self.n = len(images)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
        self._host = images
        self._resident = None
        if device.type == "cuda" and self.n:
            free, _ = torch.cuda.mem_get_info(device)
            if images.nbytes < GPU_RESIDENT_FRACTION * free:
                self._resident = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        # (x / 255 - mean) / std  ==  x * scale - shift, two in-place ops per batch
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        self._scale, self._shift = 1 / (255 * std), mean / std

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        if self._resident is not None:
            return self._resident[idx.to(self.device)]
        batch = torch.from_numpy(self._host[idx.numpy()])  # idx is sorted: sequential memmap reads
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float [B, 3, H, W], y float [B, k]); shuffled and randomly flipped when given a generator."""
        order = torch.randperm(self.n, generator=generator) if generator is not None else torch.arange(self.n)
        for start in range(0, self.n, batch_size):
            idx = order[start:start + batch_size]
            if generator is not None:
                idx = idx.sort().values  # same batch, sequential memory reads
            x = self._gather(idx).permute(0, 3, 1, 2)  # NHWC storage viewed as NCHW: channels_last for free
            if self.device.type != "cuda":
                x = x.contiguous()
            x = x.float().mul_(self._scale).sub_(self._shift)
            if augment:
                flip = (torch.rand(len(idx), generator=generator) < 0.5).to(self.device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            yield x, self.labels[idx.to(self.device)]
