"""make_task: the Task (loss recipe) of each kind of trial, from train/tasks.py and train/variants.py."""

from __future__ import annotations

from torch import nn

from aal_sweep.config import AdversarialConfig
from aal_sweep.kinds import VARIANTS
from aal_sweep.train.tasks import GAN, GRL, KINDS, WGAN, MultiHead, Task
from aal_sweep.train.variants import make_variant_task


def make_task(
    kind: str,
    backbone: nn.Module,
    width: int,
    n_attributes: int,
    method: str | None = None,
    lam: float | None = None,
    critic_hidden: int = AdversarialConfig.critic_hidden,
    gp_weight: float = AdversarialConfig.gp_weight,
    init_weights: str | None = None,
) -> Task:
    """The task of `kind` on `backbone` (feature width `width`). `init_weights`: a .pt state_dict file some
    kinds start from (adversarial_shared: the multitask_all model)."""
    if kind in ("single", "pair", "multitask"):
        return MultiHead(backbone, width, n_attributes)
    if kind in VARIANTS:
        return make_variant_task(kind, backbone, width, n_attributes, lam, init_weights)
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
