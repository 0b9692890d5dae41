"""Batched, on-device view augmentations built from torch RNG.

The loop hands methods a raw batch; each method makes its views here, so
augmentation follows the global torch seed and runs on the accelerator. All
functions take and return (B, C, H, W) float tensors and draw independent
parameters per sample. Photometric operations act per channel identically, so
they are meaningful for 1-channel radiographs (hue/saturation/grayscale are
no-ops on grey images and are therefore not offered).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_resized_crop(
    images: Tensor,
    out_size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
) -> Tensor:
    """Per-sample RandomResizedCrop + horizontal flip, resampled bilinearly.

    Area fraction ~ U(scale), log aspect ratio (w/h) ~ U(log ratio). Unlike
    torchvision's 10-try rejection loop, a box larger than the image is clipped
    to the image side (same support, slightly different distribution at the
    extremes). Output (B, C, *out_size).
    """
    b, c, h, w = images.shape
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    dev = images.device
    area = torch.empty(b, device=dev).uniform_(*scale) * (h * w)
    logr = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    ar = torch.exp(logr)
    cw = torch.sqrt(area * ar).clamp(max=w)
    ch = torch.sqrt(area / ar).clamp(max=h)
    x0 = torch.rand(b, device=dev) * (w - cw)
    y0 = torch.rand(b, device=dev) * (h - ch)
    flip = torch.where(torch.rand(b, device=dev) < hflip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0] = (cw / w) * flip
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(
    images: Tensor, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8
) -> Tensor:
    """With probability `p` per sample: scale brightness by U(1-b, 1+b), then scale the
    deviation from the image mean by U(1-c, 1+c) (torchvision's contrast; torchvision
    also shuffles the order of the two, here brightness always comes first). Values are
    clamped to the batch's input [min, max] so [0, 1] inputs stay in [0, 1]."""
    b = images.shape[0]
    dev = images.device
    lo, hi = images.min(), images.max()
    apply = (torch.rand(b, 1, 1, 1, device=dev) < p).to(images.dtype)
    fb = torch.empty(b, 1, 1, 1, device=dev).uniform_(1 - brightness, 1 + brightness)
    out = images * fb
    fc = torch.empty(b, 1, 1, 1, device=dev).uniform_(1 - contrast, 1 + contrast)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * fc + mean
    out = out.clamp(lo, hi)
    return apply * out + (1 - apply) * images


def gaussian_blur(
    images: Tensor, p: float, sigma: tuple[float, float] = (0.1, 2.0), ref_size: float = 224
) -> Tensor:
    """With probability `p` per sample, blur with sigma ~ U(sigma) pixels (scaled by
    H/ref_size so small CPU crops blur like 224-px ones). Separable, reflect padding."""
    b, c, h, w = images.shape
    dev = images.device
    if p <= 0:
        return images
    sig = torch.empty(b, device=dev).uniform_(*sigma) * (h / ref_size)
    radius = max(1, int(math.ceil(3 * sigma[1] * h / ref_size)))
    radius = min(radius, (min(h, w) - 1) // 2) if min(h, w) > 2 else 0
    if radius == 0:
        return images
    xs = torch.arange(-radius, radius + 1, device=dev, dtype=images.dtype)
    k = torch.exp(-(xs[None, :] ** 2) / (2 * sig[:, None].clamp(min=1e-3) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, K)
    x = images.reshape(1, b * c, h, w)
    kk = k.repeat_interleave(c, dim=0)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kk[:, None, None, :], groups=b * c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kk[:, None, :, None], groups=b * c)
    blurred = x.reshape(b, c, h, w)
    apply = (torch.rand(b, 1, 1, 1, device=dev) < p).to(images.dtype)
    return apply * blurred + (1 - apply) * images


def solarize(images: Tensor, p: float, threshold: float = 0.5) -> Tensor:
    """With probability `p` per sample, invert pixels >= threshold (x -> 1 - x); assumes [0, 1]."""
    if p <= 0:
        return images
    apply = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
    sol = torch.where(images >= threshold, 1.0 - images, images)
    return torch.where(apply, sol, images)


def multiview_crop(
    images: Tensor,
    out_size: int | tuple[int, int],
    *,
    scale: tuple[float, float],
    blur_p: float,
    solarize_p: float = 0.0,
    jitter_p: float = 0.8,
    jitter_strength: float = 0.4,
    hflip: float = 0.5,
    ref_size: float = 224,
) -> Tensor:
    """One DINO/BYOL-style view: RandomResizedCrop + flip, brightness/contrast jitter,
    Gaussian blur and solarisation, each with its own per-sample probability.

    `ref_size` is the resolution the blur sigma range (0.1-2 px) refers to."""
    v = random_resized_crop(images, out_size, scale, hflip=hflip)
    v = color_jitter(v, jitter_strength, jitter_strength, p=jitter_p)
    v = gaussian_blur(v, p=blur_p, ref_size=ref_size)
    return solarize(v, p=solarize_p)
