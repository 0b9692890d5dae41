"""Synthetic NIH ChestX-ray14 in the official Box layout.

Writes under `root`:
    images/%08d_%03d.png            8-bit, square (NIH is 1024x1024; here 128x128)
    Data_Entry_2017_v2020.csv        the real header (11 fields once pandas splits it)
    train_val_list.txt, test_list.txt   patient-disjoint

Label prevalences follow the Krones paper's Table 11 (train and test columns; the
test split really is sicker), raised to at least `MIN_PREVALENCE` so that a few
hundred images still contain every finding in every split. A patient keeps one
anatomy across follow-ups; each follow-up keeps the previous labels with
probability `PERSIST`, else draws new ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.data.labels import NIH14
from bench.data.sites.nih import CANONICAL_TO_NIH, CSV_HEADER, NO_FINDING
from bench.data.synthetic.anatomy import SiteStyle, jitter_anatomy, render, sample_anatomy
from bench.data.synthetic.files import child_seed, save_png, site_rng

# Krones Table 11, % of scans -> fraction.
TRAIN_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.096, "Cardiomegaly": 0.020, "Consolidation": 0.033, "Edema": 0.016,
    "Pleural Effusion": 0.102, "Emphysema": 0.017, "Fibrosis": 0.014, "Hernia": 0.002,
    "Infiltration": 0.160, "Mass": 0.047, "Nodule": 0.054, "Pleural Thickening": 0.026,
    "Pneumonia": 0.010, "Pneumothorax": 0.030,
}  # fmt: skip
TEST_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.128, "Cardiomegaly": 0.042, "Consolidation": 0.071, "Edema": 0.036,
    "Pleural Effusion": 0.182, "Emphysema": 0.043, "Fibrosis": 0.017, "Hernia": 0.003,
    "Infiltration": 0.239, "Mass": 0.068, "Nodule": 0.063, "Pleural Thickening": 0.045,
    "Pneumonia": 0.022, "Pneumothorax": 0.104,
}  # fmt: skip
MIN_PREVALENCE = 0.03
PERSIST = 0.6
TEST_PATIENT_FRACTION = 0.22  # NIH: 25,596 of 112,120 images are test
N_PATIENTS = 250  # at scale 1.0; ~3.2 images per patient -> ~800 images

STYLE = SiteStyle(
    name="nih",
    gamma=1.0,
    contrast=0.95,
    brightness=0.03,
    noise=0.015,
    blur=0.4,
    base_size=(128, 128),
    aspect_range=(1.0, 1.0),
    prevalence=TRAIN_PREVALENCE,
    correlation=0.3,
    images_per_patient=(1, 10),
    ap_fraction=0.40,  # NIH: PA 67,310 / AP 44,810
)
TEST_STYLE = replace(STYLE, prevalence=TEST_PREVALENCE)


def finding_labels(labels: dict[str, bool]) -> str:
    """Canonical booleans -> NIH `Finding Labels` string (sorted tokens, or No Finding)."""
    tokens = sorted(CANONICAL_TO_NIH[n] for n in NIH14 if labels.get(n, False))
    return "|".join(tokens) if tokens else NO_FINDING


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "nih")
    n_patients = max(4, int(round(N_PATIENTS * scale)))
    order = rng.permutation(n_patients)
    test_patients = set((order[: max(1, int(round(TEST_PATIENT_FRACTION * n_patients)))] + 1).tolist())
    lines = [CSV_HEADER]
    trainval: list[str] = []
    test: list[str] = []
    lo, hi = STYLE.images_per_patient
    for pid in range(1, n_patients + 1):
        prng = np.random.default_rng(child_seed(rng))
        style = TEST_STYLE if pid in test_patients else STYLE
        anatomy = sample_anatomy(prng)
        n_images = int(np.clip(1 + prng.poisson(2.2), lo, hi))
        age = int(np.clip(round(prng.normal(46.6, 16.5)), 1, 95))
        sex = "F" if prng.random() < 0.44 else "M"
        labels = style.sample_labels(prng, MIN_PREVALENCE)
        for follow_up in range(n_images):
            if follow_up and prng.random() > PERSIST:
                labels = style.sample_labels(prng, MIN_PREVALENCE)
            view = "AP" if prng.random() < style.ap_fraction else "PA"
            h, w = style.image_size(prng)
            img = render(labels, np.random.default_rng(child_seed(prng)), style, h, w,
                         anatomy=jitter_anatomy(anatomy, prng), view=view)  # fmt: skip
            name = f"{pid:08d}_{follow_up:03d}.png"
            save_png(img, root / "images" / name)
            orig_w, orig_h = int(prng.integers(2000, 3000)), int(prng.integers(2000, 3000))
            lines.append(
                f"{name},{finding_labels(labels)},{follow_up},{pid},{age},{sex},{view},"
                f"{orig_w},{orig_h},0.143,0.143"
            )
            (test if pid in test_patients else trainval).append(name)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(sorted(trainval)) + "\n")
    (root / "test_list.txt").write_text("\n".join(sorted(test)) + "\n")
    return {"images": len(trainval) + len(test), "patients": n_patients, "train_val": len(trainval), "test": len(test)}
