"""Synthetic IRMA (ImageCLEFmed 2009): radiographs of eight body regions, variable sizes.

Writes under `root` (the Kaggle copy's layout, with its doubled folder):
    ImageCLEFmed2009_train_codes.02.csv     image_id;irma_code;05_class;06_class;07_class;08_class
    ImageCLEFmed2009_train.02/ImageCLEFmed2009_train.02/<image_id>.png
    ImageCLEFmed2009_test_codes.03.csv, ImageCLEFmed2009_test.03/ImageCLEFmed2009_test.03/<image_id>.png

Images are 8-bit PNGs whose sides vary with the body part (hands portrait, spines
tall, chests about square; long side 96-192 px), so size-aware batching (DBB) has
something to bin. Each region has a drawing with its own structure: skull ring,
vertebral column, hand with phalanges, chest (the chest renderer), breast cone,
abdomen with bowel gas, pelvic wings with femoral heads, knee with long bones.
The 05/06/07/08 class columns number the distinct codes; `\\N` marks codes outside
the 2005 scheme, as in the real file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from bench.data.synthetic.anatomy import SiteStyle, render, smooth_noise
from bench.data.synthetic.files import child_seed, save_png, site_rng

N_TRAIN_PER_REGION = 30  # at scale 1.0
N_TEST_PER_REGION = 6
# region -> (anatomical code, aspect range h/w, directional codes)
REGIONS: dict[str, tuple[str, tuple[float, float], tuple[str, ...]]] = {
    "cranium": ("200", (1.0, 1.25), ("110", "210")),
    "spine": ("310", (1.6, 2.0), ("120", "210")),
    "upper extremity": ("410", (1.2, 1.5), ("110", "200")),
    "chest": ("500", (0.95, 1.1), ("110", "120", "210")),
    "breast": ("600", (1.2, 1.4), ("300",)),
    "abdomen": ("700", (1.1, 1.3), ("120",)),
    "pelvis": ("800", (0.75, 0.9), ("120",)),
    "lower extremity": ("940", (1.5, 1.9), ("120", "210")),
}
CHEST_STYLE = SiteStyle(name="irma-chest", gamma=1.1, contrast=1.0, noise=0.0, blur=0.6)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred coordinates in units of the image height: y in [-0.5, 0.5]."""
    y = (np.arange(h)[:, None] + 0.5) / h - 0.5
    x = (np.arange(w)[None, :] + 0.5 - w / 2.0) / h
    return np.broadcast_to(y, (h, w)), np.broadcast_to(x, (h, w))


def _soft(v: np.ndarray, width: float = 0.01) -> np.ndarray:
    return np.clip(0.5 + v / (2 * width), 0.0, 1.0)


