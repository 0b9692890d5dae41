"""DINOv2 initialisation (`init: dinov2`) from a local timm-format file, never a download.

The weights file here is a STAND-IN: written from a tiny timm model of the same architecture
class (`vit_base_patch14_dinov2` / `vit_base_patch14_reg4_dinov2` with 96-d, 4 blocks) at a
larger pre-training resolution (98 px: 7x7 grid of 14-px patches, as DINOv2's files are at
518 px: 37x37), in timm's on-disk format (safetensors of `model.state_dict()`, the format of
the Hugging Face `timm/vit_base_patch14_dinov2.lvd142m` file). It exercises the lookup, the
key layout (LayerScale, CLS and register tokens) and the pos_embed resampling, not DINOv2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import backbones
from backbones.weights import WeightsNotFoundError, resolve_pretrained_file

TINY = {"embed_dim": 96, "depth": 4, "num_heads": 3}


def standin_file(folder: Path, timm_name: str, tag: str = "standin_dinov2", img_size: int = 98) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write a tiny model of `timm_name`'s architecture class at `img_size` as `<timm_name>.<tag>.safetensors`."""
    torch.manual_seed(1)
    src = timm.create_model(timm_name, pretrained=False, img_size=img_size, num_classes=0, **TINY)
    with torch.no_grad():  # non-trivial pos_embed / tokens, so that a wrong resampling or a skipped key shows
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = folder / f"{timm_name}.{tag}.safetensors"
    save_file(sd, str(path))
    return path, sd


@pytest.mark.parametrize(
    "name, timm_name, prefix_in_pos",
    [("vit_dinov2_tiny_demo", "vit_base_patch14_dinov2", 1), ("vit_dinov2_reg_tiny_demo", "vit_base_patch14_reg4_dinov2", 0)],
)
def test_dinov2_init_loads_and_resamples_the_patch_grid(tmp_path: Path, name: str, timm_name: str, prefix_in_pos: int) -> None:
    _, sd = standin_file(tmp_path, timm_name)
    assert sd["pos_embed"].shape == (1, prefix_in_pos + 49, 96)  # 7x7 grid (+ CLS position without registers)
    model = backbones.create(name, init="dinov2", weights_dir=tmp_path, in_chans=3, num_classes=5, img_size=56)
    got = model.state_dict()
    assert model.patch_embed.grid_size == (4, 4)
    want_pos = resample_abs_pos_embed(sd["pos_embed"], new_size=[4, 4], old_size=[7, 7], num_prefix_tokens=prefix_in_pos)
    torch.testing.assert_close(got["pos_embed"], want_pos)
    if prefix_in_pos:  # the CLS position is carried over, not interpolated
        torch.testing.assert_close(got["pos_embed"][:, :1], sd["pos_embed"][:, :1])
    else:  # registers: 4 register tokens loaded, no position of their own
        torch.testing.assert_close(got["reg_token"], sd["reg_token"])
    for key in ("cls_token", "patch_embed.proj.weight", "blocks.0.ls1.gamma", "blocks.3.mlp.fc2.weight", "norm.weight"):
        torch.testing.assert_close(got[key], sd[key])
    report = model.bench_init
    assert report.missing == ["head.weight", "head.bias"] and not report.unexpected
    assert any(a.startswith("pos_embed") for a in report.adapted)
    assert model(torch.randn(2, 3, 56, 56)).shape == (2, 5)


def test_dinov2_init_into_a_grey_model_averages_the_rgb_kernel(tmp_path: Path) -> None:
    _, sd = standin_file(tmp_path, "vit_base_patch14_dinov2")
    model = backbones.create("vit_dinov2_tiny_demo", init="dinov2", weights_dir=tmp_path, in_chans=1, img_size=56)
    torch.testing.assert_close(model.state_dict()["patch_embed.proj.weight"], sd["patch_embed.proj.weight"].mean(1, keepdim=True))


def test_missing_dinov2_file_says_exactly_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache: no download is attempted
    for name, full in (
        ("vit_base_dinov2", "vit_base_patch14_dinov2.lvd142m"),
        ("vit_base_dinov2_reg", "vit_base_patch14_reg4_dinov2.lvd142m"),
    ):
        with pytest.raises(WeightsNotFoundError) as err:
            resolve_pretrained_file(backbones.get_spec(name), "dinov2")
        msg = str(err.value)
        assert str(tmp_path / f"{full}.safetensors") in msg and f"timm/{full}" in msg
        assert "dinov2 weights for backbone" in msg and "downloads are disabled" in msg
    # through `create`, on the tiny stand-in spec (same lookup, fast to build)
    with pytest.raises(WeightsNotFoundError, match="vit_base_patch14_dinov2.standin_dinov2.safetensors"):
        backbones.create("vit_dinov2_tiny_demo", init="dinov2")


def test_dinov2_init_is_only_for_backbones_that_have_it() -> None:
    with pytest.raises(WeightsNotFoundError, match="'vit_base'.*no dinov2 weights.*imagenet1k, imagenet21k"):
        resolve_pretrained_file(backbones.get_spec("vit_base"), "dinov2")


def test_real_size_spec_builds_the_dinov2_architecture_at_224() -> None:
    """`vit_base_dinov2` is timm's DINOv2 ViT-B/14 (LayerScale, 12 blocks, 768-d) on a 16x16 grid at 224 px.

    Built on the meta device (shapes only): initialising 86 M parameters on 2 loaded cores takes ~15 s."""
    with torch.device("meta"):
        model = backbones.create("vit_base_dinov2", in_chans=3, img_size=224)
        reg = backbones.create("vit_base_dinov2_reg", in_chans=3, img_size=224)
    sd = model.state_dict()
    assert sd["pos_embed"].shape == (1, 1 + 16 * 16, 768) and "blocks.11.ls2.gamma" in sd
    assert reg.state_dict()["reg_token"].shape == (1, 4, 768) and reg.state_dict()["pos_embed"].shape == (1, 256, 768)


@pytest.mark.parametrize("name, timm_name", [("vit_dinov2_tiny_demo", "vit_base_patch14_dinov2"), ("vit_dinov2_reg_tiny_demo", "vit_base_patch14_reg4_dinov2")])
def test_a_file_in_metas_layout_loads_like_timms(tmp_path: Path, name: str, timm_name: str) -> None:
    """Meta's `dinov2_vitb14[_reg4]_pretrain.pth` layout: `mask_token`, and with registers
    `register_tokens` plus a CLS position in `pos_embed` (timm folds it into `cls_token`)."""
    timm_dir, meta_dir = tmp_path / "timm", tmp_path / "meta"
    timm_dir.mkdir(), meta_dir.mkdir()
    _, sd = standin_file(timm_dir, timm_name)
    meta = {k: v for k, v in sd.items() if k not in ("reg_token",)}
    meta["mask_token"] = torch.zeros(1, 96)
    if "reg_token" in sd:
        cls_pos = torch.randn(1, 1, 96)
        meta["register_tokens"] = sd["reg_token"]
        meta["cls_token"] = sd["cls_token"] - cls_pos
        meta["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    torch.save(meta, meta_dir / f"{timm_name}.standin_dinov2.pth")
    a = backbones.create(name, init="dinov2", weights_dir=timm_dir, in_chans=3, img_size=56)
    b = backbones.create(name, init="dinov2", weights_dir=meta_dir, in_chans=3, img_size=56)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
    assert any("Meta's layout" in x for x in b.bench_init.adapted)
