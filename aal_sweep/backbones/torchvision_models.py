"""torchvision/NAME: `torchvision.models.get_model(NAME)`, a classification model, with its classifier (the
last layer that outputs the 1000 ImageNet classes) replaced by nn.Identity: the features are that layer's
input, their width read from it. Normalised with the mean and std of the model's DEFAULT weights' transforms.

`pretrained: imagenet` is NAME's DEFAULT weights, read from the torch hub cache only ($TORCH_HOME/hub/
checkpoints/, where torchvision puts them); nothing is downloaded: a missing file is one line naming it.
"""

from __future__ import annotations

import difflib

from torch import nn

from aal_sweep.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from aal_sweep.backbones.weights import NOT_FOUND_FIX, load_features, torch_hub_checkpoint
from aal_sweep.errors import AalError

IMAGENET_CLASSES = 1000  # what every torchvision classifier outputs when built without weights
LIST = 'python -c "import torchvision; print(torchvision.models.list_models(torchvision.models))"'


def _models() -> list[str]:
    """The classification models (not detection, segmentation, video, optical flow or quantized ones)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _unknown(name: str) -> str | None:
    names = _models()
    if name in names:
        return None
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join('torchvision/' + c for c in close)}? " if close else ""
    return f"model.backbone: torchvision/{name} is not a torchvision classification model ({hint}list them with {LIST})"


def _default_weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def _weights_file(name: str):
    return torch_hub_checkpoint(_default_weights(name).url)


def _missing(name: str) -> str:
    w, path = _default_weights(name), _weights_file(name)
    return (
        f"model.pretrained: ImageNet weights for torchvision/{name} ({type(w).__name__}.{w.name}) not found at "
        f"{path} (copy {path.name} there, set TORCH_HOME, {NOT_FOUND_FIX})"
    )


def _make(name: str, weights=None) -> nn.Module:
    from torchvision.models import get_model

    net = get_model(name, weights=weights)
    if getattr(net, "aux_logits", False):  # googlenet, inception_v3: their auxiliary classifiers are not features
        net = get_model(name, weights=weights, aux_logits=False)
    return net


def _drop_classifier(net: nn.Module) -> tuple[str, int]:
    """Replace the last layer with IMAGENET_CLASSES outputs (Linear, or squeezenet's 1x1 Conv2d) by
    nn.Identity, in place; return (its name, its input width)."""
    found = None
    for qualified, m in net.named_modules():
        if (isinstance(m, nn.Linear) and m.out_features == IMAGENET_CLASSES) or (
            isinstance(m, nn.Conv2d) and m.out_channels == IMAGENET_CLASSES
        ):
            found = qualified, m
    if found is None:
        raise AalError(f"model.backbone: found no {IMAGENET_CLASSES}-class classifier layer in {type(net).__name__}")
    qualified, m = found
    parent, _, attr = qualified.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    return qualified, m.in_features if isinstance(m, nn.Linear) else m.in_channels


def build(name: str, pretrained: str | None) -> tuple[nn.Module, int]:
    problem = _unknown(name)
    if problem:
        raise AalError(problem)
    if pretrained == "imagenet":
        if not _weights_file(name).is_file():
            raise AalError(_missing(name))
        # the builder loads the file from the torch hub cache, where it is (no download), with the
        # construction settings those weights need (vit_h_14's SWAG weights: 518x518 images)
        net = _make(name, _default_weights(name))
        _, width = _drop_classifier(net)
        return net, width
    net = _make(name)
    classifier, width = _drop_classifier(net)
    if pretrained is not None:
        load_features(net, pretrained, (classifier,), f"torchvision/{name}")
    return net, width


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    t = _default_weights(name).transforms()
    mean, std = getattr(t, "mean", None), getattr(t, "std", None)
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check(name: str, pretrained: str | None, image_size, weights: bool) -> list[str]:
    problem = _unknown(name)
    if problem:
        return [problem]
    problems = [_missing(name)] if weights and pretrained == "imagenet" and not _weights_file(name).is_file() else []
    if image_size is not None:
        from aal_sweep.backbones.dry_run import image_size_problem

        def make() -> nn.Module:
            net = _make(name)
            _drop_classifier(net)
            return net

        crop = getattr(_default_weights(name).transforms(), "crop_size", None)  # [224]: the size it was trained at
        native = (crop[0], crop[-1]) if crop else None
        problem = image_size_problem(make, f"torchvision/{name}", image_size, native)
        problems += [problem] if problem else []
    return problems
