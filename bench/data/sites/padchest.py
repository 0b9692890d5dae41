"""PadChest (BIMCV, Hospital San Juan, Alicante): the 160K labels CSV + 16-bit PNGs.

Official layout (``root``):

* ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or the same name with
  ``.gz``, as torchxrayvision ships it), one row per image;
* images ``<ImageDir>/<ImageID>`` (the numbered archives ``0.zip`` ... ``54.zip``
  extracted into folders ``0`` ... ``54``), or all images in one flat folder.

Labels come from the ``Labels`` column, a Python-list string whose tokens often
carry a leading space (``"['cardiomegaly', ' pleural effusion']"``). Tokens are
mapped to canonical names through the explicit table `TOKEN_TO_LABEL`; substring
matching is never used (it would count ``pericardial effusion`` as a pleural
effusion, and ``subcutaneous emphysema`` as emphysema). A label is 1.0 when any of
its tokens is present, 0.0 otherwise; rows whose ``Labels`` is empty (103 in the
CSV) are unknown (NaN) for every label.

Filters (each optional; the default keeps every row, and every filter logs the row
count before and after): ``projections`` (``Projection`` values: PA, AP,
AP_horizontal, L, COSTAL, EXCLUDE, UNK), ``method_projection`` (``manual`` = "Manual
review of DICOM fields" or ``model`` = "resnet-50.t7"), ``method_label``
(``Physician`` or ``RNN_model``), ``image_dirs`` (``ImageDir`` numbers).
The 21 files known to be corrupt or missing in the public release
(`KNOWN_BAD_IMAGES`) are dropped with a warning listing them
(``skip_known_bad=False`` keeps them).

PadChest has no official split: every row gets ``split`` (default ``train``; pass
``split="test"`` when the site is an external test set). ``view`` is the
``Projection`` value verbatim. ``height``/``width`` are ``Rows_DICOM``/``Columns_DICOM``
(``sizes="header"`` reads them from each PNG header instead). ``age`` is the study
year (``StudyDate_DICOM``) minus the birth year (``PatientBirth``), ``sex`` is
``PatientSex_DICOM``; both are in the standard index (`demographics` gives them for
every CSV row, without the image checks).
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import pandas as pd

from bench.data.labels import NIH14
from bench.data.sites import INDEX_COLUMNS, SPLITS, DataError, Site, check_index, register_site
from bench.data.sites.generic import attach_sizes, checked_sizes, drop_duplicate_images, normalise_age, normalise_sex

log = logging.getLogger(__name__)

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"

PROJECTIONS: tuple[str, ...] = ("PA", "AP", "AP_horizontal", "L", "COSTAL", "EXCLUDE", "UNK")
METHOD_PROJECTION: dict[str, str] = {
    "manual": "Manual review of DICOM fields",
    "model": "resnet-50.t7",
}
METHOD_LABEL: tuple[str, ...] = ("Physician", "RNN_model")

# Token (stripped, as in the CSV) -> canonical label. Every PadChest token that names
# one of the NIH-14 findings is listed; everything else maps to nothing.
TOKEN_TO_LABEL: dict[str, str] = {
    # Atelectasis and all its subtypes (Krones Table 12 counts subtypes as Atelectasis).
    "atelectasis": "Atelectasis",
    "laminar atelectasis": "Atelectasis",
    "lobar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis",
    "total atelectasis": "Atelectasis",
    "round atelectasis": "Atelectasis",
    "atelectasis basal": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    # Pleural effusion only: `pericardial effusion` is fluid around the heart, and
    # `hydropneumothorax` is counted as a pneumothorax (as xrv leaves it unmatched).
    "pleural effusion": "Pleural Effusion",
    "loculated pleural effusion": "Pleural Effusion",
    "loculated fissural effusion": "Pleural Effusion",
    "infiltrates": "Infiltration",
    "mass": "Mass",
    "pulmonary mass": "Mass",
    "nodule": "Nodule",
    "multiple nodules": "Nodule",
    "pneumonia": "Pneumonia",
    "atypical pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": "Pneumothorax",
    # Consolidation proper; `air bronchogram` (a sign xrv adds) is not mapped.
    "consolidation": "Consolidation",
    # The only edema token; `heart insufficiency` is a diagnosis, not the finding.
    "pulmonary edema": "Edema",
    # Lung emphysema; `subcutaneous emphysema` is air in the soft tissue.
    "emphysema": "Emphysema",
    "pulmonary fibrosis": "Fibrosis",
    "pleural thickening": "Pleural Thickening",
    "apical pleural thickening": "Pleural Thickening",
    "calcified pleural thickening": "Pleural Thickening",
    "hiatal hernia": "Hernia",
}

# Files of the public release that are corrupt (broken PNG chunk, truncated) or
# missing from their archive (torchxrayvision PR #137; docs/DATA_AND_METRICS.md §3).
_BAD_PREFIX = "216840111366964"
KNOWN_BAD_IMAGES: dict[str, str] = {
    _BAD_PREFIX + stem + ".png": why
    for why, stems in (
        ("broken PNG chunk", ("012989926673512011083134050913_00-168-009", "012989926673512011151082430686_00-157-045")),
        (
            "image file is truncated",
            (
                "012373310883942009152114636712_00-102-045",
                "012819207061112010281134410801_00-129-131",
                "012487858717522009280135853083_00-075-001",
                "013686042548532013208193054515_02-026-007",
                "013590140476722013058110301622_02-056-111",
                "013590140476722013043111952381_02-065-198",
                "013829543166512013353113303615_02-092-190",
                "013962490064942014134093945580_01-178-104",
            ),
        ),
        (
            "missing from its archive",
            (
                "012819207061112010307142602253_04-014-084",
                "012989926673512011074122523403_00-163-058",
                "012959786098432011033083840143_00-176-115",
                "012558082906712009327122220177_00-102-064",
                "012339356563862009072111404053_00-043-192",
                "013076187734852011291090445391_00-196-188",
                "012373310883942009117084022290_00-064-025",
                "012283393834152009033102258826_00-059-087",
                "012373310883942009170084120009_00-097-074",
                "012819207061112010315104455352_04-024-184",
                "012819207061112010306085429121_04-020-102",
            ),
        ),
    )
    for stem in stems
}

_USECOLS = (
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "Projection",
    "MethodProjection",
    "MethodLabel",
    "Rows_DICOM",
    "Columns_DICOM",
    "Labels",
)
_OPTIONS = ("projections", "method_projection", "method_label", "image_dirs", "split", "skip_known_bad",
            "sizes", "missing", "csv")
_TOKEN_RE = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def parse_labels(cell: object) -> frozenset[str] | None:
    """Tokens of one ``Labels`` cell, stripped, without empties; None for a null cell.

    The cell is a Python list literal; it is read with `ast.literal_eval` (literals
    only, nothing is executed) and, should that fail, with a quoted-string regex.
    """
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    text = str(cell).strip()
    if not text or text.lower() == "nan":
        return None
    try:
        value = ast.literal_eval(text)
        items: Iterable[Any] = value if isinstance(value, (list, tuple, set)) else [value]
    except (ValueError, SyntaxError):
        items = [a or b for a, b in _TOKEN_RE.findall(text)]
    return frozenset(t for t in (str(i).strip() for i in items) if t)


def labels_from_tokens(tokens: frozenset[str] | None, labels: Iterable[str] = NIH14) -> dict[str, float]:
    """Canonical label vector of one image: 1.0 if any mapped token is present, else 0.0;
    NaN everywhere when the cell was null."""
    names = tuple(labels)
    if tokens is None:
        return {n: float("nan") for n in names}
    present = {TOKEN_TO_LABEL[t] for t in tokens if t in TOKEN_TO_LABEL}
    return {n: 1.0 if n in present else 0.0 for n in names}


def label_matrix(cells: pd.Series, labels: Iterable[str] = NIH14) -> pd.DataFrame:
    """Label frame (one float column per canonical name) for a column of ``Labels`` cells.

    Each distinct cell string is parsed once (many rows share e.g. ``['normal']``).
    """
    names = list(labels)
    codes, uniques = pd.factorize(cells, use_na_sentinel=True)
    rows = (labels_from_tokens(parse_labels(u), names) for u in uniques)
    table = np.array([[row[n] for n in names] for row in rows], dtype=float).reshape(len(uniques), len(names))
    table = np.vstack([table, np.full((1, len(names)), np.nan)])  # row -1: null cells
    return pd.DataFrame(table[codes], columns=names, index=cells.index)


def find_csv(root: Path, csv: str | Path | None = None) -> Path:
    """The labels CSV: `csv` (absolute or relative to root) or the official name (.csv/.csv.gz)."""
    if csv is not None:
        p = Path(csv)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DataError(f"padchest: labels CSV {p} does not exist")
        return p
    for name in (CSV_NAME, CSV_NAME + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"padchest: {root} holds neither {CSV_NAME} nor {CSV_NAME}.gz")


def read_labels_csv(path: Path) -> pd.DataFrame:
    """The columns of the labels CSV this adapter uses, IDs as strings."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"padchest: cannot read labels CSV {path}: {exc}") from exc
    missing = [c for c in _USECOLS if c not in header]
    if missing:
        raise DataError(f"padchest: labels CSV {path} lacks columns {missing}")
    return pd.read_csv(
        path,
        usecols=list(_USECOLS),
        dtype={"ImageID": str, "StudyID": str, "PatientID": str, "Labels": str, "Projection": str},
        low_memory=False,
    )


