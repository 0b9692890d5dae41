"""Synthetic PadChest in the official layout: the 36-column labels CSV and 16-bit PNGs.

Writes under `root`:
    PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv   the real 36 columns
    <ImageDir>/<ImageID>                                    16-bit greyscale PNGs

Pixels are 16-bit PNG containers holding 12-bit (most) or 10-bit detector values,
as the real release does (`BitsStored_DICOM` says which), so ``read_image``'s
default ``x / 65535`` gives the same dark images the real files give.

Structure: patients have 1-3 studies; a study is one report (one ``Labels`` list,
one ``MethodLabel``) and one frontal image, often plus a lateral (``L``). Frontal
projections follow the real mix (PA, AP_horizontal, AP). Folder ``0`` holds only
physician-labelled studies, as in the real archive. ``Labels`` strings mimic the
real quirks: tokens with a leading space, subtype tokens (``laminar atelectasis``,
``loculated pleural effusion``), distractor tokens that must not map to a target
(``pericardial effusion``, ``subcutaneous emphysema``, ``heart insufficiency``), one
``['']`` row and one null row. One of the real release's known truncated files
(`KNOWN_BAD_IMAGES`) is written, truncated, and listed in the CSV, so the adapter's
skip list and the cache's corrupt-image policy meet a real case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.data.labels import NIH14
from bench.data.sites.padchest import CSV_NAME, KNOWN_BAD_IMAGES, METHOD_PROJECTION, TOKEN_TO_LABEL
from bench.data.synthetic.anatomy import SiteStyle, jitter_anatomy, render, sample_anatomy
from bench.data.synthetic.files import child_seed, site_rng, to_uint16

# Fraction of images positive in the real CSV (all 160,758 labelled rows, this
# package's token table), floored at MIN_PREVALENCE so small sets hold every finding.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.056, "Cardiomegaly": 0.093, "Pleural Effusion": 0.062, "Infiltration": 0.044,
    "Mass": 0.007, "Nodule": 0.025, "Pneumonia": 0.051, "Pneumothorax": 0.004, "Consolidation": 0.016,
    "Edema": 0.009, "Emphysema": 0.010, "Fibrosis": 0.008, "Pleural Thickening": 0.032, "Hernia": 0.015,
}  # fmt: skip
MIN_PREVALENCE = 0.04
N_PATIENTS = 150  # at scale 1.0; ~2.6 images per patient
N_DIRS = 3

STYLE = SiteStyle(
    name="padchest",
    gamma=1.15,
    contrast=0.9,
    brightness=0.04,
    noise=0.012,
    blur=0.6,
    base_size=(144, 144),
    aspect_range=(0.85, 1.15),
    size_jitter=0.15,
    prevalence=PREVALENCE,
    correlation=0.25,
    images_per_patient=(1, 6),
    ap_fraction=0.15,
)

# Frontal projections (real: PA 91,728 / AP_horizontal 14,346 / AP 4,559) and the
# renderer's view for each.
FRONTAL = (("PA", 0.83), ("AP_horizontal", 0.13), ("AP", 0.04))
RENDER_VIEW = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LL"}
LATERAL_PROBABILITY = 0.55

# For each label, the tokens that express it and how often (the real CSV's mix).
_TOKEN_CHOICES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "Atelectasis": (
        ("laminar atelectasis", "atelectasis", "lobar atelectasis", "segmental atelectasis",
         "atelectasis basal", "total atelectasis", "round atelectasis"),
        (0.56, 0.31, 0.08, 0.02, 0.01, 0.01, 0.01),
    ),
    "Pleural Effusion": (
        ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion"),
        (0.9, 0.07, 0.03),
    ),
}  # fmt: skip
DISTRACTORS: tuple[str, ...] = (
    "pericardial effusion", "subcutaneous emphysema", "heart insufficiency", "air bronchogram",
    "costophrenic angle blunting", "COPD signs", "aortic elongation", "scoliosis", "unchanged",
)  # fmt: skip

COLUMNS: tuple[str, ...] = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM",
    "Manufacturer_DICOM", "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM", "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM",
    "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM",
    "ExposureInuAs_DICOM", "ExposureTime", "RelativeXRayExposure_DICOM", "ReportID", "Report",
    "MethodLabel", "Labels", "Localizations", "LabelsLocalizationsBySentence", "labelCUIS",
    "LocalizationsCUIS",
)  # fmt: skip  (the real CSV also has a leading unnamed index column)

_LABEL_TOKEN = {label: token for token, label in TOKEN_TO_LABEL.items() if token == label.lower()}
_LABEL_TOKEN.update({"Infiltration": "infiltrates", "Mass": "pulmonary mass", "Fibrosis": "pulmonary fibrosis",
                     "Edema": "pulmonary edema", "Hernia": "hiatal hernia", "Pleural Thickening": "apical pleural thickening"})


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def _suffix(rng: np.random.Generator) -> str:
    return "".join("abcdefghijklmnopqrstuvwxyz0123456789"[i] for i in rng.integers(0, 36, size=6))


def label_tokens(labels: dict[str, bool], rng: np.random.Generator) -> list[str]:
    """PadChest tokens for a study's canonical labels, with distractors ('normal' if none)."""
    tokens: list[str] = []
    for name in NIH14:
        if not labels.get(name, False):
            continue
        if name in _TOKEN_CHOICES:
            options, weights = _TOKEN_CHOICES[name]
            tokens.append(str(rng.choice(options, p=np.asarray(weights) / sum(weights))))
        else:
            tokens.append(_LABEL_TOKEN[name])
    for _ in range(int(rng.integers(0, 3))):
        tokens.append(str(rng.choice(DISTRACTORS)))
    if not any(TOKEN_TO_LABEL.get(t) for t in tokens) and rng.random() < 0.7:
        tokens = ["normal"] + [t for t in tokens if t == "unchanged"]
    return list(dict.fromkeys(tokens))


