"""IRMA / ImageCLEFmed 2009 adapter: radiograph body-part classification (multi-class).

Layout (the RWTH Aachen distribution, also the Kaggle `raddar/irma-xray-dataset` copy):
    ImageCLEFmed2009_train_codes.02.csv   ';'-separated: image_id;irma_code;05_class;06_class;07_class;08_class
    ImageCLEFmed2009_train.02/<image_id>.png  (Kaggle nests it once more:
                                               ImageCLEFmed2009_train.02/ImageCLEFmed2009_train.02/)
    ImageCLEFmed2009_test_codes.03.csv, ImageCLEFmed2009_test.03/...   (same format; split `test`)

The IRMA code is ``TTTT-DDD-AAA-BBB``: technical (modality), directional (view),
anatomical, biological. `label` picks the classification target:
* ``body_region`` (default): the first anatomical digit, `BODY_REGIONS` (9 classes);
* ``irma_code``: one class per full code present;
* ``05_class`` ... ``08_class``: the ImageCLEF year's class numbers (``\\N`` = not part of
  that year's scheme -> every label NaN for the row).
One column per class (names ``region`` / ``code`` / ``class_<n>``), exactly one 1.0 per
labelled row. IRMA has no patient ids: `patient_id` is the image id. `view` comes from
the directional code (1-1 PA, 1-2 AP, 2 lateral, else `other`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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

BODY_REGIONS: dict[str, str] = {
    "1": "whole body",
    "2": "cranium",
    "3": "spine",
    "4": "upper extremity",
    "5": "chest",
    "6": "breast",
    "7": "abdomen",
    "8": "pelvis",
    "9": "lower extremity",
}
PARTS: dict[str, tuple[str, str]] = {  # split -> (codes CSV, image folder)
    "train": ("ImageCLEFmed2009_train_codes.02.csv", "ImageCLEFmed2009_train.02"),
    "test": ("ImageCLEFmed2009_test_codes.03.csv", "ImageCLEFmed2009_test.03"),
}
CLASS_COLUMNS = ("05_class", "06_class", "07_class", "08_class")
LABEL_CHOICES = ("body_region", "irma_code") + CLASS_COLUMNS
CODE_RE = re.compile(r"^([0-9a-zA-Z]{4})-([0-9a-zA-Z]{3})-([0-9a-zA-Z]{3})-([0-9a-zA-Z]{3})$")
NULL = "\\N"

DEFAULTS: dict[str, Any] = {"label": "body_region", "splits": None, "missing": "error"}


def view_of(directional: str) -> str:
    """Directional code (3 characters) -> PA / AP / L / other."""
    if directional[0] == "1":
        return {"1": "PA", "2": "AP"}.get(directional[1], "other")
    return "L" if directional[0] == "2" else "other"


def image_folder(root: Path, name: str) -> Path:
    """The folder with the PNGs, tolerating the Kaggle copy's doubled folder name."""
    nested = root / name / name
    return nested if nested.is_dir() else root / name


@register_site
class IrmaSite(Site):
    """IRMA (ImageCLEFmed 2009): body region / IRMA code classification of radiographs."""

    name = "irma"
    labels = tuple(BODY_REGIONS.values())
    description = "IRMA ImageCLEFmed2009 (codes CSV ';' + PNG folder), multi-class by body region or code"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        check_choice(self.name, "label", opts["label"], LABEL_CHOICES)
        root = require_dir(self.name, root)
        splits = list(PARTS) if opts["splits"] is None else list(opts["splits"])
        frames = []
        for split in splits:
            check_choice(self.name, "splits", split, PARTS)
            csv_name, folder = PARTS[split]
            if not (root / csv_name).is_file() and opts["splits"] is None and split != "train":
                continue  # the test part is optional unless asked for
            table = read_csv(
                root / csv_name, self.name, ("image_id", "irma_code"), sep=";", dtype=str, keep_default_na=False
            )
            table = table.apply(lambda col: col.str.strip())
            bad = [c for c in table["irma_code"] if not CODE_RE.match(c)]
            if bad:
                raise DataError(
                    f"{root / csv_name}: {len(bad)} malformed irma_code value(s), e.g. {bad[:3]}; "
                    "expected TTTT-DDD-AAA-BBB"
                )
            images = image_folder(root, folder)
            paths = [str(images / f"{i}.png") for i in table["image_id"]]
            frames.append(table.assign(split=split, path=paths, _csv=str(root / csv_name)))
        df = pd.concat(frames, ignore_index=True)
        # one image id, one row: across the train and test CSVs too (path and CSV follow the split)
        df = drop_duplicate_images(df, self.name, root, key="image_id", ignore=("path",), file_col="_csv")
        parts = df["irma_code"].str.extract(CODE_RE)
        df["view"] = parts[1].map(view_of)
        df["image_id"] = df["image_id"].astype(str)
        df["patient_id"] = df["image_id"]
        classes = self._label_columns(df, parts, opts["label"])
        log_step(self.name, f"images in {splits}", len(df), len(df))
        df = drop_missing_files(df, self.name, opts["missing"])
        df = attach_sizes(df)
        return finish_index(df, self.name, classes)

    def _label_columns(self, df: pd.DataFrame, parts: pd.DataFrame, label: str) -> tuple[str, ...]:
        """Add one-hot columns for the chosen target; returns their names in order."""
        if label == "body_region":
            region = parts[2].str[0]
            unknown = sorted(set(region) - set(BODY_REGIONS))
            if unknown:
                raise DataError(f"site 'irma': anatomical codes starting with {unknown} are not body regions 1-9")
            target = region.map(BODY_REGIONS)
            classes = tuple(BODY_REGIONS.values())
        elif label == "irma_code":
            target = df["irma_code"]
            classes = tuple(sorted(target.unique()))
        else:
            if label not in df.columns:
                found = [c for c in df.columns if not c.startswith("_")]
                raise DataError(f"site 'irma': {df['_csv'].iloc[0]} has no column {label!r}; found {found}")
            target = df[label].where(df[label] != NULL)
            values = sorted(target.dropna().unique(), key=lambda v: (len(v), v))
            classes = tuple(f"class_{v}" for v in values)
            target = target.map(lambda v: f"class_{v}" if isinstance(v, str) else v)
        known = target.notna().to_numpy()
        for c in classes:
            df[c] = np.where(known, (target == c).astype(float), np.nan)
        return classes
