"""The ViT FLOP model against hand-derived terms and torch's FlopCounterMode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.flop_counter import FlopCounterMode

from bench.compute import (
    ViTConfig,
    block_flops,
    encoder_flops,
    epoch_cost,
    get_vit_config,
    model_forward_flops,
    patch_embed_flops,
)


def test_block_formula_by_parts() -> None:
    n, d = 197, 768
    qkv = 2 * n * d * 3 * d
    logits = 2 * n * n * d
    attn_v = 2 * n * n * d
    proj = 2 * n * d * d
    mlp = 2 * n * d * 4 * d + 2 * n * 4 * d * d
    assert block_flops(n, d) == qkv + logits + attn_v + proj + mlp
    assert block_flops(n, d) == 24 * n * d**2 + 4 * n**2 * d
    # ViT-B/16 at 224: timm lists 17.6 GMACs = 35.1 GFLOPs (encoder dominates)
    assert encoder_flops(197, "vit_base") / 1e9 == pytest.approx(34.9, abs=0.1)


def test_configs_and_aliases() -> None:
    assert get_vit_config("B") is get_vit_config("vit_base")
    assert (get_vit_config("ViT-L").width, get_vit_config("ViT-L").depth) == (1024, 24)
    assert get_vit_config("vit_small").width == 384
    with pytest.raises(KeyError, match="vit_small"):
        get_vit_config("vit_huge")


def test_attention_is_per_sequence_not_squared_ratio() -> None:
    # two sequences of 100 tokens cost twice one; one sequence of 200 costs more than that
    two = epoch_cost(np.array([100, 100]), np.array([100, 100]), models=("vit_base",), num_prefix_tokens=0)
    one = epoch_cost(np.array([200]), np.array([200]), models=("vit_base",), num_prefix_tokens=0)
    assert two.flops["vit_base"] == pytest.approx(2 * encoder_flops(100, "vit_base"))
    extra = one.flops["vit_base"] - two.flops["vit_base"]
    assert extra == pytest.approx(12 * 4 * 768 * (200**2 - 2 * 100**2))
    pad = epoch_cost(np.array([90, 100]), np.array([100, 100]), models=("vit_small",))
    assert pad.padding_fraction == pytest.approx(10 / 200)
    with pytest.raises(ValueError, match="more real"):
        epoch_cost(np.array([101]), np.array([100]))


def _tiny_vit(cfg: ViTConfig, *, img: tuple[int, int], patch: int, in_chans: int, num_classes: int) -> VisionTransformer:
    model = VisionTransformer(
        img_size=img,
        patch_size=patch,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        dynamic_img_size=True,
    )
    for m in model.modules():  # FlopCounterMode cannot see fused SDPA on CPU
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model.eval()


@pytest.mark.parametrize("size", [(48, 64), (80, 32), (16, 16)])
def test_formula_matches_flop_counter_on_timm_vit(size: tuple[int, int]) -> None:
    cfg = ViTConfig("tiny", width=64, depth=2, heads=2)
    patch, in_chans, num_classes, batch = 16, 1, 5, 3
    model = _tiny_vit(cfg, img=(48, 64), patch=patch, in_chans=in_chans, num_classes=num_classes)
    x = torch.randn(batch, in_chans, *size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    measured = counter.get_total_flops()
    n_patches = (size[0] // patch) * (size[1] // patch)
    expected = batch * model_forward_flops(
        n_patches, cfg, patch=patch, in_chans=in_chans, num_prefix_tokens=1, num_classes=num_classes
    )
    assert measured == expected
    # the encoder part alone is L·(24nd² + 4n²d) with n = patches + cls
    embed = batch * patch_embed_flops(n_patches, width=cfg.width, patch=patch, in_chans=in_chans)
    head = batch * 2 * cfg.width * num_classes
    n = n_patches + 1
    assert measured - embed - head == batch * cfg.depth * (24 * n * cfg.width**2 + 4 * n**2 * cfg.width)
