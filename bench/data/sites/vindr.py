"""VinDr-CXR (PhysioNet ``vindr-cxr/1.0.0``): raw DICOMs + image-level label CSVs.

Official layout (``root``):

* ``train/<image_id>.dicom`` (15,000) and ``test/<image_id>.dicom`` (3,000);
* ``annotations/image_labels_train.csv``: ``image_id, rad_id`` + 28 label columns,
  one row per reading radiologist (3 per image);
* ``annotations/image_labels_test.csv``: the consensus of 5 radiologists, one row per
  image (0/1, no aggregation needed).

The label CSVs may also sit directly in ``root``. The column ``Other diseases``
(train) is spelled ``Other disease`` in test; neither maps to a target.

Train aggregation over readers (option ``aggregation``): ``majority`` (default; a
label is positive when strictly more than half of the image's readers marked it,
i.e. 2 of 3) or ``any`` (positive when at least one reader did; the union that
torchxrayvision's loader builds). The two differ a lot for rare findings
(Atelectasis: 62 vs 186 train images). A test CSV with a ``rad_id`` column is
aggregated the same way. Duplicate rows (the same ``image_id, rad_id``, or the same
``image_id`` in a test CSV without readers) are dropped when identical and a
`DataError` when they disagree (`generic.drop_duplicate_images`).

VinDr has no patient identifiers, so ``patient_id`` is the image id, and only the
official split exists (``train``/``test``; option ``splits`` picks which). Every image
is a PA chest (``view`` = ``PA``). ``height``/``width`` come from the DICOM headers.

Label map (`VINDR_TO_LABEL`): VinDr's ``Pleural effusion`` -> ``Pleural Effusion``,
``Pleural thickening`` -> ``Pleural Thickening``, ``Pulmonary fibrosis`` ->
``Fibrosis``; ``Nodule/Mass`` is one class in VinDr and is left out (it cannot be
split into NIH's Nodule and Mass), as is everything without a canonical name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bench.data.sites import DataError, Site, register_site
from bench.data.sites.generic import (
    attach_sizes,
    check_choice,
    check_options,
    drop_duplicate_images,
    drop_missing_files,
    finish_index,
    log_step,
    read_csv,
    require_dir,
)

# The 28 label columns in file order (22 local findings, then 6 global labels).
VINDR_COLUMNS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding",
)  # fmt: skip
TEST_OTHER_COLUMN = "Other disease"  # the test CSV's spelling of "Other diseases"

VINDR_TO_LABEL: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Pleural effusion": "Pleural Effusion",
    "Infiltration": "Infiltration",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": "Emphysema",
    "Pulmonary fibrosis": "Fibrosis",
    "Pleural thickening": "Pleural Thickening",
}
LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Pleural Effusion", "Infiltration", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening",
)  # fmt: skip  (NIH14 order, without Mass, Nodule, Hernia)

LABEL_FILES: dict[str, str] = {"train": "image_labels_train.csv", "test": "image_labels_test.csv"}
AGGREGATIONS: tuple[str, ...] = ("majority", "any")
DEFAULTS: dict[str, Any] = {"splits": ("train", "test"), "aggregation": "majority", "missing": "error"}


def find_label_file(root: Path, split: str) -> Path:
    """``annotations/<file>`` or ``<root>/<file>`` for one official split."""
    name = LABEL_FILES[split]
    for candidate in (root / "annotations" / name, root / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"site 'vindr': {name} found neither in {root / 'annotations'} nor in {root}")


def aggregate_readers(rows: pd.DataFrame, columns: list[str], policy: str) -> pd.DataFrame:
    """One 0/1 row per image from per-reader rows (`policy` `majority` or `any`).

    `rows` has ``image_id`` and the 0/1 `columns`; the result is indexed by image id
    in order of first appearance. ``majority`` needs strictly more than half of the
    image's readers; ``any`` needs one.
    """
    check_choice("vindr", "aggregation", policy, AGGREGATIONS)
    values = rows[columns].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        bad = values.columns[values.isna().any()].tolist()
        raise DataError(f"site 'vindr': non-numeric or empty label values in columns {bad}")
    grouped = values.groupby(rows["image_id"].to_numpy(), sort=False)
    if policy == "any":
        out = grouped.max()
    else:
        out = (2 * grouped.sum() > grouped.count()).astype(float)
    return out.astype(float)


def read_split(root: Path, split: str, aggregation: str) -> pd.DataFrame:
    """Rows ``image_id, split`` + canonical labels for one official split."""
    path = find_label_file(root, split)
    df = read_csv(path, "vindr", ["image_id"], dtype={"image_id": str})
    if "rad_id" in df.columns:  # one row per (image, reader)
        df = drop_duplicate_images(df, "vindr", path, key=["image_id", "rad_id"])
    elif split == "test":  # the consensus: one row per image
        df = drop_duplicate_images(df, "vindr", path, key="image_id")
    needed = [c for c in VINDR_TO_LABEL]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"site 'vindr': {path} lacks label column(s) {missing}; found {list(df.columns)}")
    per_image = df.groupby("image_id", sort=False).size()
    if split == "test" and (per_image == 1).all():
        labels = df.set_index("image_id")[needed].apply(pd.to_numeric, errors="coerce").astype(float)
        if labels.isna().any().any():
            raise DataError(f"site 'vindr': {path} has empty or non-numeric label values")
    else:
        labels = aggregate_readers(df, needed, aggregation)
        log_step("vindr", f"{path.name}: {aggregation} over readers", len(df), len(labels))
    labels = labels.rename(columns=VINDR_TO_LABEL)
    out = labels.reset_index(names="image_id")
    out["split"] = split
    return out


@register_site
class VinDrSite(Site):
    """VinDr-CXR: official train (3 readers) and test (5-reader consensus) image labels."""

    name: ClassVar[str] = "vindr"
    labels: ClassVar[tuple[str, ...]] = LABELS
    description: ClassVar[str] = "VinDr-CXR (PhysioNet): DICOMs + image_labels_{train,test}.csv"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        """Options: splits (("train", "test")), aggregation ("majority" | "any"),
        missing ("error" | "drop": rows whose DICOM is absent)."""
        opts = check_options(self.name, options, DEFAULTS)
        root = require_dir(self.name, root)
        splits = [opts["splits"]] if isinstance(opts["splits"], str) else list(opts["splits"])
        for split in splits:
            check_choice(self.name, "splits", split, tuple(LABEL_FILES))
        parts = [read_split(root, split, opts["aggregation"]) for split in splits]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["image_id", "split"])
        dup = df["image_id"].duplicated()
        if dup.any():
            raise DataError(f"site 'vindr': image ids in both splits, e.g. {df.loc[dup, 'image_id'].tolist()[:3]}")
        df["path"] = [str(root / s / f"{i}.dicom") for i, s in zip(df["image_id"], df["split"])]
        df["patient_id"] = df["image_id"]  # VinDr publishes no patient ids
        df["view"] = "PA"
        df = drop_missing_files(df, self.name, opts["missing"])
        df = attach_sizes(df) if len(df) else df.assign(height=np.zeros(0, int), width=np.zeros(0, int))
        return finish_index(df, self.name, LABELS)
