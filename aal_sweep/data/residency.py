"""Whether a training keeps a split of decoded images resident on its GPU: one rule, shared by the data
path (data/tensors.py) and the cost estimate (estimate.py), which must not import torch."""

from __future__ import annotations

# At most this share of the GPU memory free when a training starts holds one of its resident splits. 0.4
# leaves room for the model's working memory and for a second training on the same GPU to make its own
# copy (the train split of CelebA at 218x178 is 18.9 GB). Not yet chosen from a GPU measurement:
# benchmarks/gpu.py records, per run, which splits were resident and the images/s of both paths.
GPU_RESIDENT_FRACTION = 0.4
RESIDENT_CHOICES = ("auto", "always", "never")


def keeps_resident(nbytes: int, free_bytes: int, resident: str = "auto") -> bool:
    """auto: copy the split to the GPU when it fits in GPU_RESIDENT_FRACTION of the free memory."""
    if resident not in RESIDENT_CHOICES:
        raise ValueError(f"resident {resident!r} is not one of {', '.join(RESIDENT_CHOICES)}")
    return resident == "always" or (resident == "auto" and nbytes < GPU_RESIDENT_FRACTION * free_bytes)