def _filter(df: pd.DataFrame, mask: pd.Series, what: str) -> pd.DataFrame:
    out = df[mask]
    log.info("padchest: %s: %d -> %d rows", what, len(df), len(out))
    return out


def _as_list(value: Any, option: str) -> list[Any]:
    if isinstance(value, (str, int)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise DataError(f"padchest: option {option!r} must be a value or a list, got {value!r}") from None


def select_rows(
    df: pd.DataFrame,
    *,
    projections: Iterable[str] | str | None = None,
    method_projection: str | None = None,
    method_label: str | None = None,
    image_dirs: Iterable[int] | int | None = None,
    skip_known_bad: bool = True,
) -> pd.DataFrame:
    """Apply the optional row filters (see the module docstring) to the labels CSV."""
    if projections is not None:
        wanted = _as_list(projections, "projections")
        unknown = sorted(set(wanted) - set(PROJECTIONS))
        if unknown:
            raise DataError(f"padchest: unknown projections {unknown}; valid: {list(PROJECTIONS)}")
        df = _filter(df, df["Projection"].isin(wanted), f"Projection in {wanted}")
    if method_projection is not None:
        key = str(method_projection)
        value = METHOD_PROJECTION.get(key.lower(), key)
        if value not in METHOD_PROJECTION.values():
            raise DataError(
                f"padchest: unknown method_projection {key!r}; valid: {list(METHOD_PROJECTION)} "
                f"or {list(METHOD_PROJECTION.values())}"
            )
        df = _filter(df, df["MethodProjection"] == value, f"MethodProjection == {value!r}")
    if method_label is not None:
        lookup = {m.lower(): m for m in METHOD_LABEL}
        value = lookup.get(str(method_label).lower())
        if value is None:
            raise DataError(f"padchest: unknown method_label {method_label!r}; valid: {list(METHOD_LABEL)}")
        df = _filter(df, df["MethodLabel"] == value, f"MethodLabel == {value!r}")
    if image_dirs is not None:
        try:
            dirs = [int(d) for d in _as_list(image_dirs, "image_dirs")]
        except ValueError as exc:
            raise DataError(f"padchest: image_dirs must be integers, got {image_dirs!r}") from exc
        df = _filter(df, df["ImageDir"].isin(dirs), f"ImageDir in {dirs}")
    if skip_known_bad:
        bad = df["ImageID"].isin(list(KNOWN_BAD_IMAGES))
        if bad.any():
            log.warning(
                "padchest: dropping %d known corrupt/missing images: %s",
                int(bad.sum()),
                ", ".join(f"{i} ({KNOWN_BAD_IMAGES[i]})" for i in df.loc[bad, "ImageID"]),
            )
        df = _filter(df, ~bad, "known bad images removed")
    return df


def _age_years(df: pd.DataFrame) -> pd.Series:
    year = pd.to_numeric(df["StudyDate_DICOM"], errors="coerce") // 10000
    return (year - pd.to_numeric(df["PatientBirth"], errors="coerce")).astype(float)


def _image_paths(root: Path, df: pd.DataFrame) -> pd.Series:
    """``<root>/<ImageDir>/<ImageID>``, or ``<root>/<ImageID>`` when only the flat file exists."""
    root = root.resolve()
    nested = [root / str(int(d)) / i for d, i in zip(df["ImageDir"], df["ImageID"])]
    flat = [root / i for i in df["ImageID"]]
    chosen = [n if n.is_file() or not f.is_file() else f for n, f in zip(nested, flat)]
    return pd.Series([str(p) for p in chosen], index=df.index, dtype=object)


@register_site
class PadChest(Site):
    name: ClassVar[str] = "padchest"
    labels: ClassVar[tuple[str, ...]] = NIH14
    description: ClassVar[str] = "PadChest 160K (BIMCV): labels CSV + 16-bit PNGs in ImageDir folders"
    option_defaults = dict.fromkeys(_OPTIONS)  # the options `load_index` takes (checked at plan time)
    # Keyword arguments for `bench.data.io.read_image` that suit this site's files: the
    # PNGs hold 10/12-bit values in 16-bit containers, so dividing by 65535 (the
    # default) leaves images at <= 6 % brightness; "bits" scales by the stored depth.
    read_options: ClassVar[dict[str, str]] = {"png16": "bits"}

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        """Standard index of the rows selected by `options` (see the module docstring).

        Options: projections, method_projection, method_label, image_dirs,
        skip_known_bad (True), split ("train"), sizes ("csv" | "header"),
        missing ("error" | "drop": what to do with rows whose PNG is absent),
        csv (path of the labels CSV when not at the official place).
        """
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise DataError(f"padchest: unknown options {unknown}; valid: {list(_OPTIONS)}")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"padchest: root {root} is not a directory")
        split = options.get("split", "train")
        if split not in SPLITS:
            raise DataError(f"padchest: split {split!r} is not one of {SPLITS}")
        sizes = options.get("sizes", "csv")
        if sizes not in ("csv", "header"):
            raise DataError(f"padchest: sizes {sizes!r} is not 'csv' or 'header'")
        missing = options.get("missing", "error")
        if missing not in ("error", "drop"):
            raise DataError(f"padchest: missing {missing!r} is not 'error' or 'drop'")

        csv_path = find_csv(root, options.get("csv"))
        df = read_labels_csv(csv_path)
        log.info("padchest: %s: %d rows", csv_path.name, len(df))
        df = drop_duplicate_images(df, self.name, csv_path, key="ImageID")
        df = select_rows(
            df,
            projections=options.get("projections"),
            method_projection=options.get("method_projection"),
            method_label=options.get("method_label"),
            image_dirs=options.get("image_dirs"),
            skip_known_bad=bool(options.get("skip_known_bad", True)),
        )
        return build_index(root, df, split=split, sizes=sizes, missing=missing)


