"""NIH ChestX-ray14 adapter (official Box or Kaggle layout).

Layout under `root` (see docs/DATA_AND_METRICS.md §1):
    Data_Entry_2017_v2020.csv  (or the older Data_Entry_2017.csv)
    train_val_list.txt, test_list.txt    one image file name per line
    images/*.png   or the Kaggle copy's images_001/images/*.png ... images_012/images/*.png

Splits. `test` is `test_list.txt`. `train_val_list.txt` is split by *patient* into
`train`/`val`: the sorted patient ids are permuted with `numpy.random.default_rng(seed)`
and the first `round(val_fraction * n_patients)` go to `val` (the paper's 75,312 /
11,212 images is a val fraction of ~0.13). Alternatively `split_files` maps split
names to files in the common `relative/path l1 ... l14` layout (labels in
`NIH_LABEL_ORDER`), which then define both split and labels.

Demographics. `Patient Age` and `Patient Gender` become the index's `age` and `sex`
(with split files, taken from the Data_Entry CSV when it is there, else NaN).

Labels. `Finding Labels` is pipe-separated with NIH spellings (`Effusion`,
`Pleural_Thickening`, `No Finding`); absence means negative (NIH has no uncertain or
unknown labels), so every label column is 0.0 or 1.0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bench.data.labels import NIH14
from bench.data.sites import DataError, Site, register_site
from bench.data.sites.generic import (
    attach_sizes,
    check_options,
    drop_duplicate_images,
    drop_missing_files,
    finish_index,
    log_step,
    read_csv,
    require_dir,
)

# NIH token -> canonical name. Everything else in `Finding Labels` is an error.
NIH_TOKENS: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Infiltration",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Pleural_Thickening": "Pleural Thickening",
    "Hernia": "Hernia",
}
NO_FINDING = "No Finding"
CANONICAL_TO_NIH: dict[str, str] = {v: k for k, v in NIH_TOKENS.items()}
# Column order of the `relative/path l1 ... l14` split files (CheXNet convention) = NIH14.
NIH_LABEL_ORDER: tuple[str, ...] = NIH14

CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
_PATIENT_RE = re.compile(r"^(\d{8})_\d{3}\.png$", re.IGNORECASE)

DEFAULTS: dict[str, Any] = {
    "val_fraction": 0.13,
    "seed": 0,
    "split_files": None,
    "views": None,
    "missing": "error",
}


def parse_finding_labels(value: str, where: str) -> dict[str, float]:
    """`'Cardiomegaly|Effusion'` -> {canonical: 1.0 or 0.0} over NIH14."""
    tokens = [t.strip() for t in str(value).split("|") if t.strip()]
    unknown = [t for t in tokens if t not in NIH_TOKENS and t != NO_FINDING]
    if unknown:
        raise DataError(f"{where}: unknown finding label(s) {unknown}; known: {sorted(NIH_TOKENS)} and {NO_FINDING!r}")
    if NO_FINDING in tokens and len(tokens) > 1:
        raise DataError(f"{where}: {NO_FINDING!r} combined with findings {tokens}")
    positive = {NIH_TOKENS[t] for t in tokens if t != NO_FINDING}
    return {lab: float(lab in positive) for lab in NIH14}


def find_images(root: Path) -> dict[str, Path]:
    """File name -> path for `images/*.png` and the Kaggle `images_0XX/images/*.png`."""
    found: dict[str, Path] = {}
    dirs = [root / "images"] + sorted(root.glob("images_*/images"))
    for d in dirs:
        if d.is_dir():
            for entry in sorted(d.iterdir()):
                if entry.suffix.lower() == ".png":
                    found.setdefault(entry.name, entry)
    return found


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"site 'nih': split list {path} is missing")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def patient_val_split(patients: np.ndarray, val_fraction: float, seed: int) -> set[str]:
    """The patients that go to `val`: a seeded permutation of the sorted ids (see module doc)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"site 'nih': val_fraction must be in [0, 1), got {val_fraction}")
    ids = np.sort(np.asarray(patients, dtype=str))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(val_fraction * len(ids)))
    return set(ids[order[:n_val]].tolist())


