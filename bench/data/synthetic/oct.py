"""Synthetic Kermany OCT2017: retinal B-scans with class signatures, official layout.

Writes `root/OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg`.
Train classes follow the real proportions (CNV 37,205 / DME 11,348 / DRUSEN 8,616 /
NORMAL 26,315); test is balanced (the real test set has 250 per class). Patients are
random 7-digit ids, disjoint between train and test, with 1-6 scans each.

The B-scan renderer (`render_oct`) draws the retina as depth-parametrised layers between
the inner surface (with the foveal pit) and the RPE: vitreous dark, nerve-fibre layer
bright, nuclear layers dark, the ellipsoid zone and RPE bright, choroid below, then
multiplicative speckle. Class signatures: CNV = RPE elevation with sub-retinal fluid
and a hyperreflective lesion; DME = thickened retina with dark intraretinal cysts and a
flattened pit; DRUSEN = several small dome-shaped RPE elevations; NORMAL = none.
Output: float (H, W) in [0, 1].

`signal` (argument, default: the `anatomy.finding_signal` context) scales every class
signature: elevations, thickening and lesion sizes are multiplied by it and lesion
intensities are mixed in with weight min(1, signal); at 0 no class leaves any
signature (each still makes its own random draws), so the labels are invisible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.data.synthetic.files import child_seed, save_jpeg, site_rng

CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
TRAIN_FRACTIONS: dict[str, float] = {"CNV": 37205, "DME": 11348, "DRUSEN": 8616, "NORMAL": 26315}
N_TRAIN = 320  # images at scale 1.0
N_TEST_PER_CLASS = 50  # 200 test scans: balanced accuracy in steps of 0.005, not 0.0125 as with 80
WRITER_VERSION = 2  # 2: 50 test scans per class (was 20)
HEIGHT = 96
ASPECTS = (1.03, 1.55, 2.06)  # 496 x 512 / 768 / 1024 in the real data

# Reflectivity profile over normalised depth (0 = inner surface, 1 = RPE).
# (depth, reflectivity): vitreous, nerve fibres, ganglion/inner plexiform, inner nuclear,
# outer plexiform, outer nuclear, ellipsoid zone, RPE, choroid fading out.
_PROFILE = np.array([
    (-0.3, 0.04), (-0.01, 0.04), (0.0, 0.75), (0.08, 0.7), (0.1, 0.45), (0.3, 0.45), (0.32, 0.22),
    (0.42, 0.22), (0.44, 0.5), (0.5, 0.5), (0.52, 0.18), (0.8, 0.18), (0.84, 0.7), (0.86, 0.35),
    (0.9, 0.9), (1.0, 0.95), (1.04, 0.55), (1.5, 0.3), (3.0, 0.05),
])  # fmt: skip
_DEPTH, _REFL = _PROFILE[:, 0], _PROFILE[:, 1]


def _bump(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


def _toward(img: np.ndarray, value: np.ndarray | float, mix: float) -> np.ndarray | float:
    """`img` moved toward a lesion's intensity by `mix` (exactly the value at full strength)."""
    return value if mix == 1.0 else img + mix * (value - img)


