"""Strict loading of state dicts into backbones: heads may be missing, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import backbones
from backbones.loading import BackboneInitError


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_encoder_loads_into_classifier_with_only_head_missing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = backbones.create("vit_tiny_demo", num_classes=0)
    path = _save(enc.state_dict(), tmp_path / "enc.safetensors")
    clf = backbones.create("vit_tiny_demo", num_classes=14, init=path)
    assert sorted(clf.bench_init.missing) == ["head.bias", "head.weight"]
    assert clf.bench_init.unexpected == []
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(clf.state_dict()[k], v)
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(clf.forward_features(x), enc.forward_features(x))


def test_missing_backbone_key_fails(tmp_path: Path) -> None:
    sd = backbones.create("vit_tiny_demo").state_dict()
    del sd["blocks.2.attn.qkv.weight"]
    path = _save(sd, tmp_path / "broken.safetensors")
    with pytest.raises(BackboneInitError, match=r"broken\.safetensors.*blocks\.2\.attn\.qkv\.weight"):
        backbones.create("vit_tiny_demo", init=path)


def test_wrong_backbone_shape_fails(tmp_path: Path) -> None:
    sd = backbones.create("vit_tiny_demo").state_dict()
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(10, 96)
    path = _save(sd, tmp_path / "shape.safetensors")
    with pytest.raises(BackboneInitError, match=r"blocks\.0\.mlp\.fc1\.weight: file \(10, 96\)"):
        backbones.create("vit_tiny_demo", init=path)


def test_imagenet_style_file_rgb_head1000_into_grey_head14(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rgb = backbones.create("vit_tiny_demo", in_chans=3, num_classes=1000)
    path = _save(rgb.state_dict(), tmp_path / "rgb.safetensors")
    grey = backbones.create("vit_tiny_demo", in_chans=1, num_classes=14, init=path, chans_adapt="mean")
    rep = grey.bench_init
    assert sorted(rep.dropped) == ["head.bias", "head.weight"]
    assert sorted(rep.missing) == ["head.bias", "head.weight"]
    w_rgb = rgb.patch_embed.proj.weight.detach()
    torch.testing.assert_close(grey.patch_embed.proj.weight.detach(), w_rgb.mean(dim=1, keepdim=True))
    grey_sum = backbones.create("vit_tiny_demo", in_chans=1, init=path, chans_adapt="sum")
    torch.testing.assert_close(grey_sum.patch_embed.proj.weight.detach(), w_rgb.sum(dim=1, keepdim=True))


def test_pos_embed_is_resampled_for_another_grid(tmp_path: Path) -> None:
    torch.manual_seed(2)
    small = backbones.create("vit_tiny_demo", img_size=64)  # 8x8 grid
    path = _save(small.state_dict(), tmp_path / "g8.safetensors")
    big = backbones.create("vit_tiny_demo", img_size=96, init=path)  # 12x12 grid
    pe = small.pos_embed.detach()
    grid = pe[:, 1:].reshape(1, 8, 8, 96).permute(0, 3, 1, 2)
    expect = F.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)
    expect = torch.cat([pe[:, :1], expect.permute(0, 2, 3, 1).reshape(1, 144, 96)], dim=1)
    torch.testing.assert_close(big.pos_embed.detach(), expect, rtol=1e-5, atol=1e-5)
    assert any("pos_embed" in a for a in big.bench_init.adapted)


def test_resnet_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    enc = backbones.create("resnet_tiny_demo")
    enc.eval()
    path = tmp_path / "r.pth"
    torch.save(enc.state_dict(), path)
    clf = backbones.create("resnet_tiny_demo", num_classes=5, init=path).eval()
    assert sorted(clf.bench_init.missing) == ["fc.bias", "fc.weight"]
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(clf.forward_features(x), enc.forward_features(x))
