"""Weights from files only: the local caches (torch hub, Hugging Face hub) and state_dict files.

Every family loads the same way: the classifier is already nn.Identity, its keys are dropped from the file's
state_dict, and every other key must match (a file of another model is one clear line, not random weights).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from aal_sweep.errors import AalError

NOT_FOUND_FIX = "or set model.pretrained to a state_dict path"


def torch_hub_checkpoint(url: str) -> Path:
    """Where torch.hub keeps the file of `url` ($TORCH_HOME/hub/checkpoints/, read now, not at import)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rules, read from the environment now (its own
    constants are read once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home) / "hub"


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """The file of a Hugging Face model repo in the local hub cache (its `main` snapshot), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache())
    return Path(found) if isinstance(found, str) else None  # None or a "known missing" marker otherwise


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state_dict from a .safetensors file or a torch.save file (weights only, no pickled code)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a mapping of tensors")
    except Exception as e:  # a corrupt file, a pickle of a whole model, ...
        raise AalError(
            f"model.pretrained: cannot load {str(path)!r} as a state_dict ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:120]})"
        ) from None
    return state


def load_features(net: nn.Module, path: str | Path, classifier: tuple[str, ...], label: str) -> None:
    """Load the state_dict file `path` into `net` (whose classifier is gone): the keys under the
    `classifier` prefixes are dropped, every other key must match `net`'s, names and shapes."""
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not any(k.startswith(c + ".") for c in classifier)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError:  # shape mismatches
        missing, unexpected = ["(shapes differ)"], []
    if missing or unexpected:
        raise AalError(
            f"model.pretrained: {str(path)!r} is not a {label} state_dict "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