@register_site
class NIHSite(Site):
    """NIH ChestX-ray14: 14 labels, official patient-disjoint train_val/test split."""

    name = "nih"
    labels = NIH14
    description = "NIH ChestX-ray14 (official Box or Kaggle layout, Data_Entry CSV + split lists)"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        root = require_dir(self.name, root)
        images = find_images(root)
        if opts["split_files"] is not None:
            df = self._from_split_files(root, opts["split_files"], images)
        else:
            df = self._from_official(root, images, float(opts["val_fraction"]), int(opts["seed"]))
        if opts["views"] is not None:
            views = [opts["views"]] if isinstance(opts["views"], str) else list(opts["views"])
            before = len(df)
            df = df[df["view"].isin(views)]
            log_step(self.name, f"views in {views}", before, len(df))
        df = drop_missing_files(df, self.name, opts["missing"])
        df = attach_sizes(df)
        return finish_index(df, self.name, NIH14)

    def _csv_path(self, root: Path) -> Path:
        for name in CSV_NAMES:
            if (root / name).is_file():
                return root / name
        raise DataError(f"site 'nih': none of {CSV_NAMES} found in {root}")

    def _csv(self, root: Path) -> pd.DataFrame:
        path = self._csv_path(root)
        return drop_duplicate_images(read_csv(path, self.name, REQUIRED_COLUMNS), self.name, path, key="Image Index")

    def _rows(self, csv: pd.DataFrame, images: Mapping[str, Path], root: Path) -> pd.DataFrame:
        csv_path = self._csv_path(root)
        labels = [parse_finding_labels(v, f"{csv_path} row {i + 2}") for i, v in enumerate(csv["Finding Labels"])]
        names = csv["Image Index"].astype(str)
        df = pd.DataFrame(
            {
                "image_id": names.str.replace(r"\.png$", "", regex=True, case=False),
                "file": names,
                "path": [str(images.get(n, root / "images" / n)) for n in names],
                "patient_id": csv["Patient ID"].astype(int).map(lambda v: f"{v:08d}"),
                "view": csv["View Position"].astype(str).str.strip(),
                # demographics for the dataset tables (Table 11); optional columns of the CSV
                "age": csv["Patient Age"] if "Patient Age" in csv else np.nan,
                "sex": csv["Patient Gender"] if "Patient Gender" in csv else np.nan,
            }
        )
        return pd.concat([df, pd.DataFrame(labels, index=df.index)], axis=1)

    def _from_official(self, root: Path, images: Mapping[str, Path], val_fraction: float, seed: int) -> pd.DataFrame:
        df = self._rows(self._csv(root), images, root)
        test = set(_read_list(root / "test_list.txt"))
        trainval = set(_read_list(root / "train_val_list.txt"))
        both = test & trainval
        if both:
            raise DataError(f"site 'nih': {len(both)} image(s) in both split lists, e.g. {sorted(both)[:3]}")
        before = len(df)
        df = df[df["file"].isin(test | trainval)].copy()
        log_step(self.name, "in train_val_list.txt or test_list.txt", before, len(df))
        in_test = df["file"].isin(test)
        val_patients = patient_val_split(df.loc[~in_test, "patient_id"].unique(), val_fraction, seed)
        df["split"] = np.where(in_test, "test", np.where(df["patient_id"].isin(val_patients), "val", "train"))
        return df

    def _from_split_files(self, root: Path, split_files: Mapping[str, str], images: Mapping[str, Path]) -> pd.DataFrame:
        if not isinstance(split_files, Mapping) or not split_files:
            raise DataError(f"site 'nih': split_files must map split names to files, got {split_files!r}")
        views: dict[str, str] = {}
        ages: dict[str, Any] = {}
        sexes: dict[str, Any] = {}
        if any((root / name).is_file() for name in CSV_NAMES):  # optional here: view, age and sex
            csv = self._csv(root)
            names = csv["Image Index"].astype(str)
            views = dict(zip(names, csv["View Position"].astype(str)))
            if "Patient Age" in csv:
                ages = dict(zip(names, csv["Patient Age"]))
            if "Patient Gender" in csv:
                sexes = dict(zip(names, csv["Patient Gender"]))
        rows = []
        for split, rel in split_files.items():
            path = root / rel
            for n, line in enumerate(_read_list(path), start=1):
                parts = line.split()
                if len(parts) != 1 + len(NIH_LABEL_ORDER):
                    raise DataError(
                        f"{path} line {n}: expected a path and {len(NIH_LABEL_ORDER)} labels, got {len(parts)} fields"
                    )
                file = Path(parts[0]).name
                m = _PATIENT_RE.match(file)
                if m is None:
                    raise DataError(f"{path} line {n}: file name {file!r} is not NNNNNNNN_NNN.png")
                try:
                    values = [float(v) for v in parts[1:]]
                except ValueError as exc:
                    raise DataError(f"{path} line {n}: labels must be numbers: {exc}") from exc
                direct = root / parts[0]
                rows.append(
                    {
                        "image_id": file[:-4],
                        "file": file,
                        "path": str(direct if direct.is_file() else images.get(file, direct)),
                        "patient_id": m.group(1),
                        "split": split,
                        "view": views.get(file, "unknown"),
                        "age": ages.get(file, np.nan),
                        "sex": sexes.get(file, np.nan),
                        "_file": str(path),
                        **dict(zip(NIH_LABEL_ORDER, values)),
                    }
                )
        return drop_duplicate_images(pd.DataFrame(rows), self.name, root, key="image_id", file_col="_file")
