"""MIMIC-CXR-JPG adapter (v2.0.0 / v2.1.0 PhysioNet layout).

Layout under `root` (docs/DATA_AND_METRICS.md §5):
    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train | validate | test)
    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id + 14 observations (study-level)
    mimic-cxr-2.0.0-negbio.csv[.gz]     the same columns from the NegBio labeller
    files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg    (XX = first two digits of subject_id)

Images come from the metadata; the split file gives each image its split
(`validate` -> `val`; patient-disjoint by construction); labels are joined per
(subject_id, study_id) from the chosen labeller (`labeler` = `chexpert` or
`negbio`). Studies without a label row get NaN labels (logged). Label values are
CheXpert-style (1, 0, -1, blank) and go through the same `uncertainty`/`blank`
policies as the CheXpert adapter. `views` filters ViewPosition (e.g. ["PA", "AP"];
missing ViewPosition is `unknown`); `splits` keeps only some splits. Height/width
come from the metadata's Rows/Columns (the JPEGs keep the DICOM matrix).

Demographics are not part of MIMIC-CXR-JPG: when MIMIC-IV's `patients.csv[.gz]` is
under root (or `hosp/`), or named by the `patients` option, `age` (at the study, see
`attach_demographics`) and `sex` (`gender`) fill the index; otherwise they are NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.data.sites import SPLITS, DataError, Site, register_site
from bench.data.sites.chexpert import BLANK_POLICIES, CHEXPERT_LABELS, UNCERTAINTY_POLICIES, apply_policy
from bench.data.sites.generic import (
    check_choice,
    check_options,
    checked_sizes,
    drop_duplicate_images,
    drop_missing_files,
    finish_index,
    log_step,
    read_csv,
    require_dir,
)

VERSION = "2.0.0"
LABELERS: tuple[str, ...] = ("chexpert", "negbio")
SPLIT_NAMES: dict[str, str] = {"train": "train", "validate": "val", "test": "test"}
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
LABEL_KEYS = ("subject_id", "study_id")

DEFAULTS: dict[str, Any] = {
    "labeler": "chexpert",
    "uncertainty": "ignore",
    "blank": "nan",
    "views": None,
    "splits": None,
    "missing": "error",
    "patients": None,
}
PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")
PATIENT_FILES = ("patients.csv.gz", "patients.csv", "hosp/patients.csv.gz", "hosp/patients.csv")


def patients_path(root: Path, option: str | None) -> Path | None:
    """MIMIC-IV's `patients.csv[.gz]` (demographics live there, not in MIMIC-CXR-JPG):
    the `patients` option (absolute or relative to root), else one found under root, else None."""
    if option is not None:
        path = Path(option) if Path(option).is_absolute() else root / option
        if not path.is_file():
            raise DataError(f"site 'mimic': patients file {path} does not exist")
        return path
    return next((root / n for n in PATIENT_FILES if (root / n).is_file()), None)


def attach_demographics(df: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """`age` and `sex` per image from MIMIC-IV `patients`.

    MIMIC-IV gives each patient `anchor_age` in `anchor_year` (both date-shifted like
    MIMIC-CXR's `StudyDate`), so the age at a study is anchor_age + study year - anchor_year;
    without a StudyDate it is anchor_age. Patients missing from the file get NaN.
    """
    pat = patients.drop_duplicates("subject_id").set_index("subject_id")
    subject = df["subject_id"].astype(np.int64)
    anchor_age = pd.to_numeric(subject.map(pat["anchor_age"]), errors="coerce")
    if "StudyDate" in df.columns:
        year = pd.to_numeric(df["StudyDate"], errors="coerce") // 10000
        anchor_year = pd.to_numeric(subject.map(pat["anchor_year"]), errors="coerce")
        age = anchor_age + (year - anchor_year)
    else:
        age = anchor_age
    return df.assign(age=age.to_numpy(dtype=float), sex=subject.map(pat["gender"]).to_numpy())


def table_path(root: Path, kind: str) -> Path:
    """`mimic-cxr-2.0.0-<kind>.csv.gz`, or the uncompressed `.csv`; DataError if neither."""
    for suffix in (".csv.gz", ".csv"):
        path = root / f"mimic-cxr-{VERSION}-{kind}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"site 'mimic': mimic-cxr-{VERSION}-{kind}.csv[.gz] not found in {root}")


def image_relpath(subject_id: int, study_id: int, dicom_id: str) -> str:
    """files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg for one image."""
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


@register_site
class MIMICSite(Site):
    """MIMIC-CXR-JPG: study-level CheXpert/NegBio labels joined to images, official split."""

    name = "mimic"
    labels = CHEXPERT_LABELS
    description = "MIMIC-CXR-JPG 2.0.0 (metadata + split + chexpert/negbio CSVs, files/pXX/...)"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        check_choice(self.name, "labeler", opts["labeler"], LABELERS)
        check_choice(self.name, "uncertainty", opts["uncertainty"], UNCERTAINTY_POLICIES)
        check_choice(self.name, "blank", opts["blank"], BLANK_POLICIES)
        root = require_dir(self.name, root)
        meta_path, split_path = table_path(root, "metadata"), table_path(root, "split")
        meta = read_csv(meta_path, self.name, METADATA_COLUMNS, dtype={"dicom_id": str})
        meta = drop_duplicate_images(meta, self.name, meta_path, key="dicom_id")
        split = read_csv(split_path, self.name, SPLIT_COLUMNS, dtype={"dicom_id": str})
        split = drop_duplicate_images(split, self.name, split_path, key="dicom_id")
        labels_path = table_path(root, opts["labeler"])
        labels = read_csv(labels_path, self.name, LABEL_KEYS + CHEXPERT_LABELS)
        # labels are per study: a study listed twice is the same kind of duplicate
        labels = drop_duplicate_images(labels, self.name, labels_path, key=list(LABEL_KEYS))
        bad_split = sorted(set(split["split"].astype(str)) - set(SPLIT_NAMES))
        if bad_split:
            raise DataError(f"{table_path(root, 'split')}: unknown split values {bad_split}; expected {list(SPLIT_NAMES)}")

        df = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left", validate="one_to_one")
        no_split = df["split"].isna()
        if no_split.any():
            raise DataError(
                f"site 'mimic': {int(no_split.sum())} image(s) of the metadata have no split, "
                f"e.g. {df.loc[no_split, 'dicom_id'].tolist()[:3]}"
            )
        df = df.merge(labels, on=list(LABEL_KEYS), how="left", validate="many_to_one", indicator=True)
        unlabelled = int((df["_merge"] == "left_only").sum())
        log_step(self.name, f"images with a {opts['labeler']} label row", len(df), len(df) - unlabelled)
        for label in CHEXPERT_LABELS:
            try:
                df[label] = apply_policy(df[label], label, opts["uncertainty"], opts["blank"]).to_numpy()
            except (ValueError, DataError) as exc:
                raise DataError(f"{labels_path}: {exc}") from exc

        df["split"] = df["split"].astype(str).map(SPLIT_NAMES)
        df["view"] = df["ViewPosition"].astype(object).where(df["ViewPosition"].notna(), "unknown").astype(str)
        if opts["views"] is not None:
            views = [opts["views"]] if isinstance(opts["views"], str) else list(opts["views"])
            before = len(df)
            df = df[df["view"].isin(views)]
            log_step(self.name, f"ViewPosition in {views}", before, len(df))
        if opts["splits"] is not None:
            keep = [opts["splits"]] if isinstance(opts["splits"], str) else list(opts["splits"])
            for s in keep:
                check_choice(self.name, "splits", s, SPLITS)
            before = len(df)
            df = df[df["split"].isin(keep)]
            log_step(self.name, f"split in {keep}", before, len(df))
        df = df.assign(
            image_id=df["dicom_id"].astype(str),
            path=[
                str(root / image_relpath(int(s), int(t), str(d)))
                for s, t, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])
            ],
            patient_id=df["subject_id"].astype(np.int64).astype(str),
            height=checked_sizes(df["Rows"], self.name, meta_path),
            width=checked_sizes(df["Columns"], self.name, meta_path),
        )
        pat_path = patients_path(root, opts["patients"])
        if pat_path is not None:
            patients = read_csv(pat_path, self.name, PATIENT_COLUMNS)
            df = attach_demographics(df, patients)
            log_step(self.name, f"images with demographics in {pat_path.name}", len(df), int(df["sex"].notna().sum()))
        df = drop_missing_files(df, self.name, opts["missing"])
        return finish_index(df, self.name, CHEXPERT_LABELS)