def labels_cell(tokens: list[str], rng: np.random.Generator) -> str:
    """The CSV's list-literal string; later tokens sometimes carry a leading space."""
    shown = [t if i == 0 or rng.random() < 0.7 else " " + t for i, t in enumerate(tokens)]
    return "[" + ", ".join(repr(t) for t in shown) + "]"


def save_png16(values: np.ndarray, path: Path) -> None:
    """Write a 16-bit greyscale PNG from a uint16 array (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path, format="PNG", optimize=False, compress_level=6)


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root`; returns counts for the completion marker."""
    rng = site_rng(seed, "padchest")
    root = Path(root)
    n_patients = max(4, int(round(N_PATIENTS * scale)))
    rows: list[dict[str, object]] = []
    for _ in range(n_patients):
        prng = np.random.default_rng(child_seed(rng))
        anatomy = sample_anatomy(prng)
        patient_id = _digits(prng, 38).lstrip("0") or "1"
        birth = int(prng.integers(1925, 2005))
        sex = "F" if prng.random() < 0.5 else "M"
        for _study in range(int(prng.integers(1, 4))):
            labels = STYLE.sample_labels(prng, MIN_PREVALENCE)
            image_dir = int(prng.integers(0, N_DIRS))
            physician = image_dir == 0 or prng.random() < 0.2
            tokens = label_tokens(labels, prng)
            cell = labels_cell(tokens, prng)
            year = int(prng.integers(max(2009, birth + 1), 2018))
            date = year * 10000 + int(prng.integers(1, 13)) * 100 + int(prng.integers(1, 29))
            study_id = _digits(prng, 32)
            report_id = int(prng.integers(1, 10**7))
            bits = 12 if prng.random() < 0.9 else 10
            names = [str(prng.choice([p for p, _ in FRONTAL], p=[w for _, w in FRONTAL]))]
            if prng.random() < LATERAL_PROBABILITY:
                names.append("L")
            for projection in names:
                h, w = STYLE.image_size(prng)
                img = render(labels, np.random.default_rng(child_seed(prng)), STYLE, h, w,
                             anatomy=jitter_anatomy(anatomy, prng), view=RENDER_VIEW[projection])  # fmt: skip
                image_id = f"{_digits(prng, 38)}_{_suffix(prng)}.png"
                save_png16(to_uint16(img, bits), root / str(image_dir) / image_id)
                manual = prng.random() < 0.9
                rows.append({
                    "ImageID": image_id, "ImageDir": image_dir, "StudyDate_DICOM": date, "StudyID": study_id,
                    "PatientID": patient_id, "PatientBirth": float(birth), "PatientSex_DICOM": sex,
                    "ViewPosition_DICOM": {"L": "LATERAL", "AP_horizontal": "AP"}.get(projection, projection),
                    "Projection": projection,
                    "MethodProjection": METHOD_PROJECTION["manual" if manual else "model"],
                    "Pediatric": "No", "Modality_DICOM": "CR" if bits == 12 else "DX",
                    "Manufacturer_DICOM": "PhilipsMedicalSystems" if bits == 12 else "ImagingDynamicsCompanyLtd",
                    "PhotometricInterpretation_DICOM": "MONOCHROME2", "PixelRepresentation_DICOM": 0,
                    "PixelAspectRatio_DICOM": "", "SpatialResolution_DICOM": 0.143, "BitsStored_DICOM": bits,
                    "WindowCenter_DICOM": float(2 ** (bits - 1)), "WindowWidth_DICOM": float(2**bits),
                    "Rows_DICOM": h, "Columns_DICOM": w, "XRayTubeCurrent_DICOM": 250.0,
                    "Exposure_DICOM": 4.0, "ExposureInuAs_DICOM": 4000.0, "ExposureTime": 16.0,
                    "RelativeXRayExposure_DICOM": np.nan, "ReportID": report_id,
                    "Report": " ".join(tokens) + ".", "MethodLabel": "Physician" if physician else "RNN_model",
                    "Labels": cell, "Localizations": "[]", "LabelsLocalizationsBySentence": "[]",
                    "labelCUIS": "[]", "LocalizationsCUIS": "[]",
                })  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # The real CSV's quirks: rows whose Labels hold only an empty token, or nothing.
    if len(frame) >= 4:
        frame.loc[len(frame) - 2, "Labels"] = "['']"
        frame.loc[len(frame) - 1, "Labels"] = np.nan
    frame = pd.concat([frame, _known_bad_row(root, frame.iloc[0])], ignore_index=True)
    frame.to_csv(root / CSV_NAME, index=True)  # leading unnamed index column, like the release
    return {"images": len(frame), "patients": n_patients, "known_bad": 1}


def _known_bad_row(root: Path, template: pd.Series) -> pd.DataFrame:
    """A row + file for one of the release's truncated images: the file is cut short."""
    name = next(n for n, why in KNOWN_BAD_IMAGES.items() if why == "image file is truncated")
    image_dir = N_DIRS - 1
    path = root / str(image_dir) / name
    values = np.full((64, 64), 2048, dtype=np.uint16)
    save_png16(values, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    row = template.to_dict()
    row.update({"ImageID": name, "ImageDir": image_dir, "Rows_DICOM": 64, "Columns_DICOM": 64, "Labels": "['normal']"})
    return pd.DataFrame([row], columns=list(COLUMNS))
