"""COVIDx CT adapter (Kaggle `hgunraj/covidxct`, versions 2A/3A/3B...).

Layout under `root` (docs/DATA_AND_METRICS.md §7): `<version>_images/*.png` (8-bit slices) and
`{train,val,test}_COVIDx_CT-<version>.txt`, one slice per line:
``<filename> <class> <xmin> <ymin> <xmax> <ymax>`` with class 0 Normal, 1 Pneumonia,
2 COVID-19 and an automatic body crop box in pixels. Every listed slice is one image.

Labels: one column per class (`COVIDX_CLASSES`), exactly one 1.0 per row. The crop
box does not fit the standard index (whose extra columns are labels), so it is
returned by `CovidxSite.load_crops` (image_id, xmin, ymin, xmax, ymax) for the
preprocessing step, which should crop before resizing as the COVIDNet-CT code does.

Patient ids are not listed; they are parsed from file names with `PATIENT_RULES`
(CNCB ``NCP_341_1834_0022.png`` = class_patient_scan_slice -> ``CNCB-NCP-341``;
``LIDC-IDRI-0559-...``; ``COVIDCTMD-P002-IM0025``; ``volume-covid19-A-0070_...``;
``..._patient420_...``), falling back to the name without its last numeric token
(the slice number). The fallback is a heuristic: pass `patient_map` (a CSV with
`filename` and `patient_id`) when you have the real mapping. The official splits are
patient-disjoint per the authors; the adapter never re-splits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

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

COVIDX_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia", "COVID-19")
SPLIT_FILES: dict[str, str] = {"train": "train", "val": "val", "test": "test"}
_SPLIT_RE = re.compile(r"^(train|val|test)_COVIDx_CT-(\w+)\.txt$")
PATIENT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(NCP|CP|Normal)_(\d+)_\d+_\d+\.png$"), r"CNCB-\1-\2"),
    (re.compile(r"^(LIDC-IDRI-\d+)-"), r"\1"),
    (re.compile(r"^(COVIDCTMD-[^-]+)-"), r"\1"),
    (re.compile(r"^(volume-covid19-A-\d+)"), r"\1"),
    (re.compile(r"^(.*?patient\d+)"), r"\1"),
)
_TRAILING_NUMBER = re.compile(r"[-_]\d+$")

DEFAULTS: dict[str, Any] = {"version": None, "images_dir": None, "patient_map": None, "missing": "error"}


def patient_from_filename(name: str) -> tuple[str, bool]:
    """(patient id, True if a source rule matched / False if the fallback was used)."""
    for pattern, template in PATIENT_RULES:
        m = pattern.match(name)
        if m:
            return m.expand(template), True
    stem = Path(name).stem
    return _TRAILING_NUMBER.sub("", stem) or stem, False


def find_version(root: Path, version: str | None) -> str:
    """The dataset version whose split files are in `root` (e.g. `3A`)."""
    found = sorted({m.group(2) for p in root.iterdir() if (m := _SPLIT_RE.match(p.name))})
    if version is not None:
        if version not in found:
            raise DataError(f"site 'covidx': no split files for version {version!r} in {root}; found versions {found}")
        return version
    if len(found) != 1:
        raise DataError(
            f"site 'covidx': expected split files of one version (*_COVIDx_CT-<version>.txt) in {root}, "
            f"found {found or 'none'}; pass version=..."
        )
    return found[0]


def parse_split_file(path: Path) -> pd.DataFrame:
    """Rows (filename, label, xmin, ymin, xmax, ymax) of one split file; DataError on bad lines."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{path} line {n}: expected '<filename> <class> <xmin> <ymin> <xmax> <ymax>', got {line!r}")
        try:
            label, *box = (int(v) for v in parts[1:])
        except ValueError as exc:
            raise DataError(f"{path} line {n}: class and box must be integers: {line!r}") from exc
        if label not in range(len(COVIDX_CLASSES)):
            raise DataError(f"{path} line {n}: class {label} is not 0 (Normal), 1 (Pneumonia) or 2 (COVID-19)")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise DataError(f"{path} line {n}: empty crop box {box}")
        rows.append((parts[0], label, *box))
    return pd.DataFrame(rows, columns=["filename", "label", "xmin", "ymin", "xmax", "ymax"])


@register_site
class CovidxSite(Site):
    """COVIDx CT: CT slices, 3 classes (Normal / Pneumonia / COVID-19), official splits."""

    name = "covidx"
    labels = COVIDX_CLASSES
    description = "COVIDx CT (Kaggle layout: <ver>_images/ + {train,val,test}_COVIDx_CT-<ver>.txt)"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def _rows(self, root: Path, opts: dict[str, Any]) -> tuple[pd.DataFrame, Path]:
        root = require_dir(self.name, root)
        version = find_version(root, opts["version"])
        images = root / (opts["images_dir"] or f"{version}_images")
        if not images.is_dir():
            raise DataError(f"site 'covidx': image folder {images} is missing (pass images_dir=...)")
        parts = []
        for split, stem in SPLIT_FILES.items():
            path = root / f"{stem}_COVIDx_CT-{version}.txt"
            if path.is_file():
                parts.append(parse_split_file(path).assign(split=split, _file=str(path)))
        df = pd.concat(parts, ignore_index=True)
        # a slice listed twice with the same class, box and split is a copy; anything else conflicts
        df = drop_duplicate_images(df, self.name, root, key="filename", file_col="_file")
        df["image_id"] = df["filename"].map(lambda f: Path(f).stem)
        return df, images

    def load_crops(self, root: Path, **options: Any) -> pd.DataFrame:
        """Crop boxes in pixels: columns image_id, xmin, ymin, xmax, ymax (exclusive max)."""
        opts = check_options(self.name, options, DEFAULTS)
        df, _ = self._rows(Path(root), opts)
        return df[["image_id", "xmin", "ymin", "xmax", "ymax"]].reset_index(drop=True)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        df, images = self._rows(Path(root), opts)
        df["path"] = [str(images / f) for f in df["filename"]]
        if opts["patient_map"] is not None:
            map_path = Path(opts["patient_map"])
            map_path = map_path if map_path.is_absolute() else Path(root) / map_path
            mapping = read_csv(map_path, self.name, ("filename", "patient_id"), dtype=str)
            df["patient_id"] = df["filename"].map(dict(zip(mapping["filename"], mapping["patient_id"])))
            unmapped = df["patient_id"].isna()
            if unmapped.any():
                examples = df.loc[unmapped, "filename"].tolist()[:3]
                raise DataError(f"{map_path}: no patient_id for {int(unmapped.sum())} slice(s), e.g. {examples}")
        else:
            parsed = [patient_from_filename(f) for f in df["filename"]]
            df["patient_id"] = [p for p, _ in parsed]
            n_rule = sum(ok for _, ok in parsed)
            log_step(self.name, "patient id from a known source rule (rest: strip the slice number)", len(df), n_rule)
        df["view"] = "axial"
        for k, cls in enumerate(COVIDX_CLASSES):
            df[cls] = (df["label"] == k).astype(float)
        log_step(self.name, "slices listed in the split files", len(df), len(df))
        df = drop_missing_files(df, self.name, opts["missing"])
        df = attach_sizes(df)
        return finish_index(df, self.name, COVIDX_CLASSES)
