"""Builders behind the backbone registry: each makes a network with a ``num_classes`` head and
no softmax, sized for the chosen ``VideoInput``; the fetchers return published state dicts.

PyTorchVideo's hub functions pin the input size that sizes their head pools, so the builders
call the model factories those functions wrap, with the same settings and the chosen input.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainer.video_input import VideoInput

if TYPE_CHECKING:  # torch loads when a backbone is built, not when the registry is read
    from torch import nn


def _ceil32(crop: int) -> int:
    # Five stride-2 stages with 'same' padding: each halves the size rounding up.
    return math.ceil(crop / 32)


def _ptv_hub(fn_name: str, module: str) -> Callable[..., nn.Module]:
    def call(**kwargs: Any) -> nn.Module:
        hub = importlib.import_module(f"pytorchvideo.models.hub.{module}")
        return getattr(hub, fn_name)(pretrained=False, **kwargs)

    return call


def ptv_fetch(module: str, key: str) -> Callable[[], dict]:
    """Fetch a PyTorchVideo checkpoint from its published URL (the hub module's table)."""

    def fetch() -> dict:
        from torch.hub import load_state_dict_from_url

        url = importlib.import_module(f"pytorchvideo.models.hub.{module}").checkpoint_paths[key]
        checkpoint = load_state_dict_from_url(url, progress=True, map_location="cpu")
        return checkpoint["model_state"]

    return fetch


def x3d(depth_factor: float) -> Callable[[int, VideoInput], nn.Module]:
    def build(num_classes: int, vi: VideoInput) -> nn.Module:
        from pytorchvideo.models.x3d import create_x3d

        # The hub's x3d_* functions pin the clip size, which sizes the head's pool kernel;
        # call the builder they wrap with their settings and the chosen clip instead.
        return create_x3d(
            model_num_class=num_classes,
            head_activation=None,
            depth_factor=depth_factor,
            input_clip_length=vi.num_frames,
            input_crop_size=vi.crop_size,
        )

    return build


def slow_r50(num_classes: int, vi: VideoInput) -> nn.Module:
    s = _ceil32(vi.crop_size)
    from pytorchvideo.models.resnet import create_resnet

    # As pytorchvideo.models.hub.slow_r50, with the head pool sized for the chosen clip.
    return create_resnet(
        model_depth=50,
        stem_conv_kernel_size=(1, 7, 7),
        model_num_class=num_classes,
        head_activation=None,
        head_pool_kernel_size=(vi.num_frames, s, s),
    )


def slowfast_r50(num_classes: int, vi: VideoInput) -> nn.Module:
    s, alpha = _ceil32(vi.crop_size), vi.slowfast_alpha or 4
    return _ptv_hub("slowfast_r50", "slowfast")(
        model_num_class=num_classes,
        head_activation=None,
        slowfast_fusion_conv_stride=(alpha, 1, 1),
        head_pool_kernel_sizes=((vi.num_frames // alpha, s, s), (vi.num_frames, s, s)),
    )


def r2plus1d_r50(num_classes: int, vi: VideoInput) -> nn.Module:
    s = _ceil32(vi.crop_size)
    # Temporal strides (1, 1, 2, 2): the clip is shortened 4x, rounding up.
    t = math.ceil(math.ceil(vi.num_frames / 2) / 2)
    return _ptv_hub("r2plus1d_r50", "r2plus1d")(
        model_num_class=num_classes, head_activation=None, head_pool_kernel_size=(t, s, s)
    )


def mvit_base_16x4(num_classes: int, vi: VideoInput) -> nn.Module:
    return _ptv_hub("mvit_base_16x4", "vision_transformers")(
        head_num_classes=num_classes,
        spatial_size=vi.crop_size,
        temporal_size=vi.num_frames,
    )


def tv(fn_name: str) -> Callable[[int, VideoInput], nn.Module]:
    def build(num_classes: int, vi: VideoInput) -> nn.Module:
        from torchvision.models import video

        return getattr(video, fn_name)(weights=None, num_classes=num_classes)

    return build


def tv_fetch(enum_name: str) -> Callable[[], dict]:
    def fetch() -> dict:
        from torchvision.models import video

        return getattr(video, enum_name).DEFAULT.get_state_dict(progress=True)

    return fetch


def demo_cnn(num_classes: int, vi: VideoInput) -> nn.Module:
    from trainer.demo_backbone import TinyVideoNet

    return TinyVideoNet(num_classes)
