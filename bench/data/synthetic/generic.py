"""Synthetic in-house PACS export: a DICOM tree plus a labels CSV, for the `generic` site.

Writes under `root`:
    dicom/<PatientID>/<StudyInstanceUID>/<SOPInstanceUID>.dcm
    labels.csv     file,patient,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion

The DICOMs are CR images, 12 bits stored in 16, **MONOCHROME1** (bright = air, the
inverse of the other sites; readers must invert) with a full-range VOI window, so
the pixel pipeline's DICOM path is exercised end to end. UIDs are `2.25.<integer>`
drawn from the seed, so files are byte-identical across runs (pydicom writes its own
version into the file meta, so bytes can differ between pydicom versions).
Labels: the five harmonised findings, 1/0, with some blanks (unknown) as an in-house
export of partially reviewed cases would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.labels import HARMONISED5
from bench.data.synthetic.anatomy import SiteStyle, jitter_anatomy, render, sample_anatomy
from bench.data.synthetic.files import child_seed, site_rng

N_PATIENTS = 40  # at scale 1.0 -> ~80 images
BITS = 12
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
STYLE = SiteStyle(
    name="generic",
    gamma=1.2,
    contrast=0.9,
    brightness=0.05,
    noise=0.015,
    blur=0.5,
    base_size=(136, 136),
    aspect_range=(0.85, 1.15),
    size_jitter=0.08,
    prevalence={"Atelectasis": 0.12, "Cardiomegaly": 0.12, "Consolidation": 0.08, "Edema": 0.08, "Pleural Effusion": 0.15},
    correlation=0.3,
    images_per_patient=(1, 3),
    ap_fraction=0.3,
    zoom=1.04,
)


def _uid(rng: np.random.Generator) -> str:
    """A `2.25.` (UUID-derived) UID from 120 random bits."""
    return "2.25." + str(int(rng.integers(0, 2**60)) * 2**60 + int(rng.integers(0, 2**60)))


def write_dicom(img: np.ndarray, path: Path, *, patient: str, view: str, uids: dict[str, str]) -> None:
    """Save a [0, 1] air-dark image as a 12-bit MONOCHROME1 CR DICOM (stored = max - value)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    top = (1 << BITS) - 1
    stored = (top - np.round(np.clip(img, 0, 1) * top)).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.PatientID = patient
    ds.PatientName = f"Synthetic^{patient}"
    ds.Modality = "CR"
    ds.ViewPosition = view
    ds.BodyPartExamined = "CHEST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = BITS
    ds.HighBit = BITS - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = (top + 1) // 2
    ds.WindowWidth = top + 1
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "generic")
    rows = []
    for p in range(1, max(2, int(round(N_PATIENTS * scale))) + 1):
        prng = np.random.default_rng(child_seed(rng))
        patient = f"PAT{p:05d}"
        anatomy = sample_anatomy(prng)
        study = _uid(prng)
        lo, hi = STYLE.images_per_patient
        for _ in range(int(prng.integers(lo, hi + 1))):
            labels = STYLE.sample_labels(prng)
            view = "AP" if prng.random() < STYLE.ap_fraction else "PA"
            h, w = STYLE.image_size(prng)
            img = render(labels, np.random.default_rng(child_seed(prng)), STYLE, h, w,
                         anatomy=jitter_anatomy(anatomy, prng), view=view)  # fmt: skip
            uids = {"study": study, "series": _uid(prng), "sop": _uid(prng)}
            rel = f"dicom/{patient}/{study}/{uids['sop']}.dcm"
            write_dicom(img, root / rel, patient=patient, view=view, uids=uids)
            known = prng.random(len(HARMONISED5)) > 0.1
            rows.append({"file": rel, "patient": patient,
                         **{n: (float(labels[n]) if k else np.nan) for n, k in zip(HARMONISED5, known)}})  # fmt: skip
    pd.DataFrame(rows, columns=["file", "patient", *HARMONISED5]).to_csv(root / "labels.csv", index=False)
    return {"images": len(rows)}
