"""Batched, on-device view augmentations built from torch RNG.

The loop hands methods a normalised batch ((x - GREY_MEAN) / GREY_STD, see
`bench.data.transforms`); each method makes its views here, so augmentation follows the
global torch seed and runs on the accelerator. All functions take and return
(B, C, H, W) float tensors and draw independent parameters per sample.

Geometric operations (crop, flip) act on the normalised tensor. Photometric ones
(`color_jitter`, `gaussian_blur`, `solarize`) expect [0, 1] pixels like the
references' PIL/torchvision pipelines, which apply them before `Normalize`;
`photometric` maps a normalised batch to [0, 1], applies them and normalises again.
They act on every channel identically, so they are meaningful for 1-channel
radiographs; hue/saturation jitter and RandomGrayscale are the identity on grey
images and are therefore not offered (see `color_jitter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_methods import shard

from bench.data.transforms import GREY_MEAN, GREY_STD


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
    area = shard.uniform(b, *scale, device=dev) * (h * w)
    logr = shard.uniform(b, math.log(ratio[0]), math.log(ratio[1]), device=dev)
    ar = torch.exp(logr)
    cw = torch.sqrt(area * ar).clamp(max=w)
    ch = torch.sqrt(area / ar).clamp(max=h)
    x0 = shard.rand(b, device=dev) * (w - cw)
    y0 = shard.rand(b, device=dev) * (h - ch)
    flip = torch.where(shard.rand(b, device=dev) < hflip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0] = (cw / w) * flip
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class JitterParams:
    """Per-sample ColorJitter draws: (B,) bool `apply`, (B,) factors, (B,) bool order."""

    apply: Tensor
    brightness: Tensor
    contrast: Tensor
    brightness_first: Tensor


def sample_jitter(batch: int, brightness: float, contrast: float, p: float, device: torch.device | str) -> JitterParams:
    """Draw RandomApply(ColorJitter(brightness, contrast, ...), p) parameters per sample.

    Factors ~ U(1 - s, 1 + s) as torchvision's `ColorJitter.get_params`; torchvision
    also applies its four operations in a random order (`randperm(4)`); on grey images
    only brightness and contrast act, so the order reduces to which of the two is first.
    """
    apply = torch.rand(batch, device=device) < p
    fb = torch.empty(batch, device=device).uniform_(max(0.0, 1 - brightness), 1 + brightness)
    fc = torch.empty(batch, device=device).uniform_(max(0.0, 1 - contrast), 1 + contrast)
    first = torch.rand(batch, device=device) < 0.5
    return JitterParams(apply, fb, fc, first)


def _grey_mean(images: Tensor) -> Tensor:
    """Per-image mean of the luminance (torchvision's `adjust_contrast`): ITU-R 601
    weights for 3 channels, the plain mean otherwise. (B, 1, 1, 1)."""
    if images.shape[1] == 3:
        lum = 0.2989 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
        return lum.mean(dim=(1, 2))[:, None, None, None]
    return images.mean(dim=(1, 2, 3), keepdim=True)


def apply_jitter(images: Tensor, params: JitterParams) -> Tensor:
    """Brightness and contrast on [0, 1] images with torchvision's functional semantics:
    brightness x -> clamp(f x), contrast x -> clamp(f x + (1 - f) mean_grey(x)), each
    clamped to [0, 1], in the drawn order; samples with `apply` False are unchanged."""
    fb = params.brightness[:, None, None, None].to(images.dtype)
    fc = params.contrast[:, None, None, None].to(images.dtype)

    def bright(x: Tensor) -> Tensor:
        return (x * fb).clamp(0.0, 1.0)

    def contr(x: Tensor) -> Tensor:
        return (fc * x + (1 - fc) * _grey_mean(x)).clamp(0.0, 1.0)

    b_first = contr(bright(images))
    c_first = bright(contr(images))
    out = torch.where(params.brightness_first[:, None, None, None], b_first, c_first)
    return torch.where(params.apply[:, None, None, None], out, images)


def color_jitter(images: Tensor, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8) -> Tensor:
    """RandomApply(ColorJitter(brightness, contrast, saturation, hue), p) on [0, 1] images.

    Saturation, hue and RandomGrayscale of the references are omitted: on a grey image
    (1 channel, or 3 equal channels) saturation blends the image with its own
    greyscale, i.e. with itself, and hue rotates the hue of pixels whose saturation is
    0, so both are the identity (checked against torchvision in the tests)."""
    return apply_jitter(images, sample_jitter(images.shape[0], brightness, contrast, p, images.device))


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


SOLARIZE_THRESHOLD = 128 / 255  # PIL ImageOps.solarize default on 8-bit pixels (DINO, SiT, MoCo v3 loaders)


def solarize(images: Tensor, p: float, threshold: float = SOLARIZE_THRESHOLD) -> Tensor:
    """With probability `p` per sample, invert pixels >= threshold (x -> 1 - x) on [0, 1]
    images, as torchvision's `solarize`; the threshold is PIL's 128 of 255."""
    if p <= 0:
        return images
    apply = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
    sol = torch.where(images >= threshold, 1.0 - images, images)
    return torch.where(apply, sol, images)


def to_unit(images: Tensor, mean: float = GREY_MEAN, std: float = GREY_STD) -> Tensor:
    """Undo the loop's input normalisation: (x - mean) / std -> x, clamped to [0, 1]."""
    return (images * std + mean).clamp(0.0, 1.0)


def from_unit(images: Tensor, mean: float = GREY_MEAN, std: float = GREY_STD) -> Tensor:
    """The loop's input normalisation of [0, 1] images."""
    return (images - mean) / std


def photometric(
    images: Tensor,
    *,
    jitter_p: float,
    brightness: float,
    contrast: float,
    blur_p: float,
    solarize_p: float = 0.0,
    ref_size: float = 224,
    mean: float = GREY_MEAN,
    std: float = GREY_STD,
) -> Tensor:
    """Colour jitter, Gaussian blur and solarisation of normalised images, done where the
    references do them: on [0, 1] pixels before `Normalize`. The images are mapped back
    to [0, 1] with the loop's (mean, std), augmented, and normalised again, so
    "brightness" scales intensities about black and solarisation folds at 0.5 (on the
    normalised tensor they would scale about the mean grey and fold elsewhere)."""
    x = to_unit(images, mean, std)
    x = color_jitter(x, brightness, contrast, p=jitter_p)
    x = gaussian_blur(x, p=blur_p, ref_size=ref_size)
    x = solarize(x, p=solarize_p)
    return from_unit(x, mean, std)


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
    """One DINO/BYOL-style view of normalised images: RandomResizedCrop + flip (geometric,
    done on the normalised tensor), then `photometric` in [0, 1]: brightness/contrast
    jitter, Gaussian blur and solarisation, each with its own per-sample probability.

    `ref_size` is the resolution the blur sigma range (0.1-2 px) refers to."""
    v = random_resized_crop(images, out_size, scale, hflip=hflip)
    return photometric(
        v, jitter_p=jitter_p, brightness=jitter_strength, contrast=jitter_strength,
        blur_p=blur_p, solarize_p=solarize_p, ref_size=ref_size,
    )
