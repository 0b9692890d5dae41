"""Pixels to model input: resize, normalise, and the fine-tuning augmentation (torch).

`bench.data.io.read_image` gives float [0,1] 2-D arrays at native size; we resize to
`image_size`² (antialiased bilinear) and normalise with the grey equivalent of the
ImageNet statistics (mean/std of the RGB means/stds), so that ImageNet-initialised and
random-initialised models see the same input scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

GREY_MEAN = 0.449  # mean of ImageNet's (0.485, 0.456, 0.406)
GREY_STD = 0.226  # mean of ImageNet's (0.229, 0.224, 0.225)


def normalise(img: np.ndarray) -> torch.Tensor:
    """(1, H, W) float32 tensor of a [0, 1] image in the models' input scale."""
    return (torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None] - GREY_MEAN) / GREY_STD


def to_model_input(img: np.ndarray, size: int, in_chans: int) -> torch.Tensor:
    """(in_chans, size, size): a [0, 1] image resized to `size`² and normalised, grey repeated over channels."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    t = (t[0] - GREY_MEAN) / GREY_STD
    return t.expand(in_chans, -1, -1).contiguous() if in_chans != 1 else t


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild, anatomy-preserving augmentation: random scale 0.9-1.1, shift +-6%, rotation +-7 deg.

    No horizontal flips: the heart's side is diagnostic information on chest films.
    """
    b = x.shape[0]
    # draws come from a CPU generator (reproducible across devices), then move to x's device
    scale = (0.9 + 0.2 * torch.rand(b, generator=gen)).to(x.device)
    ang = ((torch.rand(b, generator=gen) - 0.5) * (2 * 7 * np.pi / 180)).to(x.device)
    shift = ((torch.rand(b, 2, generator=gen) - 0.5) * 0.12).to(x.device)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = (0.0 - GREY_MEAN) / GREY_STD  # outside the film is air (dark)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out
