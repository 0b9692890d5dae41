"""GMML group masking: corrupt connected rectangular regions of an image.

Follows `GMML_drop_rand_patches` / `GMML_replace_list` (Sara-Ahmed/GMML,
datasets/datasets_utils.py): per image, rectangles are drawn until the union
covers at least a target fraction of the pixels (overshoot <= one rectangle).
A rectangle's top-left corner is floor(U{0..H-align-1} / align) * align, its sides
U{align..max_side-1} clipped to the image and rounded to a multiple of `align`
(max_side = floor(max_side_frac * side)). The corrupted region is filled with
N(0, 1) noise ('noise'), zeros ('zeros'), or - with probability `replace_prob`
per image, and then with its own coverage - the pixels of a random partner image
of the same view (possibly itself, as the reference's randint) at the same location.

Unlike the reference (numpy reseeded from OS entropy, so unreproducible), all
draws use torch RNG and follow the global seed; the loop is vectorised over the
batch (one rectangle per still-uncovered image per iteration).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

Fill = Literal["noise", "zeros"]


class Corruption(NamedTuple):
    """corrupted: (B, C, H, W); mask: (B, 1, H, W) float, 1 = corrupted pixel;
    replaced: (B,) bool, True where the fill came from a partner image; partner: (B,)."""

    corrupted: Tensor
    mask: Tensor
    replaced: Tensor
    partner: Tensor


def group_mask(
    coverage: Tensor, size: tuple[int, int], max_side_frac: float = 0.3, align: int = 1, max_iter: int = 10_000
) -> Tensor:
    """(B, H, W) bool union of random rectangles covering >= coverage[b] * H * W pixels."""
    h, w = size
    dev = coverage.device
    b = coverage.shape[0]
    if h <= align or w <= align:
        raise ValueError(f"group_mask: image {h}x{w} too small for align {align}")
    if float(coverage.max()) > 0.95:
        raise ValueError(f"group_mask: coverage must be <= 0.95, got {float(coverage.max())}")
    max_h, max_w = max(align + 1, int(max_side_frac * h)), max(align + 1, int(max_side_frac * w))
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    target = coverage * (h * w)
    mask = torch.zeros(b, h, w, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        active = mask.sum(dim=(1, 2)) < target
        if not bool(active.any()):
            return mask
        r0 = torch.div(torch.randint(0, h - align, (b,), device=dev), align, rounding_mode="floor") * align
        c0 = torch.div(torch.randint(0, w - align, (b,), device=dev), align, rounding_mode="floor") * align
        rh = torch.minimum(torch.randint(align, max_h, (b,), device=dev), h - r0)
        rw = torch.minimum(torch.randint(align, max_w, (b,), device=dev), w - c0)
        rh = torch.round(rh.float() / align).long() * align
        rw = torch.round(rw.float() / align).long() * align
        rect = (
            (ys >= r0[:, None, None]) & (ys < (r0 + rh)[:, None, None])
            & (xs >= c0[:, None, None]) & (xs < (c0 + rw)[:, None, None])
        )
        mask |= rect & active[:, None, None]
    raise RuntimeError(f"group_mask: coverage not reached after {max_iter} rectangles")


def gmml_corrupt(
    images: Tensor,
    *,
    coverage: tuple[float, float] = (0.5, 0.75),
    fill: Fill = "noise",
    replace_prob: float = 0.5,
    replace_coverage: tuple[float, float] = (0.3, 0.3),
    max_side_frac: float = 0.3,
    align: int = 1,
    groups: int = 1,
) -> Corruption:
    """Corrupt a batch (B, C, H, W) in groups; see the module docstring.

    `groups` > 1 says the batch is `groups` views stacked view-major (B = groups * n):
    a replacing image then takes its partner from its own view, as the references'
    `GMML_replace_list`, which runs once per crop list."""
    if fill not in ("noise", "zeros"):
        raise ValueError(f"gmml: fill must be 'noise' or 'zeros', got {fill!r}")
    b, _, h, w = images.shape
    if groups < 1 or b % groups:
        raise ValueError(f"gmml: a batch of {b} images cannot be split into {groups} views")
    dev = images.device
    replaced = torch.rand(b, device=dev) < replace_prob
    cov_fill = torch.empty(b, device=dev).uniform_(*coverage)
    cov_repl = torch.empty(b, device=dev).uniform_(*replace_coverage)
    cov = torch.where(replaced, cov_repl, cov_fill)
    mask = group_mask(cov, (h, w), max_side_frac, align).unsqueeze(1)
    per_view = b // groups
    view_start = torch.div(torch.arange(b, device=dev), per_view, rounding_mode="floor") * per_view
    partner = view_start + torch.randint(0, per_view, (b,), device=dev)
    base = torch.randn_like(images) if fill == "noise" else torch.zeros_like(images)
    fill_vals = torch.where(replaced[:, None, None, None], images[partner], base)
    corrupted = torch.where(mask, fill_vals, images)
    return Corruption(corrupted, mask.to(images.dtype), replaced, partner)


def masked_l1_mean(rec: Tensor, clean: Tensor, mask: Tensor) -> Tensor:
    """Mean |rec - clean| over corrupted elements (mask (B,1,H,W) broadcast over channels),
    pooled over the batch: more-corrupted images weigh more, as in the reference."""
    chans = clean.shape[1]
    return ((rec - clean).abs() * mask).sum() / (mask.sum() * chans).clamp(min=1.0)
