"""CheXpert adapter (v1.0 small or full; train, hand-labelled valid, or test).

Layout (docs/DATA_AND_METRICS.md §2): `CheXpert-v1.0-small/{train.csv, valid.csv, train/, valid/}`
with images at `{train,valid}/patientNNNNN/studyN/viewK_{frontal,lateral}.jpg` and
CSV `Path` values carrying the release prefix (`CheXpert-v1.0-small/valid/...`).
`root` may be the release folder itself or a folder containing it. The test set
(`test_labels.csv`, Paths like `test/patient64741/...` without prefix, no
Sex/Age/Frontal/Lateral/AP/PA columns) is read with `split="test"`; pass `csv` when
it lives elsewhere.

Labels: the 14 CheXpert observations under their own (canonical) names. Values in
the CSV are 1.0 / 0.0 / -1.0 (uncertain) / blank (not mentioned). Policies:
`uncertainty` = `ignore` (-1 -> NaN, U-Ignore), `ones`, `zeros`, or `mixed` (ones for
Atelectasis and Edema, zeros for the others: the usual 5-task recipe); `blank` =
`nan` (unknown, default) or `zero`.

Demographics: `Age` and `Sex` (`Female`/`Male`; `Unknown` is NaN) become the index's
`age` and `sex`; NaN for the test set, which has neither.

Splits: train.csv -> `train`, valid.csv -> `val`, test -> `test`; `as_split` relabels
(the paper evaluates *on* valid: `split="valid", as_split="test"`). Views: the index
`view` is the AP/PA value for frontal images and `L` for laterals; `views` filters
by any of `frontal`, `lateral`, `AP`, `PA`. Patient id: `patient\\d+` in Path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.data.sites import SPLITS, DataError, Site, register_site
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

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
RELEASES: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CSV_BY_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("train.csv",),
    "valid": ("valid.csv",),
    "test": ("test_labels.csv", "test.csv"),
}
INDEX_SPLIT = {"train": "train", "valid": "val", "test": "test"}
UNCERTAINTY_POLICIES: tuple[str, ...] = ("ignore", "ones", "zeros", "mixed")
MIXED_ONES: frozenset[str] = frozenset({"Atelectasis", "Edema"})
BLANK_POLICIES: tuple[str, ...] = ("nan", "zero")
VIEW_FILTERS: tuple[str, ...] = ("frontal", "lateral", "AP", "PA")
_PATIENT_RE = re.compile(r"patient\d+")

DEFAULTS: dict[str, Any] = {
    "split": "valid",
    "as_split": None,
    "uncertainty": "ignore",
    "blank": "nan",
    "views": None,
    "csv": None,
    "missing": "error",
}


def apply_policy(values: pd.Series, label: str, uncertainty: str, blank: str) -> pd.Series:
    """Map raw CheXpert values (1, 0, -1, NaN) of one label column to 1.0 / 0.0 / NaN."""
    v = pd.to_numeric(values, errors="raise").astype("float64")
    bad = sorted(float(x) for x in set(v.dropna().unique()) - {1.0, 0.0, -1.0})
    if bad:
        raise DataError(f"column {label!r} has values {bad}; expected 1, 0, -1 or blank")
    out = v.copy()
    if blank == "zero":
        out[v.isna()] = 0.0
    unc = v == -1.0
    if uncertainty == "ignore":
        out[unc] = np.nan
    elif uncertainty == "ones" or (uncertainty == "mixed" and label in MIXED_ONES):
        out[unc] = 1.0
    else:  # zeros, or mixed for the other labels
        out[unc] = 0.0
    return out


class _Layout:
    """Where the release folder is, given a user root (the release or its parent)."""

    def __init__(self, root: Path) -> None:
        found = [root / r for r in RELEASES if (root / r).is_dir()]
        if found:
            self.release = found[0]
        elif any((root / n).is_file() for names in CSV_BY_SPLIT.values() for n in names):
            self.release = root
        else:
            raise DataError(f"site 'chexpert': {root} holds neither a CheXpert CSV nor any of {RELEASES}")

    def image_path(self, csv_path: str, csv_dir: Path) -> Path:
        """CSV Path -> file: strip a leading release prefix, then look under the release
        folder and, failing that, next to the CSV (the test set ships apart); if neither
        exists the release candidate is returned (and reported missing later)."""
        parts = Path(csv_path).parts
        if parts and parts[0] in RELEASES:
            parts = parts[1:]
        first = self.release.joinpath(*parts)
        if first.is_file() or csv_dir == self.release:
            return first
        second = csv_dir.joinpath(*parts)
        return second if second.is_file() else first


@register_site
class CheXpertSite(Site):
    """CheXpert: 14 observations with uncertainty policies; valid = 234 hand-labelled images."""

    name = "chexpert"
    labels = CHEXPERT_LABELS
    description = "CheXpert v1.0 (small/full): train.csv, valid.csv (hand labels), test_labels.csv"
    option_defaults = DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, DEFAULTS)
        check_choice(self.name, "split", opts["split"], CSV_BY_SPLIT)
        check_choice(self.name, "uncertainty", opts["uncertainty"], UNCERTAINTY_POLICIES)
        check_choice(self.name, "blank", opts["blank"], BLANK_POLICIES)
        if opts["as_split"] is not None:
            check_choice(self.name, "as_split", opts["as_split"], SPLITS)
        layout = _Layout(require_dir(self.name, root))
        csv_path = self._csv_path(layout, opts["split"], opts["csv"])
        is_test = opts["split"] == "test"
        required = ("Path",) + (() if is_test else META_COLUMNS[3:])
        raw = read_csv(csv_path, self.name, required + CHEXPERT_LABELS)
        # the image id is the Path without a release prefix, so two spellings of one image are one image
        raw["_image_id"] = raw["Path"].astype(str).map(
            lambda p: str(Path(*[q for q in Path(p).parts if q not in RELEASES]).with_suffix(""))
        )
        raw = drop_duplicate_images(raw, self.name, csv_path, key="_image_id", ignore=("Path",))
        paths = raw["Path"].astype(str)
        patients = paths.map(lambda p: m.group(0) if (m := _PATIENT_RE.search(p)) else None)
        if patients.isna().any():
            bad = paths[patients.isna()].tolist()[:3]
            raise DataError(f"{csv_path}: no 'patient<digits>' in Path for {int(patients.isna().sum())} rows, e.g. {bad}")
        frontal = (
            paths.str.contains("frontal", case=False)
            if is_test or "Frontal/Lateral" not in raw
            else raw["Frontal/Lateral"].astype(str).str.lower().eq("frontal")
        )
        ap_pa = raw["AP/PA"] if "AP/PA" in raw else pd.Series(np.nan, index=raw.index)
        view = np.where(frontal, ap_pa.astype(object).where(ap_pa.notna(), "frontal").astype(str), "L")
        df = pd.DataFrame(
            {
                "image_id": raw["_image_id"],
                "path": [str(layout.image_path(p, csv_path.parent)) for p in paths],
                "patient_id": patients,
                "split": opts["as_split"] or INDEX_SPLIT[opts["split"]],
                "view": view,
                "_frontal": frontal.to_numpy(),
                # demographics (Table 10); the test CSV has no Sex/Age columns -> NaN
                "age": raw["Age"].to_numpy() if "Age" in raw else np.nan,
                "sex": raw["Sex"].to_numpy() if "Sex" in raw else np.nan,
            }
        )
        for label in CHEXPERT_LABELS:
            try:
                df[label] = apply_policy(raw[label], label, opts["uncertainty"], opts["blank"]).to_numpy()
            except (ValueError, DataError) as exc:
                raise DataError(f"{csv_path}: {exc}") from exc
        log_step(self.name, f"read {csv_path.name}", len(raw), len(df))
        if opts["views"] is not None:
            df = self._filter_views(df, opts["views"])
        df = drop_missing_files(df, self.name, opts["missing"])
        df = attach_sizes(df)
        return finish_index(df, self.name, CHEXPERT_LABELS)

    def _csv_path(self, layout: _Layout, split: str, override: str | None) -> Path:
        if override is not None:
            path = Path(override)
            return path if path.is_absolute() else layout.release / path
        for name in CSV_BY_SPLIT[split]:
            for folder in (layout.release, layout.release.parent):
                if (folder / name).is_file():
                    return folder / name
        raise DataError(f"site 'chexpert': no {' or '.join(CSV_BY_SPLIT[split])} in {layout.release}")

    def _filter_views(self, df: pd.DataFrame, views: Any) -> pd.DataFrame:
        views = [views] if isinstance(views, str) else list(views)
        for v in views:
            check_choice(self.name, "views", v, VIEW_FILTERS)
        keep = np.zeros(len(df), dtype=bool)
        for v in views:
            if v == "frontal":
                keep |= df["_frontal"].to_numpy()
            elif v == "lateral":
                keep |= ~df["_frontal"].to_numpy()
            else:
                keep |= (df["view"] == v).to_numpy()
        log_step(self.name, f"views in {views}", len(df), int(keep.sum()))
        return df.loc[keep].reset_index(drop=True)
