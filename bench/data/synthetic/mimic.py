"""Synthetic MIMIC-CXR-JPG 2.0.0 in the PhysioNet layout (a pre-training source).

Writes under `root`:
    files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg
    mimic-cxr-2.0.0-metadata.csv.gz, -split.csv.gz, -chexpert.csv.gz, -negbio.csv.gz

subject_ids are 8 digits starting with 1, study_ids 8 digits starting with 5,
dicom_ids five dash-separated 8-hex blocks. Each study has a frontal (AP/PA) image and
sometimes a LATERAL one; labels are study-level, drawn like CheXpert train (true
findings, then labeller noise: 1 / -1 / blank / 0). The NegBio file is the CheXpert
file with a fraction of the uncertain values resolved differently, as the two
labellers disagree mostly on uncertainty. The split is patient-disjoint (~80/10/10
train/validate/test; the real one is ~98/1/1). Images: JPEG, histogram-equalised look
(higher contrast), variable size 128-176 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.sites.chexpert import CHEXPERT_LABELS
from bench.data.sites.mimic import VERSION, image_relpath
from bench.data.synthetic.anatomy import SiteStyle, jitter_anatomy, render, sample_anatomy
from bench.data.synthetic.chexpert import PATHOLOGIES, TRAIN_PREVALENCE
from bench.data.synthetic.files import child_seed, hex_id, save_jpeg, site_rng, write_gzip_text

N_PATIENTS = 100  # at scale 1.0 -> ~300 images
SPLIT_SHARES = (("train", 0.8), ("validate", 0.1), ("test", 0.1))

STYLE = SiteStyle(
    name="mimic",
    gamma=0.75,
    contrast=1.15,
    brightness=-0.03,
    noise=0.02,
    blur=0.6,
    base_size=(152, 152),
    aspect_range=(0.82, 1.18),
    size_jitter=0.12,
    prevalence=TRAIN_PREVALENCE,
    correlation=0.3,
    images_per_patient=(1, 8),
    ap_fraction=0.6,  # MIMIC: AP 147,169 / PA 96,155
    zoom=0.94,  # wider field of view
)
META_ORDER = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}


def _label_value(truth: bool, rng: np.random.Generator) -> float:
    r = rng.random()
    if truth:
        return 1.0 if r < 0.75 else (-1.0 if r < 0.95 else np.nan)
    return np.nan if r < 0.7 else (0.0 if r < 0.92 else -1.0)


def write(root: Path, *, seed: int, scale: float) -> dict[str, int]:
    """Write the site under `root` (created); returns counts for the completion marker."""
    rng = site_rng(seed, "mimic")
    n_patients = max(3, int(round(N_PATIENTS * scale)))
    subjects = 10_000_000 + np.sort(rng.choice(9_000_000, size=n_patients, replace=False))
    split_of = {}
    order = rng.permutation(n_patients)
    start = 0
    for i, (name, share) in enumerate(SPLIT_SHARES):
        stop = n_patients if i == len(SPLIT_SHARES) - 1 else start + max(1, int(round(share * n_patients)))
        for j in order[start:stop]:
            split_of[int(subjects[j])] = name
        start = stop
    meta, splits, chex, negbio = [], [], [], []
    study_ids: set[int] = set()
    for subject in subjects.tolist():
        prng = np.random.default_rng(child_seed(rng))
        anatomy = sample_anatomy(prng)
        for k in range(int(np.clip(1 + prng.poisson(1.2), 1, 5))):
            study = int(prng.integers(50_000_000, 60_000_000))
            while study in study_ids:
                study = int(prng.integers(50_000_000, 60_000_000))
            study_ids.add(study)
            truth = STYLE.sample_labels(prng)
            values = {n: _label_value(truth.get(n, False), prng) for n in PATHOLOGIES + ("Support Devices",)}
            values["No Finding"] = np.nan if any(truth.get(n, False) for n in PATHOLOGIES) else 1.0
            chex.append({"subject_id": subject, "study_id": study, **values})
            neg = {n: (0.0 if v == -1.0 and prng.random() < 0.3 else v) for n, v in values.items()}
            negbio.append({"subject_id": subject, "study_id": study, **neg})
            views = ["AP" if prng.random() < STYLE.ap_fraction else "PA"]
            if prng.random() < 0.4:
                views.append("LATERAL")
            date = 21000101 + 100 * k + int(prng.integers(0, 28))
            for view in views:
                dicom_id = hex_id(prng)
                h, w = STYLE.image_size(prng)
                img = render(truth, np.random.default_rng(child_seed(prng)), STYLE, h, w,
                             anatomy=jitter_anatomy(anatomy, prng), view="LL" if view == "LATERAL" else view)  # fmt: skip
                save_jpeg(img, root / image_relpath(subject, study, dicom_id))
                meta.append(
                    {
                        "dicom_id": dicom_id, "subject_id": subject, "study_id": study,
                        "PerformedProcedureStepDescription": (
                            "CHEST (PA AND LAT)" if len(views) > 1 else "CHEST (PORTABLE AP)"
                        ),
                        "ViewPosition": view, "Rows": h, "Columns": w, "StudyDate": date,
                        "StudyTime": round(float(prng.uniform(0, 235959)), 3),
                        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                        "ViewCodeSequence_CodeMeaning": VIEW_MEANING[view],
                        "PatientOrientationCodeSequence_CodeMeaning": "Erect",
                    }
                )  # fmt: skip
                splits.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": split_of[subject]})
    label_cols = ["subject_id", "study_id"] + sorted(CHEXPERT_LABELS)  # the real files sort observations
    tables = {
        "metadata": pd.DataFrame(meta, columns=list(META_ORDER)),
        "split": pd.DataFrame(splits, columns=["dicom_id", "study_id", "subject_id", "split"]),
        "chexpert": pd.DataFrame(chex)[label_cols],
        "negbio": pd.DataFrame(negbio)[label_cols],
    }
    for kind, table in tables.items():
        write_gzip_text(table.to_csv(index=False), root / f"mimic-cxr-{VERSION}-{kind}.csv.gz")
    return {"images": len(meta), "studies": len(chex), "patients": n_patients}