def render_oct(cls: str, rng: np.random.Generator, height: int, width: int, signal: float | None = None) -> np.ndarray:
    """One B-scan of class `cls` (see module doc), shape (height, width), values in [0, 1]."""
    from bench.data.synthetic.anatomy import _SIGNAL

    if cls not in CLASSES:
        raise ValueError(f"unknown OCT class {cls!r}; known: {CLASSES}")
    s = _SIGNAL.get() if signal is None else float(signal)
    mix = min(1.0, s)  # weight of lesion intensities
    x = np.linspace(-1.0, 1.0, width)
    y = (np.arange(height)[:, None] + 0.5) / height
    fovea = rng.uniform(-0.25, 0.25)
    surface = rng.uniform(0.25, 0.35) + rng.uniform(-0.06, 0.06) * x + rng.uniform(0.0, 0.08) * x**2
    pit = rng.uniform(0.06, 0.1) * _bump(x, fovea, 0.18)
    thickness = rng.uniform(0.26, 0.32) * np.ones_like(x)
    rpe_lift = np.zeros_like(x)
    if cls == "DME":
        pit *= 0.3 if s == 1.0 else max(0.0, 1.0 - 0.7 * s)
        thickness = thickness + s * rng.uniform(0.06, 0.12) * _bump(x, fovea, 0.4)
    if cls == "CNV":
        c = fovea + rng.uniform(-0.15, 0.15)
        rpe_lift = s * rng.uniform(0.08, 0.14) * _bump(x, c, rng.uniform(0.12, 0.22))
    if cls == "DRUSEN":
        for _ in range(int(rng.integers(4, 8))):
            rpe_lift += s * rng.uniform(0.03, 0.06) * _bump(x, rng.uniform(-0.8, 0.8), rng.uniform(0.05, 0.09))
    top = surface + pit - rpe_lift * 0.6  # an elevated RPE pushes the retina up a bit
    rpe = surface + thickness - rpe_lift
    depth = (y - top[None, :]) / (rpe - top)[None, :]
    img = np.interp(depth, _DEPTH, _REFL)
    if cls == "CNV":  # sub-retinal fluid (dark) above a hyperreflective lesion over the lifted RPE
        lifted = rpe_lift[None, :] > 0.02
        fluid = lifted & (depth > 0.80) & (depth < 0.95)
        img = np.where(fluid, _toward(img, 0.06, mix), img)
        lesion = lifted & (depth >= 0.95) & (depth < 1.15)
        img = np.where(lesion, _toward(img, np.maximum(img, 0.85), mix), img)
    if cls == "DRUSEN":  # moderately reflective deposit under each elevation
        under = (rpe_lift[None, :] > 0.005) & (y > rpe[None, :]) & (y < (rpe + rpe_lift)[None, :])
        img = np.where(under, _toward(img, 0.6, mix), img)
    if cls == "DME":  # intraretinal cysts in the nuclear layers near the fovea
        xx = np.broadcast_to(x[None, :], img.shape)
        for _ in range(int(rng.integers(3, 7))):
            cx = fovea + rng.uniform(-0.35, 0.35)
            cd = rng.uniform(0.3, 0.7)
            r = rng.uniform(0.05, 0.1) * s**0.5
            if r <= 0:  # signal 0: no cysts
                continue
            cyst = ((xx - cx) / (r * 1.6)) ** 2 + ((depth - cd) / r) ** 2 < 1.0
            img = np.where(cyst, _toward(img, 0.05, mix), img)
    speckle = rng.gamma(4.0, 0.25, img.shape)
    img = ndimage.gaussian_filter(img * speckle, 0.6) + rng.normal(0.0, 0.02, img.shape)
    return np.clip(img, 0.0, 1.0)


def _patients(rng: np.random.Generator, taken: set[int], n_images: int) -> list[tuple[int, int]]:
    """(patient id, number of scans) pairs summing to `n_images`; ids unique across calls."""
    out = []
    left = n_images
    while left > 0:
        pid = int(rng.integers(1_000_000, 10_000_000))
        if pid in taken:
            continue
        taken.add(pid)
        k = min(left, int(rng.integers(1, 7)))
        out.append((pid, k))
        left -= k
    return out


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "oct")
    base = root / "OCT2017"
    total = sum(TRAIN_FRACTIONS.values())
    n_train = max(len(CLASSES), int(round(N_TRAIN * scale)))
    plan = {
        "train": {c: max(1, int(round(n_train * TRAIN_FRACTIONS[c] / total))) for c in CLASSES},
        "test": {c: max(1, int(round(N_TEST_PER_CLASS * scale))) for c in CLASSES},
    }
    taken: set[int] = set()
    counts: dict[str, int] = {}
    for split, per_class in plan.items():
        for cls, n in per_class.items():
            for pid, k in _patients(rng, taken, n):
                for i in range(1, k + 1):
                    irng = np.random.default_rng(child_seed(rng))
                    w = int(round(HEIGHT * ASPECTS[int(irng.integers(len(ASPECTS)))]))
                    save_jpeg(render_oct(cls, irng, HEIGHT, w), base / split / cls / f"{cls}-{pid}-{i}.jpeg")
            counts[f"{split}/{cls}"] = n
    return counts
