"""Synthetic COVIDx CT-3A: axial chest CT slices, official Kaggle layout.

Writes under `root`: `3A_images/*.png` (8-bit, 128x128, lung-window look) and
`{train,val,test}_COVIDx_CT-3A.txt` with ``<filename> <class> <xmin> <ymin> <xmax> <ymax>``,
the box being the body's bounding box measured on the slice (xmax/ymax exclusive).

Each patient is a short run of consecutive slices through the thorax. File names
follow three real sources so that patient-id parsing is exercised: CNCB
(``NCP_<patient>_<scan>_<slice>.png`` for COVID-19, ``CP_`` pneumonia, ``Normal_``
normal), LIDC-IDRI (normal) and ``volume-covid19-A-<n>_<slice>.png`` (COVID-19).
Splits are patient-disjoint, ~70/15/15 per class.

Class signatures (`render_ct`): Normal = clear lungs with vessels; Pneumonia = dense
lobar consolidation, mostly one lung, posterior; COVID-19 = bilateral, peripheral
(subpleural) ground-glass patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.data.synthetic.anatomy import smooth_noise
from bench.data.synthetic.files import child_seed, save_png, site_rng

CLASSES: tuple[str, ...] = ("Normal", "Pneumonia", "COVID-19")
SIZE = 128
PATIENTS_PER_CLASS = 12  # at scale 1.0; ~10 slices each -> ~360 slices
SPLIT_SHARES = (("train", 0.7), ("val", 0.15), ("test", 0.15))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def render_ct(cls: str, anatomy: dict[str, float], z: float, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One axial slice, shape (size, size), values in [0, 1] (air 0, bone ~1).

    `anatomy` is the patient (`sample_ct_anatomy`); `z` in [0, 1] runs from the lung
    apices to the bases (lungs grow, then the liver dome rises on the right).
    """
    if cls not in CLASSES:
        raise ValueError(f"unknown COVIDx class {cls!r}; known: {CLASSES}")
    c = (np.arange(size) + 0.5) / size - 0.5
    y, x = np.meshgrid(c, c, indexing="ij")
    a = anatomy
    body = _ellipse(x, y, a["cx"], a["cy"], a["rx"], a["ry"]) < 1.0
    img = np.where(body, 0.42, 0.0)
    img = np.where(body & (_ellipse(x, y, a["cx"], a["cy"], a["rx"] * 0.93, a["ry"] * 0.9) >= 1.0), 0.34, img)  # fat
    grow = np.sin(np.pi * (0.25 + 0.6 * z))
    lungs = np.zeros_like(img, dtype=bool)
    for side in (-1, 1):
        lx = a["cx"] + side * a["rx"] * 0.48
        lung = _ellipse(x, y, lx, a["cy"] - 0.01, a["rx"] * 0.36 * grow, a["ry"] * 0.7 * grow) < 1.0
        if side == -1 and z > 0.75:  # liver dome under the right lung (image left)
            lung &= _ellipse(x, y, lx, a["cy"] + 0.05, a["rx"] * 0.4, a["ry"] * (z - 0.7) * 2.0) >= 1.0
        lungs |= lung
    vessels = np.abs(smooth_noise(rng, img.shape, 2.5)) < 0.12
    img = np.where(lungs, np.where(vessels, 0.3, 0.04), img)
    heart = _ellipse(x, y, a["cx"] + 0.04, a["cy"] - 0.08, 0.13 * (0.6 + 0.5 * z), 0.1 * (0.6 + 0.5 * z)) < 1.0
    img = np.where(heart & body, 0.5, img)
    spine = _ellipse(x, y, a["cx"], a["cy"] + a["ry"] * 0.72, 0.05, 0.045)
    img = np.where(spine < 1.0, np.where(spine < 0.55, 0.55, 0.95), img)
    for k in range(12):  # ribs around the periphery
        t = np.pi * (0.15 + 0.7 * k / 11)
        for side in (-1, 1):
            rx = a["cx"] + side * a["rx"] * 0.9 * np.sin(t)
            ry = a["cy"] - a["ry"] * 0.85 * np.cos(t)
            img = np.where(_ellipse(x, y, rx, ry, 0.018, 0.012) < 1.0, 0.9, img)
    table = np.abs(y - (a["cy"] + a["ry"] + 0.06)) < 0.008
    img = np.where(table & (np.abs(x - a["cx"]) < 0.45), 0.6, img)
    if cls == "Pneumonia":
        side = a["pneumonia_side"]
        px = a["cx"] + side * a["rx"] * 0.5
        patch = _ellipse(x, y, px, a["cy"] + 0.08, 0.13, 0.12) + 0.4 * smooth_noise(rng, img.shape, 6) < 1.0
        bronchi = np.abs(smooth_noise(rng, img.shape, 3.0)) < 0.08
        img = np.where(lungs & patch, np.where(bronchi, 0.12, 0.46), img)
    if cls == "COVID-19":
        rim = lungs & ~ndimage.binary_erosion(lungs, iterations=max(2, size // 14))
        blobs = smooth_noise(rng, img.shape, 7) > 0.35
        ggo = rim & blobs
        img = np.where(ggo, np.maximum(img, 0.2 + 0.05 * smooth_noise(rng, img.shape, 2)), img)
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0.0, 0.015, img.shape)
    return np.clip(img, 0.0, 1.0)


def sample_ct_anatomy(rng: np.random.Generator) -> dict[str, float]:
    """One patient's body ellipse (fractions of the field of view) and lesion side."""
    return {
        "cx": rng.normal(0.0, 0.02),
        "cy": rng.normal(0.0, 0.02),
        "rx": rng.uniform(0.36, 0.44),
        "ry": rng.uniform(0.26, 0.32),
        "pneumonia_side": float(rng.choice([-1.0, 1.0])),
    }


def body_box(img: np.ndarray) -> tuple[int, int, int, int]:
    """(xmin, ymin, xmax, ymax) of pixels brighter than 0.1, max exclusive; the scanner
    table is excluded by keeping the largest connected bright component."""
    labels, n = ndimage.label(img > 0.1)
    if n == 0:
        return 0, 0, img.shape[1], img.shape[0]
    largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(img), labels, index=range(1, n + 1))))
    ys, xs = np.nonzero(labels == largest)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _file_name(cls: str, source: str, patient: int, scan: int, k: int) -> str:
    if source == "cncb":
        prefix = {"Normal": "Normal", "Pneumonia": "CP", "COVID-19": "NCP"}[cls]
        return f"{prefix}_{patient}_{scan}_{k:04d}.png"
    if source == "lidc":
        return f"LIDC-IDRI-{patient:04d}-1.3.6.1.4.1.14519.5.2.1.6279.6001.{scan}-{k:04d}.png"
    return f"volume-covid19-A-{patient:04d}_ct-{k:03d}.png"


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "covidx")
    images = root / "3A_images"
    lines: dict[str, list[str]] = {s: [] for s, _ in SPLIT_SHARES}
    n_per_class = max(3, int(round(PATIENTS_PER_CLASS * scale)))
    patient_no = 0
    for label, cls in enumerate(CLASSES):
        order = rng.permutation(n_per_class)
        cut1 = max(1, int(round(SPLIT_SHARES[0][1] * n_per_class)))
        cut2 = cut1 + max(1, int(round(SPLIT_SHARES[1][1] * n_per_class)))
        split_of = {int(i): ("train" if r < cut1 else "val" if r < cut2 else "test") for r, i in enumerate(order)}
        for i in range(n_per_class):
            patient_no += 1
            prng = np.random.default_rng(child_seed(rng))
            source = "cncb" if i % 2 == 0 else ("lidc" if cls == "Normal" else "covid19a" if cls == "COVID-19" else "cncb")
            anatomy = sample_ct_anatomy(prng)
            scan = int(prng.integers(1000, 9999))
            n_slices = int(prng.integers(6, 15))
            z0 = prng.uniform(0.1, 0.9 - 0.04 * n_slices)
            for k in range(n_slices):
                img = render_ct(cls, anatomy, z0 + 0.04 * k, np.random.default_rng(child_seed(prng)))
                name = _file_name(cls, source, patient_no, scan, k)
                save_png(img, images / name)
                box = body_box(img)
                lines[split_of[i]].append(f"{name} {label} {box[0]} {box[1]} {box[2]} {box[3]}")
    for split, rows in lines.items():
        (root / f"{split}_COVIDx_CT-3A.txt").write_text("\n".join(rows) + "\n")
    return {f"{split}_slices": len(rows) for split, rows in lines.items()}
