"""Synthetic ImageNet: a tiny natural-image-like set in the ILSVRC class-folder layout.

Writes ``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``
for the ten Imagenette wnids. Each class is a shape/texture family (disc, square,
triangle, stripes, checkerboard, ring, cross, star, diagonal stripes, target) in a
class hue, over a smooth coloured background, at random position, scale and size
(96-160 px sides, aspect 0.75-1.33). RGB, like ImageNet.

The real set's oddities are reproduced once each in train: a PNG saved under a
``.JPEG`` name (like ``n02105855_2933.JPEG``), a CMYK JPEG and a greyscale JPEG.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.synthetic.anatomy import smooth_noise
from bench.data.synthetic.files import child_seed, save_jpeg, site_rng, to_uint8

WNIDS: tuple[str, ...] = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888605",
)  # fmt: skip
N_TRAIN_PER_CLASS = 30  # at scale 1.0
N_VAL_PER_CLASS = 5


def _shape_mask(k: int, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Soft-edged mask of class `k`'s shape; (x, y) centred coordinates in pixels."""
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * x + sa * y, -sa * x + ca * y
    rad = np.hypot(x, y)
    if k == 0:
        m = r - rad
    elif k == 1:
        m = r - np.maximum(np.abs(u), np.abs(v))
    elif k == 2:
        m = np.minimum(np.minimum(v + r / 2, r - (np.sqrt(3) * u + v)), r + (np.sqrt(3) * u - v)) / 1.5
    elif k == 3:
        m = np.where(rad < r * 1.3, np.sin(v * 2 * np.pi / (r / 2.5)) * r / 4, -1.0)
    elif k == 4:
        checks = np.sin(u * np.pi / (r / 3)) * np.sin(v * np.pi / (r / 3)) * r
        m = np.where(np.maximum(np.abs(u), np.abs(v)) < r, checks, -1.0)
    elif k == 5:
        m = r * 0.25 - np.abs(rad - r * 0.75)
    elif k == 6:
        m = np.maximum(np.minimum(r * 0.3 - np.abs(u), r - np.abs(v)), np.minimum(r * 0.3 - np.abs(v), r - np.abs(u)))
    elif k == 7:
        m = r * (0.6 + 0.4 * np.cos(5 * np.arctan2(v, u))) - rad
    elif k == 8:
        m = np.where(rad < r * 1.3, np.sin((u + v) * 2 * np.pi / (r / 2)) * r / 4, -1.0)
    else:
        m = np.where(rad < r * 1.2, np.cos(rad * 2 * np.pi / (r / 2.5)) * r / 4, -1.0)
    return np.clip(0.5 + m, 0.0, 1.0)


def render_natural(k: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB image (height, width, 3) in [0, 1] of class `k` (0-9)."""
    hue = (k / len(WNIDS) + rng.normal(0, 0.03)) % 1.0
    fg = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0)))
    bg_hue = rng.random()
    bg = np.array(colorsys.hsv_to_rgb(bg_hue, rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.8)))
    shade = np.stack([smooth_noise(rng, (height, width), 24) for _ in range(3)], axis=-1) * 0.08
    img = bg[None, None, :] + shade
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    r = rng.uniform(0.18, 0.35) * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    mask = _shape_mask(k, xx - cx, yy - cy, r, rng.uniform(0, np.pi))[..., None]
    texture = 1.0 + 0.1 * smooth_noise(rng, (height, width), 3)[..., None]
    img = img * (1 - mask) + mask * fg[None, None, :] * texture
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0.0, 1.0)


def _save_odd(img: np.ndarray, path: Path, kind: str) -> None:
    """The three ImageNet oddities: PNG content under .JPEG, CMYK JPEG, greyscale JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(to_uint8(img))
    if kind == "png":
        rgb.save(path, format="PNG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG", quality=92)
    else:
        rgb.convert("L").save(path, format="JPEG", quality=92)


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "imagenet")
    n_train = max(2, int(round(N_TRAIN_PER_CLASS * scale)))
    n_val = max(1, int(round(N_VAL_PER_CLASS * scale)))
    odd = {(0, 0): "png", (1, 0): "cmyk", (2, 0): "grey"}
    val_no = 0
    for k, wnid in enumerate(WNIDS):
        for i in range(n_train + n_val):
            irng = np.random.default_rng(child_seed(rng))
            h = int(irng.integers(96, 161))
            w = int(np.clip(round(h * irng.uniform(0.75, 1.33)), 96, 200))
            img = render_natural(k, irng, h, w)
            if i < n_train:
                path = root / "train" / wnid / f"{wnid}_{i + 1}.JPEG"
                if (k, i) in odd:
                    _save_odd(img, path, odd[(k, i)])
                    continue
            else:
                val_no += 1
                path = root / "val" / wnid / f"ILSVRC2012_val_{val_no:08d}.JPEG"
            save_jpeg(img, path)
    return {"train": n_train * len(WNIDS), "val": n_val * len(WNIDS), "classes": len(WNIDS)}
