"""Synthetic CheXpert-v1.0-small: hand-labelled `valid` plus a small auto-labelled `train`.

Writes under `root/CheXpert-v1.0-small/`:
    valid.csv, valid/patient64541 ... patient64740/study1/view{1,2}_{frontal,lateral}.jpg
    train.csv, train/patient00001/studyN/viewK_{frontal,lateral}.jpg

valid matches the real counts exactly: 200 patients, one study each, 234 images of
which 202 are frontal (166 studies with one frontal, 32 with frontal + lateral, 2 with
two frontals); labels 0/1 drawn from the Krones paper's Table 10 validation column.
train (~300 images at scale 1) draws *true* findings from Table 10's train-like
column, then encodes them the way the CheXpert labeller does: a positive is written
1.0 (75 %), -1.0 (20 %) or blank; a negative blank (70 %), 0.0 (22 %) or -1.0.
`No Finding` is 1.0 when no pathology is positive (blank otherwise; 0.0 in valid).
Images are JPEG with a different intensity curve, more blur and variable aspect.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.sites.chexpert import CHEXPERT_LABELS, META_COLUMNS
from bench.data.synthetic.anatomy import SiteStyle, jitter_anatomy, render, sample_anatomy
from bench.data.synthetic.files import child_seed, save_jpeg, site_rng

RELEASE = "CheXpert-v1.0-small"
# Krones Table 10 (% of scans -> fraction): validation column, and the train-like
# distribution of the test data of [13].
VALID_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.34, "Cardiomegaly": 0.29, "Consolidation": 0.14, "Edema": 0.19,
    "Enlarged Cardiomediastinum": 0.47, "Fracture": 0.0, "Lung Lesion": 0.0, "Lung Opacity": 0.54,
    "Pleural Effusion": 0.29, "Pleural Other": 0.0, "Pneumonia": 0.03, "Pneumothorax": 0.03,
    "Support Devices": 0.46,
}  # fmt: skip
TRAIN_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.15, "Cardiomegaly": 0.13, "Consolidation": 0.07, "Edema": 0.26,
    "Enlarged Cardiomediastinum": 0.05, "Fracture": 0.04, "Lung Lesion": 0.04, "Lung Opacity": 0.51,
    "Pleural Effusion": 0.41, "Pleural Other": 0.01, "Pneumonia": 0.03, "Pneumothorax": 0.09,
    "Support Devices": 0.55,
}  # fmt: skip
PATHOLOGIES = tuple(n for n in CHEXPERT_LABELS if n not in ("No Finding", "Support Devices"))
VALID_FIRST_PATIENT = 64541
N_VALID_PATIENTS = 200
N_VALID_WITH_LATERAL = 32
N_VALID_TWO_FRONTALS = 2
N_TRAIN_PATIENTS = 120  # at scale 1.0 -> ~300 images

STYLE = SiteStyle(
    name="chexpert",
    gamma=0.8,
    contrast=1.05,
    brightness=0.0,
    noise=0.02,
    blur=0.8,
    base_size=(144, 144),
    aspect_range=(0.78, 1.1),
    size_jitter=0.1,
    prevalence=VALID_PREVALENCE,
    correlation=0.3,
    images_per_patient=(1, 4),
    ap_fraction=0.85,  # CheXpert frontal: AP 161,590 / PA 29,420
    zoom=1.08,  # tighter field of view than NIH (portable AP films)
)
TRAIN_STYLE = replace(STYLE, prevalence=TRAIN_PREVALENCE)


def _size(style: SiteStyle, rng: np.random.Generator) -> tuple[int, int]:
    h, w = style.image_size(rng)
    return int(np.clip(h, 112, 160)), int(np.clip(w, 112, 160))


def _encode_train(truth: bool, rng: np.random.Generator) -> float:
    """What the report labeller writes for a true/false finding (NaN = blank)."""
    r = rng.random()
    if truth:
        return 1.0 if r < 0.75 else (-1.0 if r < 0.95 else np.nan)
    return np.nan if r < 0.70 else (0.0 if r < 0.92 else -1.0)


def _image(root: Path, rel: str, labels: dict[str, bool], anatomy, style: SiteStyle, view: str, rng) -> None:
    h, w = _size(style, rng)
    img = render(labels, np.random.default_rng(child_seed(rng)), style, h, w,
                 anatomy=jitter_anatomy(anatomy, rng), view=view)  # fmt: skip
    save_jpeg(img, root / rel)


def _row(rel: str, sex: str, age: int, view: str, values: dict[str, float]) -> dict:
    frontal = view != "LL"
    return {
        "Path": f"{RELEASE}/{rel}",
        "Sex": sex,
        "Age": age,
        "Frontal/Lateral": "Frontal" if frontal else "Lateral",
        "AP/PA": view if frontal else np.nan,
        **values,
    }


def _write_valid(release: Path, rng: np.random.Generator) -> list[dict]:
    rows = []
    kinds = ["one"] * (N_VALID_PATIENTS - N_VALID_WITH_LATERAL - N_VALID_TWO_FRONTALS)
    kinds += ["lateral"] * N_VALID_WITH_LATERAL + ["two"] * N_VALID_TWO_FRONTALS
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    for i, kind in enumerate(kinds):
        prng = np.random.default_rng(child_seed(rng))
        pid = f"patient{VALID_FIRST_PATIENT + i:05d}"
        anatomy = sample_anatomy(prng)
        labels = STYLE.sample_labels(prng)
        sex, age = ("Female" if prng.random() < 0.45 else "Male"), int(np.clip(round(prng.normal(61, 16)), 18, 90))
        values = {n: float(labels.get(n, False)) for n in PATHOLOGIES + ("Support Devices",)}
        values["No Finding"] = float(not any(labels.get(n, False) for n in PATHOLOGIES))
        frontal = "AP" if prng.random() < STYLE.ap_fraction else "PA"
        views = {"one": [frontal], "lateral": [frontal, "LL"], "two": [frontal, frontal]}[kind]
        for k, view in enumerate(views, start=1):
            rel = f"valid/{pid}/study1/view{k}_{'lateral' if view == 'LL' else 'frontal'}.jpg"
            _image(release, rel, labels, anatomy, STYLE, view, prng)
            rows.append(_row(rel, sex, age, view, values))
    return rows


def _write_train(release: Path, rng: np.random.Generator, n_patients: int) -> list[dict]:
    rows = []
    for i in range(1, n_patients + 1):
        prng = np.random.default_rng(child_seed(rng))
        pid = f"patient{i:05d}"
        anatomy = sample_anatomy(prng)
        sex, age = ("Female" if prng.random() < 0.42 else "Male"), int(np.clip(round(prng.normal(63, 17)), 18, 90))
        for study in range(1, 1 + int(np.clip(1 + prng.poisson(1.0), 1, 4))):
            labels = TRAIN_STYLE.sample_labels(prng)
            values = {n: _encode_train(labels.get(n, False), prng) for n in PATHOLOGIES + ("Support Devices",)}
            values["No Finding"] = np.nan if any(labels.get(n, False) for n in PATHOLOGIES) else 1.0
            views = ["AP" if prng.random() < STYLE.ap_fraction else "PA"]
            if prng.random() < 0.15:
                views.append("LL")
            for k, view in enumerate(views, start=1):
                rel = f"train/{pid}/study{study}/view{k}_{'lateral' if view == 'LL' else 'frontal'}.jpg"
                _image(release, rel, labels, anatomy, TRAIN_STYLE, view, prng)
                rows.append(_row(rel, sex, age, view, values))
    return rows


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "chexpert")
    release = root / RELEASE
    valid = _write_valid(release, np.random.default_rng(child_seed(rng)))
    train = _write_train(release, np.random.default_rng(child_seed(rng)), max(2, int(round(N_TRAIN_PATIENTS * scale))))
    columns = list(META_COLUMNS) + list(CHEXPERT_LABELS)
    pd.DataFrame(valid, columns=columns).to_csv(release / "valid.csv", index=False)
    pd.DataFrame(train, columns=columns).to_csv(release / "train.csv", index=False)
    return {"valid_images": len(valid), "train_images": len(train)}
