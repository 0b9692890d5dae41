"""Generic folder site, and the small reading tools every adapter shares.

The shared tools (`check_options`, `read_csv`, `image_size`, `attach_sizes`,
`finish_index`, `log_step`) live here because the generic adapter is their most
general user: it reads any image tree with an optional labels CSV. The dataset
adapters (`nih`, `chexpert`, ...) import them from this module.

The generic site itself is defined further down (`GenericSite`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from bench.data.sites import INDEX_COLUMNS, DataError, Site, check_index, register_site

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
MISSING_POLICIES = ("error", "drop")


def check_options(site: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `options` over `defaults`; unknown keys -> DataError listing the valid ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        raise DataError(f"site {site!r}: unknown option(s) {unknown}; valid options (defaults): {valid}")
    return {**defaults, **options}


def check_choice(site: str, key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise DataError unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise DataError(f"site {site!r}: option {key}={value!r} is not one of {allowed}")


def require_dir(site: str, root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"site {site!r}: data root {root} does not exist or is not a directory")
    return root.resolve()


def read_csv(path: Path, site: str, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read a CSV (plain or .gz); missing file or columns -> DataError naming both."""
    if not path.is_file():
        raise DataError(f"site {site!r}: required file {path} is missing")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"site {site!r}: cannot parse {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"site {site!r}: {path} lacks column(s) {missing}; found {list(df.columns)}")
    return df


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) in pixels from the file header, without decoding the pixels.

    PIL reads only the header on `Image.open`; DICOM is read with
    `stop_before_pixels`. Unreadable files raise DataError naming the file.
    """
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except (OSError, AttributeError, pydicom.errors.InvalidDicomError) as exc:
            raise DataError(f"cannot read DICOM header of {path}: {exc}") from exc
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image header of {path}: {exc}") from exc
    return int(h), int(w)


def log_step(site: str, step: str, before: int, after: int) -> None:
    """Log how many rows a filtering step kept (every adapter logs every filter)."""
    log.info("site %s: %s: %d -> %d rows", site, step, before, after)


def drop_missing_files(df: pd.DataFrame, site: str, policy: str) -> pd.DataFrame:
    """Check every `path` exists; `policy` `error` raises naming a few, `drop` drops them."""
    check_choice(site, "missing", policy, MISSING_POLICIES)
    exists = np.fromiter((Path(p).is_file() for p in df["path"]), dtype=bool, count=len(df))
    if exists.all():
        return df
    lost = df.loc[~exists, "path"].tolist()
    if policy == "error":
        raise DataError(
            f"site {site!r}: {len(lost)} image file(s) listed but missing, e.g. {lost[:3]}; "
            "pass missing='drop' to skip them"
        )
    log_step(site, "drop missing image files", len(df), int(exists.sum()))
    return df.loc[exists].reset_index(drop=True)


def attach_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """Fill `height`/`width` from each file's header (see `image_size`)."""
    sizes = [image_size(Path(p)) for p in df["path"]]
    df = df.copy()
    df["height"] = [h for h, _ in sizes]
    df["width"] = [w for _, w in sizes]
    return df


def finish_index(df: pd.DataFrame, site: str, labels: Sequence[str]) -> pd.DataFrame:
    """Order columns (INDEX_COLUMNS then `labels`), fix dtypes, validate the contract."""
    df = df.copy()
    df["site"] = site
    for col in ("image_id", "path", "patient_id", "split", "view"):
        df[col] = df[col].astype(str)
    for col in ("height", "width"):
        df[col] = df[col].astype("int64")
    for lab in labels:
        df[lab] = df[lab].astype("float64") if lab in df.columns else np.nan
    df = df[list(INDEX_COLUMNS) + list(labels)].reset_index(drop=True)
    return check_index(df, site)
