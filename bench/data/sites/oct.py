"""Kermany OCT2017 adapter (retinal OCT B-scans, 4 classes, single-label).

Layout (docs/DATA_AND_METRICS.md §6): `OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg`;
the Kaggle copy adds `val/` and names the folder `OCT2017 ` (trailing space). `root`
may be that folder or its parent (either spelling).

Labels: one column per class (`OCT_CLASSES`), exactly one 1.0 per row (multi-class,
from the folder; the class token in the file name must agree). Patient id: the middle
file-name token. Split: the folder (`train`, `val`, `test`); `splits` restricts which.
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
    require_dir,
)

OCT_CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
FOLDERS: tuple[str, ...] = ("OCT2017", "OCT2017 ")
SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "test": "test"}
_NAME_RE = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)
_SUFFIXES = frozenset({".jpeg", ".jpg"})

DEFAULTS: dict[str, Any] = {"splits": None}


def dataset_dir(root: Path) -> Path:
    """The folder holding train/ and test/: `root` itself or `root/OCT2017[ ]`."""
    if (root / "train").is_dir() or (root / "test").is_dir():
        return root
    for name in FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"site 'oct': {root} holds neither train/ nor test/ nor any of {[f for f in FOLDERS]}")


def parse_name(path: Path) -> tuple[str, str]:
    """`CNV-1016042-1.jpeg` -> ('CNV', '1016042'); anything else -> DataError."""
    m = _NAME_RE.match(path.name)
    if m is None:
        raise DataError(f"site 'oct': file name {path} is not <CLASS>-<patient>-<n>.jpeg")
    return m.group(1).upper(), m.group(2)


@register_site
class OCTSite(Site):
    """Kermany OCT2017: CNV / DME / DRUSEN / NORMAL B-scans (pre-training source)."""

    name = "oct"
    labels = OCT_CLASSES
    description = "Kermany OCT2017 (Mendeley or Kaggle 'OCT2017 ' layout), 4 classes by folder"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        base = dataset_dir(require_dir(self.name, root))
        splits = list(SPLIT_FOLDERS) if opts["splits"] is None else list(opts["splits"])
        for s in splits:
            check_choice(self.name, "splits", s, SPLIT_FOLDERS)
        rows = []
        for split in splits:
            folder = base / SPLIT_FOLDERS[split]
            if not folder.is_dir():
                if opts["splits"] is not None:
                    raise DataError(f"site 'oct': requested split folder {folder} is missing")
                continue
            for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                cls = cls_dir.name.upper()
                if cls not in OCT_CLASSES:
                    raise DataError(f"site 'oct': unknown class folder {cls_dir}; expected {OCT_CLASSES}")
                for f in sorted(cls_dir.iterdir()):
                    if f.name.startswith(".") or f.suffix.lower() not in _SUFFIXES:
                        continue
                    token, patient = parse_name(f)
                    if token != cls:
                        raise DataError(f"site 'oct': {f} is named {token} but lies in folder {cls_dir.name}")
                    rows.append(
                        {
                            "image_id": f"{split}/{f.stem}",
                            "path": str(f),
                            "patient_id": patient,
                            "split": split,
                            "view": "OCT",
                            **{c: float(c == cls) for c in OCT_CLASSES},
                        }
                    )
        if not rows:
            raise DataError(f"site 'oct': no <CLASS>-<patient>-<n>.jpeg images under {base}")
        df = pd.DataFrame(rows)
        # e.g. CNV-1-1.jpeg next to CNV-1-1.jpg: two files for one image id
        df = drop_duplicate_images(df, self.name, [base / SPLIT_FOLDERS[s] for s in splits], key="image_id")
        log_step(self.name, f"images in {splits}", len(df), len(df))
        df = attach_sizes(df)
        return finish_index(df, self.name, OCT_CLASSES)
