"""The public `backbones.create` entry point and the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import backbones


def test_registry_lists_the_benchmark_backbones() -> None:
    assert set(backbones.list_backbones()) >= {
        "vit_tiny_demo", "resnet_tiny_demo", "vit_small", "vit_base", "resnet50", "swin_base",
    }


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(KeyError, match="vit_tiny_demo"):
        backbones.create("vit_gigantic")


@pytest.mark.parametrize(("name", "dim"), [("vit_tiny_demo", 96), ("resnet_tiny_demo", 128)])
def test_demo_backbones_shapes(name: str, dim: int) -> None:
    model = backbones.create(name, in_chans=1, num_classes=0)
    assert backbones.feature_dim(model) == dim
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, dim)
    clf = backbones.create(name, in_chans=3, num_classes=7)
    assert clf(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_real_vit_small_geometry() -> None:
    model = backbones.create("vit_small", in_chans=1)
    assert backbones.feature_dim(model) == 384
    assert tuple(model.pos_embed.shape) == (1, 197, 384)
    assert len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 6
    assert tuple(model.patch_embed.proj.weight.shape) == (384, 1, 16, 16)


def test_dynamic_img_size_passes_through() -> None:
    model = backbones.create("vit_tiny_demo", dynamic_img_size=True)
    assert model(torch.rand(1, 1, 64, 96)).shape == (1, 96)


def test_bad_init_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither 'random'"):
        backbones.create("vit_tiny_demo", init=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="chans_adapt"):
        backbones.create("vit_tiny_demo", chans_adapt="max")  # type: ignore[arg-type]
