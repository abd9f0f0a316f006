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


def read_weights_file(path: str | Path, backbone: str | None = None) -> dict:
    """A local weights file: a plain state dict, PyTorchVideo's ``{"model_state": ...}``,
    torchvision's reference checkpoint, or a Lightning checkpoint: this project's own
    ``best.ckpt``/``last.ckpt`` (its ``backbone.`` weights; another backbone's checkpoint is
    an error naming it) or another module's (``model.`` prefixes dropped)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise BackboneError(f"--weights {path}: no such file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BackboneError(f"--weights {path}: not a PyTorch weights file ({why})") from None
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hp = obj.get("hyper_parameters") if isinstance(obj.get("hyper_parameters"), dict) else {}
        trained = hp.get("backbone")
        if backbone is not None and trained is not None and trained != backbone:
            raise BackboneError(
                f"--weights {path}: a checkpoint of backbone {trained}, not {backbone}; "
                f"pass --backbone {trained}"
            )
        state = obj["state_dict"]
        if any(k.startswith("backbone.") for k in state):  # a trainer.VideoClassifier's
            obj = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        else:
            obj = {k.removeprefix("model."): v for k, v in state.items()}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # torchvision reference scripts' checkpoints
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise BackboneError(f"--weights {path}: no state dict found in the file")
    return obj
