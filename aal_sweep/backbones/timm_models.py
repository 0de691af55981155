"""timm/NAME: `timm.create_model(NAME, num_classes=0)`, its pooled features; NAME may carry a pretrained tag
(timm/resnet50.a1_in1k). Normalised with the mean and std of the model's pretrained config.

`pretrained: imagenet` reads the weights of the model's pretrained config from the local caches only: the
Hugging Face hub cache (model.safetensors or pytorch_model.bin of its hf_hub_id, where timm puts them) or
the torch hub cache (the file of its url). Nothing is downloaded: a missing file is one line naming it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from torch import nn

from aal_sweep.backbones.imagenet import IMAGENET_MEAN, IMAGENET_STD
from aal_sweep.backbones.weights import (
    NOT_FOUND_FIX,
    hf_cached_file,
    hf_hub_cache,
    load_features,
    torch_hub_checkpoint,
)
from aal_sweep.errors import AalError

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repo, in its order
LOADABLE = (".pth", ".pt", ".bin", ".safetensors")  # files a state_dict loads from (not timm's .npz ports)
INSTALL = "pip install 'aal_sweep[timm]'"


def _timm():
    try:
        import timm
    except ImportError:
        raise AalError(f"model.backbone: timm/ backbones need timm, which is not installed: {INSTALL}") from None
    return timm


def _unknown(name: str) -> str | None:
    """None when timm knows `name` (and its tag), else the line that says so and how to find valid names."""
    timm = _timm()
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(arch + ".*")]
        if not tag or tag in tags:
            return None
        return f"model.backbone: timm/{name}: timm has no pretrained tag {tag!r} for {arch} (valid: {', '.join(tags)})"
    close = difflib.get_close_matches(arch, timm.list_models(), n=3)
    hint = f"did you mean {', '.join('timm/' + c for c in close)}? " if close else ""
    return (
        f"model.backbone: timm/{name}: timm {timm.__version__} has no model {arch!r} ({hint}list them with "
        f"python -c \"import timm; print(timm.list_models('*{arch[:5]}*'))\")"
    )


def _pretrained_cfg(name: str):
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)


def _classifier(net: nn.Module) -> tuple[str, ...]:
    """The classifier's key prefixes in a full model's state_dict, from the pretrained config."""
    c = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (c,) if isinstance(c, str) else tuple(c)  # distilled models name two heads


def _cached_weights(name: str) -> tuple[Path | None, list[str]]:
    """(the local file of the pretrained config's weights or None, where it could be placed: one phrase each)."""
    cfg = _pretrained_cfg(name)
    places = []
    if cfg is not None and cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
        for f in files:
            found = hf_cached_file(cfg.hf_hub_id, f)
            if found is not None:
                return found, []
        places.append(
            f"{files[0]} of the Hugging Face repo {cfg.hf_hub_id} in the hub cache {hf_hub_cache()} (on a machine "
            f"with internet: hf download {cfg.hf_hub_id} {files[0]}, then copy its models--"
            f"{cfg.hf_hub_id.replace('/', '--')} folder there)"
        )
    if cfg is not None and cfg.url and cfg.url.endswith(LOADABLE):
        path = torch_hub_checkpoint(cfg.url)
        if path.is_file():
            return path, []
        places.append(f"{path.name} in {path.parent}")
    return None, places


def _missing(name: str, places: list[str]) -> str:
    if not places:
        return f"model.pretrained: timm/{name} has no pretrained weights in timm (set model.pretrained to null)"
    return (
        f"model.pretrained: ImageNet weights for timm/{name} are not in the local caches (nothing is downloaded): "
        f"place {' or '.join(places)}, {NOT_FOUND_FIX}"
    )


def build(name: str, pretrained: str | None) -> tuple[nn.Module, int]:
    timm = _timm()
    problem = _unknown(name)
    if problem:
        raise AalError(problem)
    if pretrained == "imagenet":
        path, places = _cached_weights(name)
        if path is None:
            raise AalError(_missing(name, places))
        pretrained = str(path)
    net = timm.create_model(name, pretrained=False, num_classes=0)
    # the width of what forward returns: a model with a pre-logits layer (mobilenetv3's conv_head) returns
    # head_hidden_size features, wider than num_features (checked on one model of each of timm's modules)
    width = getattr(net, "head_hidden_size", None) or net.num_features
    if pretrained is not None:
        load_features(net, pretrained, _classifier(net), f"timm/{name}")
    return net, width


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    _timm()
    cfg = _pretrained_cfg(name)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def check(name: str, pretrained: str | None, image_size, weights: bool) -> list[str]:
    try:
        timm = _timm()
    except AalError as e:  # reported with the config's other problems
        return [str(e)]
    problem = _unknown(name)
    if problem:
        return [problem]
    problems = []
    if weights and pretrained == "imagenet":
        path, places = _cached_weights(name)
        if path is None:
            problems.append(_missing(name, places))
    if image_size is not None:
        from aal_sweep.backbones.dry_run import image_size_problem

        cfg = _pretrained_cfg(name)
        native = tuple(cfg.input_size[1:]) if cfg is not None and cfg.input_size else None
        problem = image_size_problem(
            lambda: timm.create_model(name, pretrained=False, num_classes=0), f"timm/{name}", image_size, native
        )
        problems += [problem] if problem else []
    return problems