def build_index(root: Path, df: pd.DataFrame, *, split: str, sizes: str, missing: str) -> pd.DataFrame:
    """Turn selected CSV rows into the standard index (paths checked on disk)."""
    paths = _image_paths(root, df)
    exists = np.fromiter((Path(p).is_file() for p in paths), dtype=bool, count=len(paths))
    if not exists.all():
        absent = paths[~exists].tolist()
        if missing == "error":
            raise DataError(
                f"padchest: {len(absent)} of {len(paths)} images are missing under {root}, e.g. "
                f"{absent[:3]} (pass missing='drop' to index only the images present)"
            )
        log.warning("padchest: %d of %d images missing under %s; dropped", len(absent), len(paths), root)
        df, paths = df[exists], paths[exists]

    if sizes == "header":  # an unreadable header gives -1 (the image policy decides), as in every adapter
        hw = attach_sizes(pd.DataFrame({"path": paths.to_numpy()}))
        height, width = hw["height"].to_numpy(), hw["width"].to_numpy()
    else:
        height = checked_sizes(df["Rows_DICOM"], "padchest", "the labels CSV")
        width = checked_sizes(df["Columns_DICOM"], "padchest", "the labels CSV")

    index = pd.DataFrame(
        {
            "image_id": df["ImageID"].to_numpy(),
            "path": paths.to_numpy(),
            "patient_id": df["PatientID"].to_numpy(),
            "split": split,
            "view": df["Projection"].to_numpy(),
            "height": np.asarray(height, dtype=np.int64),
            "width": np.asarray(width, dtype=np.int64),
            "site": PadChest.name,
            "age": normalise_age(_age_years(df)).to_numpy(),
            "sex": normalise_sex(df["PatientSex_DICOM"]).to_numpy(),
        },
        columns=list(INDEX_COLUMNS),
    )
    labels = label_matrix(df["Labels"]).reset_index(drop=True)
    index = pd.concat([index, labels], axis=1)
    return check_index(index, PadChest.name)


def demographics(root: Path, **options: Any) -> pd.DataFrame:
    """``image_id, patient_id, age, sex`` for every CSV row (for the dataset tables).

    The standard index carries the same ``age`` and ``sex``; this reads the CSV alone
    (no image checks), for tables over rows whose images are not on disk. ``age`` is
    the study year minus ``PatientBirth`` (years, NaN if unknown); ``sex`` is
    ``PatientSex_DICOM`` (F, M, O, or NaN). Takes the same options as
    `PadChest.load_index`; only ``csv`` matters here.
    """
    df = read_labels_csv(find_csv(Path(root), options.get("csv")))
    return pd.DataFrame(
        {
            "image_id": df["ImageID"].to_numpy(),
            "patient_id": df["PatientID"].to_numpy(),
            "age": _age_years(df).to_numpy(),
            "sex": df["PatientSex_DICOM"].to_numpy(),
        }
    )
