"""Transform presets: shapes, normalisation, crop-then-resize equals resize-then-crop, flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.transforms import (
    EvalTransform,
    TrainTransform,
    crop_resize,
    eval_transform,
    train_transform,
)
from trainer.video_input import VideoInput

VI = VideoInput(num_frames=4, sampling_rate=2, crop_size=56, short_side=64)


def smooth_clip(t=4, h=48, w=80) -> torch.Tensor:
    """A smooth gradient clip (uint8 T,H,W,3) so interpolation differences stay small."""
    y = torch.linspace(0, 1, h).view(1, h, 1, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w, 1)
    c = torch.tensor([1.0, 0.5, 0.25]).view(1, 1, 1, 3)
    tt = torch.arange(t).view(t, 1, 1, 1) / t
    return ((0.6 * y + 0.3 * x + 0.1 * tt) * c * 255).round().to(torch.uint8).expand(t, h, w, 3)


def test_train_output_shape_dtype_and_normalisation():
    out = train_transform(VI)(smooth_clip())
    assert out.shape == (3, 4, 56, 56) and out.dtype == torch.float32 and out.is_contiguous()
    white = torch.full((4, 48, 80, 3), 255, dtype=torch.uint8)
    norm = eval_transform(VI)(white)
    assert torch.allclose(norm, torch.full_like(norm, (1 - 0.45) / 0.225), atol=1e-5)


def test_eval_equals_resize_short_side_then_center_crop():
    clip = smooth_clip()
    ours = EvalTransform(crop_size=56, short_side=64, mean=(0, 0, 0), std=(1, 1, 1))(clip)
    x = clip.permute(3, 0, 1, 2).float() / 255  # C,T,H,W
    ref = F.interpolate(x, size=(64, round(80 * 64 / 48)), mode="bilinear", antialias=True)
    top, left = (64 - 56) // 2, (ref.shape[-1] - 56) // 2
    ref = ref[..., top : top + 56, left : left + 56]
    assert (ours - ref).abs().mean() < 0.01


def test_train_scale_jitter_and_crop_position_are_random():
    torch.manual_seed(0)
    t = TrainTransform(crop_size=56, short_side=64, hflip=False)
    assert t.max_short_side == 80
    outs = {tuple(t(smooth_clip()).flatten()[:50].tolist()) for _ in range(8)}
    assert len(outs) > 1  # random scale/position


def test_hflip_can_be_turned_off():
    clip = smooth_clip()
    torch.manual_seed(0)
    flips = TrainTransform(crop_size=48, short_side=48, hflip=True)
    no_flip = TrainTransform(crop_size=48, short_side=48, max_short_side=48, hflip=False)
    # Left-to-right the gradient increases; flipped crops decrease.
    slopes = {
        bool((flips(clip)[0, 0, :, -1] - flips(clip)[0, 0, :, 0]).mean() > 0) for _ in range(16)
    }
    assert slopes == {True, False}
    assert all(
        (no_flip(clip)[0, 0, :, -1] - no_flip(clip)[0, 0, :, 0]).mean() > 0 for _ in range(16)
    )


def test_slowfast_pathways():
    vi = VideoInput(num_frames=8, sampling_rate=2, crop_size=32, short_side=32, slowfast_alpha=4)
    slow, fast = eval_transform(vi)(smooth_clip(t=8))
    assert fast.shape == (3, 8, 32, 32) and slow.shape == (3, 2, 32, 32)
    assert torch.equal(slow, fast[:, ::4])


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (2, 20, 100, 3), (2, 100, 20, 3)])
def test_any_frame_size_gives_a_full_crop(shape):
    clip = torch.randint(0, 256, shape, dtype=torch.uint8)
    assert train_transform(VI)(clip).shape == (3, 2, 56, 56)
    assert eval_transform(VI)(clip).shape == (3, 2, 56, 56)


def test_crop_resize_is_a_plain_crop_when_sizes_match():
    clip = torch.randint(0, 256, (2, 10, 12, 3), dtype=torch.uint8)
    out = crop_resize(clip, (1, 2, 8, 8), 8)
    assert torch.equal(out, clip[:, 1:9, 2:10].permute(0, 3, 1, 2))
