"""Backbone registry: every entry builds, runs on its own input, matches its published size,
takes the overrides it can and refuses the others, and loads weights in the published format."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from trainer.backbones import (
    REGISTRY,
    BackboneError,
    build_backbone,
    count_params,
    get_backbone,
    resolve_input,
)

# Forward passes over a second on 2 CPU cores at the published input size.
HEAVY = {"x3d_l", "r2plus1d_r50", "mvit_base_16x4", "s3d", "mvit_v2_s", "swin3d_t"}


def _clip(vi, batch: int = 1):
    x = torch.randn(batch, 3, vi.num_frames, vi.crop_size, vi.crop_size)
    return [x[:, :, :: vi.slowfast_alpha], x] if vi.slowfast_alpha else x


def _forward(name: str, vi=None, num_classes: int = 5) -> torch.Tensor:
    model = build_backbone(name, num_classes, video_input=vi).eval()
    with torch.no_grad():
        return model(_clip(vi or get_backbone(name).default_input))


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(REGISTRY)],
)
def test_forward_on_published_input(name):
    out = _forward(name)
    assert out.shape == (1, 5)
    assert torch.isfinite(out).all()
    # Logits, not probabilities: the pytorchvideo Softmax heads are off.
    assert not torch.allclose(out.sum(dim=1), torch.ones(1))


@pytest.mark.parametrize("name", sorted(n for n, b in REGISTRY.items() if b.published_params))
def test_param_count_matches_published_table(name):
    params = count_params(build_backbone(name, 400))
    published = REGISTRY[name].published_params
    assert abs(params - published) / published < 0.01, (params, published)


def test_published_inputs():
    xs = get_backbone("x3d_xs").default_input
    assert (xs.num_frames, xs.sampling_rate, xs.crop_size, xs.short_side) == (4, 12, 160, 182)
    sf = get_backbone("slowfast_r50").default_input
    assert (sf.num_frames, sf.sampling_rate, sf.slowfast_alpha) == (32, 2, 4)
    r3d = get_backbone("r3d_18").default_input
    assert (r3d.num_frames, r3d.crop_size, r3d.short_side, r3d.fps) == (16, 112, 128, 15.0)
    assert r3d.mean == (0.43216, 0.394666, 0.37645)
    assert get_backbone("swin3d_t").default_input.mean == (0.485, 0.456, 0.406)


def test_x3d_head_is_sized_for_overridden_input():
    vi = resolve_input("x3d_m", num_frames=6, crop_size=96)
    assert vi.short_side == round(96 * 256 / 224)  # keeps the published short/crop ratio
    assert _forward("x3d_m", vi).shape == (1, 5)


def test_resnet_family_at_overrides():
    vi = resolve_input("slow_r50", num_frames=4, crop_size=64)
    assert _forward("slow_r50", vi).shape == (1, 5)
    vi = resolve_input("slowfast_r50", num_frames=8, crop_size=64)
    assert _forward("slowfast_r50", vi).shape == (1, 5)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet9000'.*x3d_xs"):
        build_backbone("resnet9000", 3)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("mvit_base_16x4", {"num_frames": 8}, "--num_frames 8: mvit_base_16x4 takes exactly 16"),
        ("mvit_v2_s", {"crop_size": 160}, "--crop_size 160: mvit_v2_s takes exactly 224"),
        ("slowfast_r50", {"num_frames": 18}, "--num_frames 18: .* multiple of 4"),
        ("s3d", {"num_frames": 8}, "--num_frames 8: s3d needs >= 14"),
        ("s3d", {"crop_size": 112}, "--crop_size 112: s3d needs >= 224"),
        ("x3d_xs", {"crop_size": 160, "short_side": 128}, "--short_side 128: must be >= crop"),
        ("x3d_xs", {"sampling_rate": 0}, "--sampling_rate 0: must be a positive"),
    ],
)
def test_impossible_override_is_a_clear_error(name, overrides, message):
    with pytest.raises(BackboneError, match=message):
        resolve_input(name, **overrides)


def test_weights_file_in_pytorchvideo_format(tmp_path):
    published = build_backbone("x3d_xs", 400)
    path = tmp_path / "X3D_XS.pyth"
    torch.save({"model_state": published.state_dict()}, path)
    model = build_backbone("x3d_xs", 3, weights=path)
    ours, theirs = model.state_dict(), published.state_dict()
    assert torch.equal(ours["blocks.0.conv.conv_t.weight"], theirs["blocks.0.conv.conv_t.weight"])
    assert ours["blocks.5.proj.weight"].shape == (3, 2048)  # head replaced for 3 classes


def test_weights_file_plain_state_dict_keeps_matching_head(tmp_path):
    source = build_backbone("r3d_18", 4)
    path = tmp_path / "r3d.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("r3d_18", 4, weights=path)
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_bad_weights_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(BackboneError, match="not a PyTorch weights file"):
        build_backbone("x3d_xs", 3, weights=junk)
    with pytest.raises(BackboneError, match="no such file"):
        build_backbone("x3d_xs", 3, weights=tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save(build_backbone("r3d_18", 400).state_dict(), other)
    with pytest.raises(BackboneError, match="does not fit this backbone"):
        build_backbone("x3d_xs", 3, weights=other)


def test_pretrained_reads_published_file_from_hub_cache(tmp_path, monkeypatch):
    # load_state_dict_from_url looks in $TORCH_HOME/hub/checkpoints/<file name> before
    # downloading: a file there under the published name stands in for the download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    published = build_backbone("x3d_xs", 400)
    torch.save({"model_state": published.state_dict()}, cache / "X3D_XS.pyth")
    model = build_backbone("x3d_xs", 2, pretrained=True)
    key = "blocks.1.res_blocks.0.branch2.conv_b.weight"
    assert torch.equal(model.state_dict()[key], published.state_dict()[key])

    tv = build_backbone("r3d_18", 400)
    torch.save(tv.state_dict(), cache / "r3d_18-b3b3357e.pth")  # torchvision's published name
    model = build_backbone("r3d_18", 2, pretrained=True)
    assert torch.equal(model.stem[0].weight, tv.stem[0].weight)


def test_failed_download_suggests_weights_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneError, match=r"X3D_S\.pyth .*--weights PATH"):
        build_backbone("x3d_s", 3, pretrained=True)


def test_demo_backbone_has_no_pretrained_weights():
    with pytest.raises(BackboneError, match="no pretrained weights"):
        build_backbone("demo_cnn", 3, pretrained=True)
