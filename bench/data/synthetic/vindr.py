"""Synthetic VinDr-CXR in the PhysioNet layout: real DICOM files and the label CSVs.

Writes under `root`:
    train/<image_id>.dicom, test/<image_id>.dicom       DICOM (Explicit VR Little Endian)
    annotations/image_labels_train.csv                  image_id, rad_id, 28 labels (3 rows/image)
    annotations/image_labels_test.csv                   image_id, 28 labels (consensus)

Pixels: 12 bits stored in 16 allocated, mostly MONOCHROME1 (larger = darker, so the
stored values are the inverted rendering), some MONOCHROME2, as the real set mixes
both. Each image uses only part of the 12-bit range (a random offset and gain, as
detectors do) and carries a VOI window (Window Center/Width) spanning exactly that
part, so `read_image` (modality LUT -> window -> MONOCHROME1 inversion) recovers the
rendering up to quantisation.

Labels: the true findings are drawn from `STYLE` and rendered. Test rows are the
truth (the consensus). Each train image gets three readers from R1..R17; a reader
misses a true finding with probability `MISS` and reports a false one with
probability `FALSE_POSITIVE`, so ``any`` and ``majority`` aggregation differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.sites.vindr import LABEL_FILES, TEST_OTHER_COLUMN, VINDR_COLUMNS, VINDR_TO_LABEL
from bench.data.synthetic.anatomy import SiteStyle, render, sample_anatomy
from bench.data.synthetic.files import child_seed, site_rng

# Krones Table 13 (VinDr test) for the five targets; the rest from the train readers
# (images marked by >= 2 of 3). Floored at MIN_PREVALENCE so every label occurs.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.029, "Cardiomegaly": 0.103, "Consolidation": 0.032, "Edema": 0.0,
    "Pleural Effusion": 0.037, "Infiltration": 0.016, "Pneumothorax": 0.004, "Emphysema": 0.005,
    "Fibrosis": 0.068, "Pleural Thickening": 0.059, "Pneumonia": 0.03, "Nodule": 0.015, "Mass": 0.012,
    "Lung Opacity": 0.036,
}  # fmt: skip
MIN_PREVALENCE = 0.04
N_TRAIN = 120  # images at scale 1.0
N_TEST = 60
MISS = 0.3
FALSE_POSITIVE = 0.01
READERS = tuple(f"R{i}" for i in range(1, 18))
MONOCHROME1_FRACTION = 0.8
BITS_STORED = 12

STYLE = SiteStyle(
    name="vindr",
    gamma=0.9,
    contrast=1.0,
    brightness=0.0,
    noise=0.01,
    blur=0.8,
    base_size=(160, 160),
    aspect_range=(0.8, 1.0),
    size_jitter=0.1,
    prevalence=PREVALENCE,
    correlation=0.25,
    images_per_patient=(1, 1),
    ap_fraction=0.0,
)

# VinDr column -> the rendered finding that stands for it.
_RENDERED: dict[str, tuple[str, ...]] = {
    **{col: (label,) for col, label in VINDR_TO_LABEL.items()},
    "Nodule/Mass": ("Nodule", "Mass"),
    "Lung Opacity": ("Lung Opacity",),
}

DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def vindr_row(truth: dict[str, bool]) -> dict[str, int]:
    """The 28 VinDr columns (0/1) for rendered findings; `No finding` when nothing else."""
    row = {col: int(any(truth.get(n, False) for n in _RENDERED.get(col, ()))) for col in VINDR_COLUMNS}
    row["No finding"] = int(not any(v for c, v in row.items() if c != "No finding"))
    return row


def reader_row(truth_row: dict[str, int], rng: np.random.Generator) -> dict[str, int]:
    """One radiologist's reading of an image with true columns `truth_row`."""
    out = {}
    for col in VINDR_COLUMNS[:-1]:
        if truth_row[col]:
            out[col] = int(rng.random() >= MISS)
        else:
            out[col] = int(rng.random() < FALSE_POSITIVE)
    out["No finding"] = int(not any(out.values()))
    return out


def _uid(image_id: str, part: str) -> str:
    """A deterministic DICOM UID (2.25.<128-bit integer>) from the image id."""
    digest = hashlib.sha256(f"vindr-synthetic/{image_id}/{part}".encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def save_dicom(img: np.ndarray, path: Path, image_id: str, rng: np.random.Generator) -> dict[str, object]:
    """Write a rendering (float [0, 1], air dark) as a 12-bit DICOM; returns its header facts."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    top = (1 << BITS_STORED) - 1
    low = int(rng.integers(0, 600))
    span = int(rng.integers(2500, top - low))
    monochrome1 = bool(rng.random() < MONOCHROME1_FRACTION)
    shown = 1.0 - img if monochrome1 else img
    stored = np.round(low + np.clip(shown, 0.0, 1.0) * span).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_PRESENTATION
    meta.MediaStorageSOPInstanceUID = _uid(image_id, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "2.25.1"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(image_id, "study")
    ds.SeriesInstanceUID = _uid(image_id, "series")
    ds.Modality = "DX"
    ds.PatientID = image_id
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    # DICOM linear window: [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] maps onto the output
    # range, so c = low + span/2 + 0.5 and w = span + 1 cover exactly [low, low + span].
    ds.WindowCenter = f"{low + span / 2 + 0.5:g}"
    ds.WindowWidth = f"{span + 1:g}"
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return {"monochrome1": monochrome1, "low": low, "span": span}


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root`; returns counts for the completion marker."""
    rng = site_rng(seed, "vindr")
    root = Path(root)
    counts = {"train": max(4, int(round(N_TRAIN * scale))), "test": max(4, int(round(N_TEST * scale)))}
    train_rows: list[dict[str, object]] = []
    test_rows: list[dict[str, object]] = []
    for split in ("train", "test"):
        for _ in range(counts[split]):
            irng = np.random.default_rng(child_seed(rng))
            image_id = "".join("0123456789abcdef"[i] for i in irng.integers(0, 16, size=32))
            truth = STYLE.sample_labels(irng, MIN_PREVALENCE)
            h, w = STYLE.image_size(irng)
            anatomy = sample_anatomy(irng)
            img = render(truth, np.random.default_rng(child_seed(irng)), STYLE, h, w, anatomy=anatomy)
            save_dicom(img, root / split / f"{image_id}.dicom", image_id, irng)
            row = vindr_row(truth)
            if split == "test":
                test_rows.append({"image_id": image_id, **row})
            else:
                for rad in irng.choice(READERS, size=3, replace=False):
                    train_rows.append({"image_id": image_id, "rad_id": str(rad), **reader_row(row, irng)})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    train = pd.DataFrame(train_rows, columns=["image_id", "rad_id", *VINDR_COLUMNS])
    train.to_csv(root / "annotations" / LABEL_FILES["train"], index=False)
    test = pd.DataFrame(test_rows, columns=["image_id", *VINDR_COLUMNS])
    test = test.rename(columns={"Other diseases": TEST_OTHER_COLUMN})
    test.to_csv(root / "annotations" / LABEL_FILES["test"], index=False)
    return {"images": counts["train"] + counts["test"], **counts}