def _cranium(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    r = np.hypot(x / 0.36, (y + 0.03) / 0.42)
    img = 0.35 * _soft(1.0 - r) + 0.55 * _soft(0.06 - np.abs(r - 0.95))
    for side in (-1, 1):  # orbits
        img -= 0.15 * _soft(0.05 - np.hypot(x - side * 0.12, y + 0.05))
    img += 0.35 * _soft(0.05 - np.abs(np.hypot(x / 0.25, (y - 0.3) / 0.15) - 1.0) / 4)  # mandible
    return img


def _spine(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    img = 0.3 * _soft(0.3 - np.abs(x), 0.05)
    n = int(rng.integers(5, 8))
    pitch = 0.9 / n
    phase = ((y + 0.45) / pitch) % 1.0
    body = _soft(0.08 - np.abs(x + 0.02 * np.sin(y * 4))) * _soft(0.38 - np.abs(phase - 0.5))
    return img + 0.5 * body * _soft(0.45 - np.abs(y))


def _hand(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    palm = _soft(0.17 - np.abs(x)) * _soft(y - 0.0) * _soft(0.42 - y)
    img = 0.3 * palm
    for k, fx in enumerate(np.linspace(-0.13, 0.13, 4)):
        top = -0.42 + 0.05 * abs(k - 1.5)
        finger = _soft(0.03 - np.abs(x - fx)) * _soft(y - top) * _soft(0.05 - y)
        joints = np.abs(((y - top) / 0.11) % 1.0 - 0.5) < 0.42
        img += 0.3 * finger + 0.35 * finger * joints * _soft(0.014 - np.abs(x - fx))
    thumb = _soft(0.03 - np.abs((x + 0.25) - 0.5 * (y - 0.1))) * _soft(y + 0.1) * _soft(0.3 - y)
    img += 0.3 * thumb
    for fx in np.linspace(-0.13, 0.13, 4):  # metacarpals
        img += 0.3 * _soft(0.014 - np.abs(x - fx)) * _soft(y - 0.05) * _soft(0.35 - y)
    return img


def _breast(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    side = rng.choice([-1.0, 1.0])
    edge = -side * w / (2.0 * h)
    r = np.hypot((x - edge) / 0.55, y / 0.42)
    tissue = _soft(1.0 - r, 0.03)
    texture = np.clip(smooth_noise(rng, (h, w), 5), -2, 2) * 0.08
    return tissue * (0.35 + 0.25 * _soft(0.6 - r, 0.2) + texture)


def _abdomen(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    body = _soft(0.42 - np.abs(x), 0.03)
    img = 0.45 * body + 0.35 * _soft(0.04 - np.abs(x)) * _soft(0.3 - y)  # lumbar spine
    gas = smooth_noise(rng, (h, w), 8) > 1.0
    img = np.where(gas & (body > 0.5), img - 0.25, img)
    img += 0.3 * _soft(0.05 - np.abs(np.hypot(x / 0.35, (y - 0.45) / 0.12) - 1.0) / 3)  # iliac crest
    return img


def _pelvis(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    img = 0.35 * _soft(0.6 - np.abs(x), 0.05)
    for side in (-1, 1):
        wing = np.hypot((x - side * 0.25) / 0.22, (y + 0.1) / 0.2)
        img += 0.3 * _soft(1.0 - wing, 0.05)
        head = np.hypot(x - side * 0.3, y - 0.18)
        img += 0.4 * _soft(0.07 - head)
        img += 0.35 * _soft(0.045 - np.abs(x - side * (0.3 + 0.3 * (y - 0.18)))) * _soft(y - 0.18)
    img -= 0.2 * _soft(0.08 - np.hypot(x / 1.4, y - 0.05))  # obturator / pelvic inlet
    return img


def _knee(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    y, x = _grid(h, w)
    leg = 0.3 * _soft(0.2 - np.abs(x), 0.04)
    femur = _soft(0.07 + 0.05 * _soft(y + 0.08, 0.05) - np.abs(x)) * _soft(-0.02 - y)
    tibia = _soft(0.065 + 0.05 * _soft(0.08 - y, 0.05) - np.abs(x)) * _soft(y - 0.02)
    patella = _soft(0.04 - np.hypot(x - 0.05, y + 0.05))
    return leg + 0.5 * femur + 0.5 * tibia + 0.2 * patella


def _chest(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return render({}, rng, CHEST_STYLE, h, w)


DRAW: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "cranium": _cranium,
    "spine": _spine,
    "upper extremity": _hand,
    "chest": _chest,
    "breast": _breast,
    "abdomen": _abdomen,
    "pelvis": _pelvis,
    "lower extremity": _knee,
}


def render_region(region: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One radiograph of `region` (a key of REGIONS), (h, w) in [0, 1], air dark."""
    if region not in DRAW:
        raise ValueError(f"unknown IRMA region {region!r}; known: {list(DRAW)}")
    img = DRAW[region](h, w, rng)
    if region != "chest":
        img = ndimage.gaussian_filter(img, 0.7)
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.03, 0.05)
    return np.clip(img + rng.normal(0.0, 0.02, img.shape), 0.0, 1.0)


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "irma")
    n_parts = {
        "train": max(1, int(round(N_TRAIN_PER_REGION * scale))),
        "test": max(1, int(round(N_TEST_PER_REGION * scale))),
    }
    files = {"train": ("ImageCLEFmed2009_train_codes.02.csv", "ImageCLEFmed2009_train.02"),
             "test": ("ImageCLEFmed2009_test_codes.03.csv", "ImageCLEFmed2009_test.03")}  # fmt: skip
    codes = sorted(f"1121-{d}-{a}-700" for a, _, ds in REGIONS.values() for d in ds)
    class_no = {c: i + 1 for i, c in enumerate(codes)}
    next_id = 1000
    counts = {}
    for split, (csv_name, folder) in files.items():
        lines = ["image_id;irma_code;05_class;06_class;07_class;08_class"]
        for region, (anat, (lo, hi), dirs) in REGIONS.items():
            for _ in range(n_parts[split]):
                irng = np.random.default_rng(child_seed(rng))
                next_id += int(irng.integers(1, 40))
                long_side = int(irng.integers(96, 193))
                aspect = irng.uniform(lo, hi)  # height / width
                if aspect >= 1:
                    h, w = long_side, int(round(long_side / aspect))
                else:
                    h, w = int(round(long_side * aspect)), long_side
                code = f"1121-{dirs[int(irng.integers(len(dirs)))]}-{anat}-700"
                save_png(render_region(region, irng, h, w), root / folder / folder / f"{next_id}.png")
                c = class_no[code]
                c05 = "\\N" if region == "breast" else str(c)  # the 2005 scheme had no mammograms
                lines.append(f"{next_id};{code};{c05};{c};{c};{c}")
        (root / csv_name).write_text("\n".join(lines) + "\n")
        counts[split] = len(lines) - 1
    return counts
