"""Backbone weights from a file or the published hub: read them, fit them to a model.

Formats read: a plain state dict, PyTorchVideo's ``{"model_state": ...}``, torchvision's
reference-script ``{"model": ...}`` and this project's Lightning checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trainer.backbones import BackboneError

if TYPE_CHECKING:
    from torch import nn


def load_into(model: nn.Module, state_dict: dict, head: str, origin: str) -> None:
    """Load backbone weights; the head is kept when its shape matches the data's classes."""
    own = model.state_dict()
    head_prefix = head + "."
    filtered = {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith(head_prefix) and k in own and own[k].shape != v.shape)
    }
    missing, unexpected = model.load_state_dict(filtered, strict=False)
    missing = [k for k in missing if not k.startswith(head_prefix)]
    if missing or unexpected:
        raise BackboneError(
            f"{origin} does not fit this backbone: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    shapes = [k for k, v in filtered.items() if k in own and own[k].shape != v.shape]
    if shapes:
        raise BackboneError(f"{origin} has other shapes for {shapes[:3]}")


def read_weights_file(path: str | Path) -> dict:
    """A local weights file: a plain state dict, PyTorchVideo's ``{"model_state": ...}`` or a
    Lightning checkpoint of this project (``state_dict`` with ``model.`` prefixes)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise BackboneError(f"--weights {path}: no such file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise BackboneError(f"--weights {path}: not a PyTorch weights file ({e})") from None
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # torchvision reference scripts' checkpoints
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise BackboneError(f"--weights {path}: no state dict found in the file")
    return obj
