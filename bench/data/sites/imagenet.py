"""ImageNet (ILSVRC2012) class-folder adapter, a natural-image pre-training source.

Layouts under `root` (docs/DATA_AND_METRICS.md §8):
* ``train/<wnid>/*.JPEG`` and optionally ``val/<wnid>/*.JPEG`` (val re-sorted into
  class folders, the torchvision ImageFolder convention);
* the Kaggle ILSVRC copy: ``ILSVRC/Data/CLS-LOC/{train,val}`` with a *flat* ``val/``
  whose classes come from ``LOC_val_solution.csv`` (ImageId, PredictionString whose
  first token is the wnid).

ImageNet has no patients: `patient_id` is the image id, so any patient-level split is
an image-level one. `view` is `natural`. Labels are optional because 1,000 one-hot
columns over 1.28 M rows are large and pre-training ignores them: `labels=True` adds
one column per wnid (sorted), exactly one 1.0 per row. Files are taken by extension
(.JPEG/.jpg/.jpeg/.png, any case); their content may be PNG or CMYK (one known
`n02105855_2933.JPEG` is a PNG) -- sizes are read from headers, which PIL identifies
by content, and the pixel reader converts to RGB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from bench.data.sites import DataError, Site, register_site
from bench.data.sites.generic import (
    attach_sizes,
    check_choice,
    check_options,
    drop_duplicate_images,
    finish_index,
    log_step,
    read_csv,
    require_dir,
)

WNID_RE = re.compile(r"^n\d{8}$")
SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
KAGGLE_SUBDIR = Path("ILSVRC/Data/CLS-LOC")
VAL_SOLUTION = "LOC_val_solution.csv"
SPLITS_AVAILABLE = ("train", "val")

DEFAULTS: dict[str, Any] = {"splits": None, "labels": False, "classes": None}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


@register_site
class ImageNetSite(Site):
    """ImageNet class folders (train, optional val); labels optional (one column per wnid)."""

    name = "imagenet"
    labels = ()
    description = "ImageNet ILSVRC2012 train/<wnid>/*.JPEG (+ val folders or Kaggle LOC_val_solution.csv)"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        root = require_dir(self.name, root)
        base = root / KAGGLE_SUBDIR if (root / KAGGLE_SUBDIR).is_dir() else root
        splits = list(SPLITS_AVAILABLE) if opts["splits"] is None else list(opts["splits"])
        for s in splits:
            check_choice(self.name, "splits", s, SPLITS_AVAILABLE)
        rows: list[dict[str, str]] = []
        for split in splits:
            folder = base / split
            if not folder.is_dir():
                if opts["splits"] is not None:
                    raise DataError(f"site 'imagenet': requested split folder {folder} is missing")
                continue
            class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
            if class_dirs:
                bad = [p.name for p in class_dirs if not WNID_RE.match(p.name)]
                if bad:
                    raise DataError(f"site 'imagenet': folders in {folder} must be wnids like n01440764, got {bad[:5]}")
                for d in class_dirs:
                    rows += [{"file": str(f), "wnid": d.name, "split": split} for f in _images(d)]
            else:
                rows += self._flat_val(root, folder, split)
        if not rows:
            raise DataError(f"site 'imagenet': no images under {base} for splits {splits}")
        df = pd.DataFrame(rows)
        if opts["classes"] is not None:
            keep = list(opts["classes"])
            before = len(df)
            df = df[df["wnid"].isin(keep)]
            log_step(self.name, f"classes in {keep[:5]}{'...' if len(keep) > 5 else ''}", before, len(df))
        df = df.assign(
            image_id=[f"{s}/{Path(f).stem}" for s, f in zip(df["split"], df["file"])],
            path=df["file"],
            view="natural",
        )
        # one image id per file stem and split: the same stem in two class folders (or as .JPEG and .png) conflicts
        df = drop_duplicate_images(df, self.name, [base / s for s in splits], key="image_id")
        df["patient_id"] = df["image_id"]
        log_step(self.name, f"images in {splits}", len(df), len(df))
        wnids = tuple(sorted(df["wnid"].unique())) if opts["labels"] else ()
        for w in wnids:
            df[w] = (df["wnid"] == w).astype(float)
        df = attach_sizes(df)
        return finish_index(df, self.name, wnids)

    def _flat_val(self, root: Path, folder: Path, split: str) -> list[dict[str, str]]:
        """A flat val folder: classes from LOC_val_solution.csv (root or its Kaggle parent)."""
        candidates = [root / VAL_SOLUTION, folder.parent / VAL_SOLUTION]
        solution = next((p for p in candidates if p.is_file()), None)
        if solution is None:
            raise DataError(f"site 'imagenet': {folder} has no class folders and no {VAL_SOLUTION} in {root}")
        table = read_csv(solution, self.name, ("ImageId", "PredictionString"))
        # the class is the first token; several boxes of one class in two rows are the same label
        table = pd.DataFrame({"ImageId": table["ImageId"].astype(str), "wnid": table["PredictionString"].astype(str).str.split().str[0]})
        table = drop_duplicate_images(table, self.name, solution, key="ImageId")
        wnid_of = dict(zip(table["ImageId"], table["wnid"]))
        rows = []
        for f in _images(folder):
            if f.stem not in wnid_of:
                raise DataError(f"{solution}: no class for validation image {f.name}")
            rows.append({"file": str(f), "wnid": wnid_of[f.stem], "split": split})
        return rows
