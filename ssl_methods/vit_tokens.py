"""Token-level forward of a timm ViT for any grid, with intermediate block outputs.

Same computation as timm's `VisionTransformer.forward_features` (patch_embed,
cls + pos_embed, pos/patch dropout, norm_pre, blocks) minus the final norm, but
(a) any H, W multiple of the patch size works (positions via `grid_pos_embed`,
the function timm's `dynamic_img_size` uses) and (b) chosen blocks' outputs are
returned, which GMML's block averaging needs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ssl_methods.patches import grid_pos_embed


def vit_tokens(
    enc: nn.Module, images: Tensor, collect: Sequence[int] = (), pos_interp: str = "timm"
) -> tuple[Tensor, list[Tensor], tuple[int, int]]:
    """Returns (tokens after the last block, un-normed (B, 1 + L, D); outputs of the
    1-indexed blocks in `collect`, in block order; the (gh, gw) grid). `pos_interp` is
    the `grid_pos_embed` mode for grids other than the stored one."""
    patch = enc.patch_embed.patch_size
    if images.shape[-2] % patch[0] or images.shape[-1] % patch[1]:
        raise ValueError(
            f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {tuple(patch)}"
        )
    x = enc.patch_embed.proj(images)
    b, _, gh, gw = x.shape
    x = enc.patch_embed.norm(x.flatten(2).transpose(1, 2))
    pos = grid_pos_embed(enc.pos_embed, (gh, gw), mode=pos_interp)
    x = torch.cat([enc.cls_token.expand(b, -1, -1), x], dim=1) + pos
    x = enc.norm_pre(enc.patch_drop(enc.pos_drop(x)))
    wanted = set(collect)
    outs: list[Tensor] = []
    for i, blk in enumerate(enc.blocks, start=1):
        x = blk(x)
        if i in wanted:
            outs.append(x)
    return x, outs, (gh, gw)


def check_plain_vit(enc: nn.Module, method: str) -> None:
    """The token forward assumes one cls token with a pos-embed row and no register tokens."""
    if getattr(enc, "no_embed_class", False) or getattr(enc, "num_prefix_tokens", 1) != 1 or enc.cls_token is None:
        raise ValueError(f"{method}: backbone must be a ViT with one cls token that has a pos-embed row")
