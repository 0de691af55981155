"""Batches from the decoded uint8 arrays: gather, flip and normalise as tensors, on the GPU when there is one.

No JPEG is decoded here. On CUDA each training keeps its own GPU-resident copy of a split when the split
fits in `GPU_RESIDENT_FRACTION` of the GPU memory free at that moment (`resident="auto"`); batches are then
gathered on the device. Otherwise (or with `resident="never"`) each batch is gathered from the host memmap
straight into one of a few pinned buffers and copied asynchronously. The batch loop makes no host sync: the
epoch's order and flips go to the device once per epoch, and a pinned buffer is reused only once the copy
that last read it has completed (an event per buffer, not a stream sync).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from aal_sweep.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from aal_sweep.data.residency import keeps_resident

PINNED_BUFFERS = 3  # batches in flight between the host gather and the device


class SplitTensors:
    """One split's images [N, H, W, 3] uint8 and labels [N, k] as batches of float tensors normalised with the
    backbone's `mean` and `std` per channel (aal_sweep.backbones.normalisation; ImageNet's by default)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        device: torch.device,
        resident: str = "auto",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        self.device = device
        self.n = len(images)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
        self._host = images
        self._resident = None
        if device.type == "cuda" and self.n:
            free, _ = torch.cuda.mem_get_info(device)
            if keeps_resident(images.nbytes, free, resident):
                self._resident = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self._pinned: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []
        self._next_buffer = 0
        # (x / 255 - mean) / std  ==  x * scale - shift, two in-place ops per batch
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))
        self._scale, self._shift = 1 / (255 * std), mean / std

    @property
    def resident(self) -> bool:
        return self._resident is not None

    def _pinned_buffer(self, rows: int) -> tuple[int, torch.Tensor]:
        """(slot, a pinned host buffer of `rows` images that no in-flight copy still reads)."""
        if not self._pinned:
            empty = (0,) + self._host.shape[1:]
            self._pinned = [(torch.empty(empty, dtype=torch.uint8).pin_memory(), None) for _ in range(PINNED_BUFFERS)]
        i = self._next_buffer
        self._next_buffer = (i + 1) % PINNED_BUFFERS
        buf, done = self._pinned[i]
        if done is not None:
            done.synchronize()  # waits for that buffer's last copy only, queued PINNED_BUFFERS batches ago
        if len(buf) < rows:
            buf = torch.empty((rows,) + self._host.shape[1:], dtype=torch.uint8).pin_memory()
            self._pinned[i] = (buf, None)
        return i, buf[:rows]

    def _gather(self, idx_host: torch.Tensor, idx_device: torch.Tensor) -> torch.Tensor:
        if self._resident is not None:
            return self._resident[idx_device]
        if self.device.type != "cuda":
            return torch.from_numpy(self._host[idx_host.numpy()])  # idx is sorted: sequential memmap reads
        i, buf = self._pinned_buffer(len(idx_host))
        # memmap -> pinned in one copy (mode="clip": with the default "raise" numpy buffers `out`)
        np.take(self._host, idx_host.numpy(), axis=0, out=buf.numpy(), mode="clip")
        batch = buf.to(self.device, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self._pinned[i] = (self._pinned[i][0], copied)
        return batch

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float [B, 3, H, W], y float [B, k]); shuffled and randomly flipped when given a generator.

        Without a generator the batches are consecutive, in split order (evaluation)."""
        shuffled = generator is not None
        order = torch.randperm(self.n, generator=generator) if shuffled else torch.arange(self.n)
        flips = torch.rand(self.n, generator=generator) < 0.5 if augment else None
        if shuffled:  # each batch's indices sorted: the same batch, sequential memory reads
            order = torch.cat([c.sort().values for c in order.split(batch_size)]) if self.n else order
        # one host-to-device copy per epoch instead of one (synchronising) copy per batch
        order_device = order.to(self.device, non_blocking=False)
        flips_device = flips.to(self.device) if flips is not None else None
        for start in range(0, self.n, batch_size):
            sl = slice(start, start + batch_size)
            x = self._gather(order[sl], order_device[sl]).permute(0, 3, 1, 2)  # NHWC seen as NCHW: channels_last
            if self.device.type != "cuda":
                x = x.contiguous()
            x = x.float().mul_(self._scale).sub_(self._shift)
            if flips_device is not None:
                x = torch.where(flips_device[sl].view(-1, 1, 1, 1), x.flip(3), x)
            yield x, self.labels[order_device[sl]]
