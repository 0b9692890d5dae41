"""Patch layout helpers shared by the masked-image-modelling methods.

Conventions (MAE's): a patch vector is ordered (row in patch, column in patch,
channel) with the channel fastest; tokens are row-major over the (gh, gw) grid.
The channel count always comes from the tensor, never a literal 3.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, gh*gw, patch*patch*C); H and W must be multiples of `patch`."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, py, px, c
    return x.reshape(b, gh * gw, patch * patch * c)


def unpatchify(tokens: Tensor, patch: int, grid: tuple[int, int], chans: int) -> Tensor:
    """Inverse of `patchify`: (B, gh*gw, patch*patch*C) -> (B, C, gh*patch, gw*patch)."""
    b = tokens.shape[0]
    gh, gw = grid
    x = tokens.reshape(b, gh, gw, patch, patch, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, chans, gh * patch, gw * patch)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D sin-cos table, shape (1, [1 +] gh*gw, dim), float32.

    The first dim/2 channels encode the column index and the last dim/2 the row
    index; each half is [sin(pos*w_k)]_k || [cos(pos*w_k)]_k with
    w_k = 10000^(-k/(dim/4)), k < dim/4. The cls row (if any) is zero. Computed in
    float64 like the reference and cast to float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")

    def half(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([half(cols), half(rows)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def grid_pos_embed(table: Tensor, grid: tuple[int, int], prefix: int = 1, mode: str = "timm") -> Tensor:
    """A (1, prefix + n, D) table for a (gh, gw) token grid.

    The stored table is for a square grid of n tokens. `mode="timm"` resamples with
    timm's `resample_abs_pos_embed` (bicubic, antialias, size-based), the function a
    timm ViT with `dynamic_img_size=True` uses at fine-tuning, so pre-training and
    fine-tuning see the same positions. `mode="dino"` is DINO/GMML/SiT's
    `interpolate_pos_encoding`: bicubic without antialias, driven by
    scale_factor = ((gh + 0.1) / side, (gw + 0.1) / side) (the +0.1 avoids rounding the
    output size down).
    """
    n = table.shape[1] - prefix
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"pos_embed holds {n} grid tokens, not a square grid")
    if (side, side) == tuple(grid):
        return table
    if mode == "timm":
        return resample_abs_pos_embed(table, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix)
    if mode != "dino":
        raise ValueError(f"pos-embed interpolation mode must be 'timm' or 'dino', got {mode!r}")
    dim = table.shape[-1]
    patch_pos = table[:, prefix:].reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    scale = ((grid[0] + 0.1) / side, (grid[1] + 0.1) / side)
    patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(patch_pos.shape[-2:]) != tuple(grid):
        raise ValueError(f"dino pos-embed interpolation gave {tuple(patch_pos.shape[-2:])}, expected {grid}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(table.dtype)
    return torch.cat([table[:, :prefix], patch_pos], dim=1)
