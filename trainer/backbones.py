"""Backbone registry: name -> builder, the input it was published with, and what it can take.

Each entry records the clip geometry from the published model zoo tables (PyTorchVideo's
``MODEL_ZOO.md`` and hub code, torchvision's weights ``meta``/``transforms``), the published
parameter count with its 400-class Kinetics head, and where its pretrained weights come from.
``resolve_input`` applies user overrides and rejects those a backbone cannot take before any
training starts; ``build_backbone`` builds it for the data's classes and the chosen input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer import backbone_builders as builders
from trainer.video_input import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    VideoInput,
)

if TYPE_CHECKING:
    from torch import nn

# torchvision's video weights were trained on 15 fps clips of consecutive frames, normalised
# with these statistics (torchvision.models.video.R3D_18_Weights.transforms()).
TV_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
TV_KINETICS_STD = (0.22803, 0.22145, 0.216989)


class BackboneError(ValueError):
    """An unknown backbone, an input it cannot take, or weights that cannot be loaded."""


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    ``build(num_classes, video_input)`` returns the network with a ``num_classes`` head and no
    softmax, sized for ``video_input``. ``head`` is the dotted path of the final classifier
    layer (replaced for the data's classes, trained alone under the ``freeze`` strategy).
    ``fetch_pretrained()`` returns the published Kinetics-400 state dict.
    """

    name: str
    source: str  # "pytorchvideo" | "torchvision" | "demo"
    default_input: VideoInput
    published_params: int | None
    weights: str  # where pretrained weights come from (URL or torchvision enum)
    head: str
    build: Callable[[int, VideoInput], nn.Module]
    fetch_pretrained: Callable[[], dict] | None = None
    min_frames: int = 1
    frames_multiple: int = 1
    min_crop: int = 32
    fixed_frames: bool = False  # positional embeddings fix the clip length
    fixed_crop: bool = False  # ... and the crop size


PTV_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


def _vi(frames: int, rate: int, crop: int, short: int, **kw: Any) -> VideoInput:
    return VideoInput(num_frames=frames, sampling_rate=rate, crop_size=crop, short_side=short, **kw)


def _tv_entry(
    name: str, enum: str, fn: str, vi: VideoInput, params: int, head: str, **kw: Any
) -> Backbone:
    return Backbone(
        name=name,
        source="torchvision",
        default_input=vi,
        published_params=params,
        weights=f"torchvision.models.video.{enum}.DEFAULT",
        head=head,
        build=builders.tv(fn),
        fetch_pretrained=builders.tv_fetch(enum),
        **kw,
    )


def _ptv_entry(
    name: str, module: str, url_file: str, vi: VideoInput, params: int, build, **kw: Any
) -> Backbone:
    head = kw.pop("head", "blocks.5.proj")
    return Backbone(
        name=name,
        source="pytorchvideo",
        default_input=vi,
        published_params=params,
        weights=f"{PTV_ZOO}/{url_file}",
        head=head,
        build=build,
        fetch_pretrained=builders.ptv_fetch(module, name),
        **kw,
    )


