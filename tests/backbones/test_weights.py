"""Local weight resolution (never a download) and state-dict file reading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import backbones
from backbones.weights import WeightsNotFoundError, read_state_dict, resolve_pretrained_file


def test_missing_imagenet_file_says_exactly_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(WeightsNotFoundError) as err:
        backbones.create("vit_small", init="imagenet1k")
    msg = str(err.value)
    expected = tmp_path / "vit_small_patch16_224.augreg_in21k_ft_in1k.safetensors"
    assert str(expected) in msg
    assert "BENCH_WEIGHTS_DIR" in msg and "timm/vit_small_patch16_224.augreg_in21k_ft_in1k" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_no_in21k_weights_for_resnet50_is_a_clear_error() -> None:
    with pytest.raises(WeightsNotFoundError, match="resnet50.*no imagenet21k"):
        resolve_pretrained_file(backbones.get_spec("resnet50"), "imagenet21k")


def test_weights_dir_file_is_found(tmp_path: Path) -> None:
    spec = backbones.get_spec("vit_base")
    target = tmp_path / "vit_base_patch16_224.augreg_in21k.safetensors"
    save_file({"x": torch.zeros(1)}, str(target))
    assert resolve_pretrained_file(spec, "imagenet21k", weights_dir=tmp_path) == target


def test_read_state_dict_formats(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd)
        for k in sd:
            torch.testing.assert_close(got[k], sd[k])


def test_read_state_dict_rejects_non_tensors(tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        read_state_dict(tmp_path / "bad.pt")


def test_imagenet_init_end_to_end_from_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A timm-format RGB ViT-S/16 file with a 1000-way head, placed where the error message
    says, initialises a grey 14-class model: patch kernel averaged, head dropped."""
    torch.manual_seed(0)
    rgb = backbones.create("vit_small", in_chans=3, num_classes=1000)
    sd = rgb.state_dict()
    save_file(sd, str(tmp_path / "vit_small_patch16_224.augreg_in21k_ft_in1k.safetensors"))
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    grey = backbones.create("vit_small", init="imagenet1k", in_chans=1, num_classes=14)
    assert sorted(grey.bench_init.dropped) == ["head.bias", "head.weight"]
    torch.testing.assert_close(grey.patch_embed.proj.weight, sd["patch_embed.proj.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(grey.blocks[11].mlp.fc2.weight, sd["blocks.11.mlp.fc2.weight"])
