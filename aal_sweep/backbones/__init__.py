"""Backbones by name: a feature extractor, its feature width and its input normalisation.

    net, width = build_backbone("timm/convnext_tiny", "imagenet")   # net(x) -> [B, width]
    mean, std = normalisation("timm/convnext_tiny")                 # what the batches are normalised with
    check_backbone("timm/convnext_tiny", "imagenet", (224, 224))    # [] or one line per problem

A name is a built-in backbone (resnet18, small_cnn: builtin.py) or FAMILY/NAME, FAMILY one of FAMILIES:
timm/NAME is `timm.create_model(NAME, num_classes=0)` (timm_models.py), torchvision/NAME is
`torchvision.models.get_model(NAME)` with its classifier replaced by nn.Identity (torchvision_models.py).
A family module provides `build`, `normalisation` and `check` with these signatures; this module picks the
one of a name, so the training loop, the config and the benchmark work for every family without knowing any.
Pretrained weights ("imagenet") come from the local caches only: nothing is downloaded at run time.

No heavy import at module level: the config imports this module (torch, timm and torchvision are imported
by the family modules, when a backbone is built or checked).
"""

from __future__ import annotations

import difflib

from aal_sweep.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_backbone", "check_backbone", "name_problem", "normalisation"]

BUILTIN = ("resnet18", "small_cnn")
FAMILIES = ("timm", "torchvision")


def name_problem(name: str) -> str | None:
    """What is wrong with the form of `name` (not whether the family knows it), or None. No import."""
    family, slash, model = name.partition("/")
    if name in BUILTIN or (slash and family in FAMILIES and model):
        return None
    valid = f"{', '.join(BUILTIN)}, " + ", ".join(f"{f}/NAME" for f in FAMILIES)
    if slash and family in FAMILIES:
        return f"model.backbone: {name!r} names no model after {family}/ (valid: {valid})"
    close = difflib.get_close_matches(name, BUILTIN, n=1)
    hint = f"did you mean {close[0]}?" if close else f"e.g. timm/{model or family} or torchvision/{model or family}"
    return f"model.backbone: {name!r} is not one of {valid} ({hint})"


def _family(name: str):
    """The module that builds `name` (its form already checked by name_problem)."""
    family = name.partition("/")[0] if "/" in name else "builtin"
    # imported here, by module path: each family module imports torch (and its own library) when it works
    if family == "timm":
        import aal_sweep.backbones.timm_models as module
    elif family == "torchvision":
        import aal_sweep.backbones.torchvision_models as module
    else:
        import aal_sweep.backbones.builtin as module
    return module


def _model(name: str) -> str:
    return name.partition("/")[2] if "/" in name else name


def build_backbone(name: str, pretrained: str | None = None):
    """(feature extractor, feature width): `pretrained` None (random init, from the caller's torch seed),
    "imagenet" (the model's own pretrained weights, from the local caches only) or a state_dict file."""
    problem = name_problem(name)
    if problem:
        from aal_sweep.errors import AalError

        raise AalError(problem)
    return _family(name).build(_model(name), pretrained)


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, on [0, 1] pixels: the model's own (timm's pretrained config,
    torchvision's weights' transforms), ImageNet's for the built-in backbones."""
    return _family(name).normalisation(_model(name))


def check_backbone(
    name: str, pretrained: str | None, image_size: tuple[int, int] | None = None, weights: bool = True
) -> list[str]:
    """Problems a run would meet building `name`, one line each, without building it for real: the family's
    library missing, a name it does not know, `weights` (pretrained "imagenet"): the weights file not in the
    local cache, and a model that does not take images of `image_size` (a forward on the meta device)."""
    problem = name_problem(name)
    if problem:
        return [problem]
    if name in BUILTIN and not (weights and pretrained == "imagenet"):
        return []  # nothing to check, and torch stays unimported (plan, config, a finished run)
    return _family(name).check(_model(name), pretrained, image_size, weights)