# PyTorchVideo model zoo (Kinetics-400, 30 fps): frames x sampling rate, train crop and short
# side from the SlowFast configs the weights were trained with; params in the zoo table.
_TV_VI = {"mean": TV_KINETICS_MEAN, "std": TV_KINETICS_STD, "fps": 15.0}
REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in [
        _ptv_entry(
            "x3d_xs", "x3d", "X3D_XS.pyth", _vi(4, 12, 160, 182), 3_790_000, builders.x3d(2.2)
        ),
        _ptv_entry(
            "x3d_s", "x3d", "X3D_S.pyth", _vi(13, 6, 160, 182), 3_790_000, builders.x3d(2.2)
        ),
        _ptv_entry(
            "x3d_m", "x3d", "X3D_M.pyth", _vi(16, 5, 224, 256), 3_790_000, builders.x3d(2.2)
        ),
        _ptv_entry(
            "x3d_l", "x3d", "X3D_L.pyth", _vi(16, 5, 312, 356), 6_150_000, builders.x3d(5.0)
        ),
        _ptv_entry(
            "slow_r50",
            "resnet",
            "SLOW_8x8_R50.pyth",
            _vi(8, 8, 224, 256),
            32_450_000,
            builders.slow_r50,
        ),
        _ptv_entry(
            "slowfast_r50",
            "slowfast",
            "SLOWFAST_8x8_R50.pyth",
            _vi(32, 2, 224, 256, slowfast_alpha=4),
            34_570_000,
            builders.slowfast_r50,
            frames_multiple=4,
            min_frames=4,
            head="blocks.6.proj",
        ),
        _ptv_entry(
            "r2plus1d_r50",
            "r2plus1d",
            "R2PLUS1D_16x4_R50.pyth",
            _vi(16, 4, 224, 256),
            28_110_000,
            builders.r2plus1d_r50,
        ),
        _ptv_entry(
            "mvit_base_16x4",
            "vision_transformers",
            "MVIT_B_16x4.pyth",
            _vi(16, 4, 224, 256),
            36_610_000,
            builders.mvit_base_16x4,
            head="head.proj",
            fixed_frames=True,
            fixed_crop=True,
        ),
        # torchvision: 16 consecutive frames of 15 fps video, resized to 128x171, cropped to 112.
        _tv_entry(
            "r3d_18", "R3D_18_Weights", "r3d_18", _vi(16, 1, 112, 128, **_TV_VI), 33_371_472, "fc"
        ),
        _tv_entry(
            "r2plus1d_18",
            "R2Plus1D_18_Weights",
            "r2plus1d_18",
            _vi(16, 1, 112, 128, **_TV_VI),
            31_505_325,
            "fc",
        ),
        # S3D's final AvgPool3d(2, 7, 7) needs at least 14 frames and a 224 crop (meta min_size).
        _tv_entry(
            "s3d",
            "S3D_Weights",
            "s3d",
            _vi(64, 1, 224, 256, **_TV_VI),
            8_320_048,
            "classifier.1",
            min_frames=14,
            min_crop=224,
        ),
        # MViT v2 was ported at 16 frames of 7.5 fps video (= 16x4 at 30 fps), 224 crop.
        _tv_entry(
            "mvit_v2_s",
            "MViT_V2_S_Weights",
            "mvit_v2_s",
            _vi(16, 4, 224, 256, mean=KINETICS_MEAN, std=KINETICS_STD),
            34_537_744,
            "head.1",
            fixed_frames=True,
            fixed_crop=True,
        ),
        # Video Swin-T: 32 frames of 15 fps video (32x2 at 30 fps), ImageNet statistics.
        _tv_entry(
            "swin3d_t",
            "Swin3D_T_Weights",
            "swin3d_t",
            _vi(32, 2, 224, 256, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            28_158_070,
            "head",
        ),
        # Not a published model: a few-thousand-parameter 3D CNN so the demo, the README and the
        # CPU smoke tests train to high accuracy on synthetic motion videos in seconds.
        Backbone(
            name="demo_cnn",
            source="demo",
            default_input=_vi(8, 4, 48, 48),
            published_params=None,
            weights="none (CPU smoke-test backbone, no pretrained weights)",
            head="fc",
            build=builders.demo_cnn,
            min_frames=2,
            min_crop=16,
        ),
    ]
}


def get_backbone(name: str) -> Backbone:
    """The registry entry for ``name``; an unknown name lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of: {', '.join(sorted(REGISTRY))}"
        ) from None


def resolve_input(
    name: str,
    *,
    num_frames: int | None = None,
    sampling_rate: int | None = None,
    crop_size: int | None = None,
    short_side: int | None = None,
    frame_rate: float | None = None,
) -> VideoInput:
    """The backbone's published input with the given overrides, or a BackboneError.
    ``frame_rate`` is the rate ``sampling_rate`` counts frames in (``VideoInput.fps``).

    When only ``crop_size`` is overridden the short side keeps its published ratio to the crop
    (182/160 for X3D-XS), so the crop still sees the same share of the frame.
    """
    b = get_backbone(name)
    d = b.default_input
    for flag, value in (
        ("num_frames", num_frames),
        ("sampling_rate", sampling_rate),
        ("crop_size", crop_size),
        ("short_side", short_side),
    ):
        if value is not None and value < 1:
            raise BackboneError(f"--{flag} {value}: must be a positive integer")
    if num_frames is not None:
        _check_size(name, "num_frames", num_frames, b.fixed_frames, d.num_frames, b.min_frames)
        if num_frames % b.frames_multiple:
            raise BackboneError(
                f"--num_frames {num_frames}: {name} needs a multiple of {b.frames_multiple} "
                f"(its slow pathway takes every {b.frames_multiple}th frame)"
            )
    if crop_size is not None:
        _check_size(name, "crop_size", crop_size, b.fixed_crop, d.crop_size, b.min_crop)
        if short_side is None:
            short_side = round(crop_size * d.short_side / d.crop_size)
    if frame_rate is not None and not frame_rate > 0:
        raise BackboneError(f"--frame_rate {frame_rate}: must be > 0")
    vi = d.with_overrides(
        num_frames=num_frames,
        sampling_rate=sampling_rate,
        crop_size=crop_size,
        short_side=short_side,
        fps=frame_rate,
    )
    if vi.short_side < vi.crop_size:
        raise BackboneError(
            f"--short_side {vi.short_side}: must be >= crop_size {vi.crop_size} "
            "(frames are resized to short_side, then cropped)"
        )
    return vi


def _check_size(name: str, flag: str, value: int, fixed: bool, default: int, least: int) -> None:
    """An overridden clip length or crop: exactly ``default`` when the backbone's positional
    embeddings fix it, else at least ``least``."""
    if fixed and value != default:
        unit = " frames" if flag == "num_frames" else ""
        raise BackboneError(
            f"--{flag} {value}: {name} takes exactly {default}{unit} "
            "(its positional embeddings are sized for it)"
        )
    if value < least:
        raise BackboneError(f"--{flag} {value}: {name} needs >= {least}")


def check_input(name: str, video_input: VideoInput) -> None:
    """Raise BackboneError if ``video_input`` is not one ``name`` can take."""
    resolve_input(
        name,
        num_frames=video_input.num_frames,
        sampling_rate=video_input.sampling_rate,
        crop_size=video_input.crop_size,
        short_side=video_input.short_side,
    )


def build_backbone(
    name: str,
    num_classes: int,
    *,
    video_input: VideoInput | None = None,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build ``name`` with a ``num_classes`` head (logits, no softmax) for ``video_input``.

    ``pretrained`` loads the published Kinetics-400 weights (downloaded once into the torch hub
    cache, ``$TORCH_HOME/hub/checkpoints``); ``weights`` loads a local file in the same format.
    Either way the 400-class head is replaced when the data has another number of classes.
    """
    b = get_backbone(name)
    vi = video_input or b.default_input
    check_input(name, vi)
    if num_classes < 1:
        raise BackboneError(f"num_classes {num_classes}: need at least one class")
    model = b.build(num_classes, vi)
    from trainer.weights import load_into, read_weights_file

    if weights is not None:
        state = read_weights_file(weights, backbone=name)
        load_into(model, state, b.head, f"--weights {weights}")
    elif pretrained:
        if b.fetch_pretrained is None:
            raise BackboneError(f"{name} has no pretrained weights; drop --pretrained")
        try:
            state = b.fetch_pretrained()
        except Exception as e:  # URLError, HTTPError, socket errors, corrupt downloads
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BackboneError(
                f"could not fetch pretrained {name} weights from {b.weights} ({why}); "
                "download the file elsewhere and pass --weights PATH"
            ) from None
        load_into(model, state, b.head, f"pretrained {name} weights")
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
