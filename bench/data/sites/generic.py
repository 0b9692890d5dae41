"""Generic folder site, and the small reading tools every adapter shares.

The shared tools (`check_options`, `read_csv`, `drop_duplicate_images`, `attach_sizes`,
`finish_index`, `log_step`, `drop_missing_files`) live here because the generic adapter
is their most general user: it reads any image tree with an optional labels CSV. The
dataset adapters (`nih`, `chexpert`, ...) import them from this module.

The generic site itself is defined further down (`GenericSite`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.data.io import image_size, is_dicom
from bench.data.sites import INDEX_COLUMNS, DataError, Site, check_index, register_site

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".dic", ".tif", ".tiff", ".bmp"})
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


def log_step(site: str, step: str, before: int, after: int) -> None:
    """Log how many rows a filtering step kept (every adapter logs every filter)."""
    log.info("site %s: %s: %d -> %d rows", site, step, before, after)


def _names(files: Iterable[Any]) -> str:
    names = sorted({str(f) for f in files})
    return names[0] if len(names) == 1 else "{" + ", ".join(names) + "}"


def drop_duplicate_images(
    df: pd.DataFrame,
    site: str,
    source: str | Path | Sequence[str | Path],
    *,
    key: str | Sequence[str] = "image_id",
    ignore: Sequence[str] = (),
    file_col: str | None = None,
) -> pd.DataFrame:
    """The rows of a label table with each image listed once.

    Every adapter passes the rows it read from its label file(s) (`source`, named in
    messages; with several files, `file_col` holds each row's file so that messages
    name only the files involved) through here before they become index rows,
    because an image listed twice would otherwise enter training and evaluation
    twice. Rows sharing `key` (the image id, or e.g. image id + reader) that are
    identical in every other column but `ignore` and `file_col` are copies: all but
    the first are dropped and the count is logged. Rows sharing `key` that disagree
    (other labels, split, patient...) cannot be resolved without guessing: a
    `DataError` names the file(s), the number of such image ids, a few of them and
    the columns that differ.
    """
    keys = [key] if isinstance(key, str) else list(key)
    repeated = df.duplicated(keys, keep=False)
    if not repeated.any():
        return df
    skip = {*ignore, *([file_col] if file_col else [])}
    compare = [c for c in df.columns if c not in skip]

    def where(rows: pd.Series) -> str:
        if file_col is not None:
            return _names(df.loc[rows, file_col])
        return _names([source] if isinstance(source, (str, Path)) else source)

    distinct = df.loc[repeated, compare].drop_duplicates()  # NaN equals NaN here: blank labels compare equal
    conflict = distinct.duplicated(keys, keep=False)
    if conflict.any():
        clash = distinct[conflict]
        ids = clash[keys].drop_duplicates()
        first = clash.merge(ids.head(1), on=keys)
        differ = [c for c in compare if c not in keys and first[c].astype(str).nunique(dropna=False) > 1]
        rows = repeated & df.set_index(keys).index.isin(ids.set_index(keys).index)
        examples = [v[0] if len(v) == 1 else v for v in ids.head(3).itertuples(index=False, name=None)]
        raise DataError(
            f"site {site!r}: {where(rows)}: {len(ids)} image id(s) listed more than once with conflicting "
            f"values ({int(rows.sum())} rows), e.g. {examples} (the first differs in {differ}); "
            "remove or correct the duplicate rows"
        )
    copy = df.duplicated(compare)
    ids = df.loc[copy, keys].drop_duplicates()
    examples = [v[0] if len(v) == 1 else v for v in ids.head(3).itertuples(index=False, name=None)]
    log.warning(
        "site %s: %s: dropped %d identical duplicate row(s) of %d image id(s), e.g. %s",
        site, where(repeated), int(copy.sum()), len(ids), examples,
    )
    return df.loc[~copy].reset_index(drop=True)


def checked_sizes(values: pd.Series, site: str, source: str | Path) -> np.ndarray:
    """Image sizes taken from a metadata table (`Rows`, `Rows_DICOM`...) as int64.

    A missing or non-positive value becomes -1, the mark `attach_sizes` gives an unreadable
    header, with a warning and a count: the run's image policy then skips (and counts) or
    fails on the image, instead of the DBB sampler or the token table failing on it later.
    """
    numeric = pd.to_numeric(values, errors="coerce")
    bad = ~(numeric > 0)
    if bad.any():
        log.warning(
            "site %s: %s: %d image(s) with a missing or non-positive %s (size -1; handled by the image policy)",
            site, source, int(bad.sum()), values.name,
        )
    return numeric.where(~bad, -1).astype("int64").to_numpy()


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


def size_cache_dir() -> Path:
    """Where header-derived image sizes are remembered: `$BENCH_CACHE_DIR` or ~/.cache/medssl-bench."""
    return Path(os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "medssl-bench") / "sizes"


def _size_cache_file(paths: Sequence[str]) -> Path:
    common = os.path.commonpath([str(Path(p).resolve().parent) for p in paths[:1000]] or ["/"])
    return size_cache_dir() / f"{hashlib.sha256(common.encode()).hexdigest()[:16]}.parquet"


def attach_sizes(df: pd.DataFrame) -> pd.DataFrame:
    """Fill `height`/`width` from each file's header (`bench.data.io.image_size`: PIL
    reads only the header, DICOM is read without pixel data).

    Header reads cost ~0.2 ms per PNG (about 22 s for the 112,120 NIH images), and every
    stage process indexes its sites, so sizes are remembered in a small parquet file
    (`size_cache_dir()`) keyed by path, modification time and file size: a changed file
    is read again, an unchanged one costs one `stat`.

    A file whose header cannot be read gets size -1 and a warning, rather than failing
    the whole index: the run's image policy (skip with a count, or fail naming the
    file) decides what happens when a stage reaches it.
    """
    paths = [str(p) for p in df["path"]]
    cache_file = _size_cache_file(paths) if paths else None
    known: dict[str, tuple[int, int, int, int]] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            c = pd.read_parquet(cache_file)
            known = {r.path: (r.mtime_ns, r.nbytes, r.height, r.width) for r in c.itertuples(index=False)}
        except (OSError, ValueError, AttributeError):
            known = {}  # an unreadable cache is rebuilt, never trusted
    sizes: list[tuple[int, int]] = []
    fresh: dict[str, tuple[int, int, int, int]] = {}
    bad: list[str] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            st = None
        hit = known.get(p)
        if st is not None and hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size and hit[2] > 0:
            sizes.append((hit[2], hit[3]))
            continue
        try:
            h, w = image_size(Path(p))
        except DataError:
            sizes.append((-1, -1))
            bad.append(p)
            continue
        sizes.append((h, w))
        if st is not None:
            fresh[p] = (st.st_mtime_ns, st.st_size, h, w)
    if bad:
        log.warning("%d images with unreadable headers (size -1; handled by the image policy), e.g. %s", len(bad), bad[:3])
    if fresh and cache_file is not None:
        _write_size_cache(cache_file, {**known, **fresh})
    df = df.copy()
    df["height"] = [h for h, _ in sizes]
    df["width"] = [w for _, w in sizes]
    return df


def _write_size_cache(cache_file: Path, rows: Mapping[str, tuple[int, int, int, int]]) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(
            [(p, *v) for p, v in rows.items()], columns=["path", "mtime_ns", "nbytes", "height", "width"]
        )
        fd, tmp = tempfile.mkstemp(prefix=".sizes.", suffix=".tmp", dir=cache_file.parent)
        os.close(fd)
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, cache_file)
    except OSError as exc:  # a read-only home must not break indexing
        log.warning("could not write the image-size cache %s: %s", cache_file, exc)


_SEX_CODES: dict[str, str] = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M", "O": "O", "OTHER": "O"}


def normalise_sex(values: pd.Series) -> pd.Series:
    """Sex spellings of the sites (NIH/PadChest ``F``/``M``/``O``, CheXpert ``Female``/``Male``)
    as ``F``/``M``/``O``; anything else (``Unknown``, blank) is NaN, so it counts as not recorded."""
    return values.map(lambda v: _SEX_CODES.get(str(v).strip().upper(), np.nan) if pd.notna(v) else np.nan).astype(object)


def normalise_age(values: pd.Series) -> pd.Series:
    """Age in years as float; non-numbers and impossible values (< 0 or > 130, e.g. the
    original NIH CSV's 414-year-olds) are NaN rather than skewing the mean and max."""
    age = pd.to_numeric(values, errors="coerce").astype("float64")
    return age.where((age >= 0) & (age <= 130))


def finish_index(df: pd.DataFrame, site: str, labels: Sequence[str]) -> pd.DataFrame:
    """Order columns (INDEX_COLUMNS then `labels`), fix dtypes, validate the contract.

    `age` and `sex` are optional in `df` (NaN where the site has none) and normalised
    (`normalise_age`, `normalise_sex`)."""
    df = df.copy()
    df["site"] = site
    df["age"] = normalise_age(df["age"]) if "age" in df.columns else np.nan
    df["sex"] = normalise_sex(df["sex"]) if "sex" in df.columns else pd.Series(np.nan, index=df.index, dtype=object)
    for col in ("image_id", "path", "patient_id", "split", "view"):
        df[col] = df[col].astype(str)
    for col in ("height", "width"):
        df[col] = df[col].astype("int64")
    for lab in labels:
        df[lab] = df[lab].astype("float64") if lab in df.columns else np.nan
    df = df[list(INDEX_COLUMNS) + list(labels)].reset_index(drop=True)
    return check_index(df, site)


# -- the generic site -------------------------------------------------------------------
GENERIC_DEFAULTS: dict[str, Any] = {
    "labels_csv": None,
    "image_col": "image",
    "patient_col": None,
    "label_cols": None,
    "class_col": None,
    "split_col": None,
    "view_col": None,
    "patient_pattern": None,
    "unlisted": "drop",
    "missing": "error",
}
UNLISTED_POLICIES = ("drop", "keep")


def list_images(root: Path) -> list[Path]:
    """Every image file under `root` (by extension, or DICOM magic for extension-less files)."""
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(p)):
            out.append(p)
    return out


def dicom_fields(path: Path) -> dict[str, str]:
    """PatientID and ViewPosition from a DICOM header ('' when absent or not DICOM)."""
    if not is_dicom(path):
        return {"PatientID": "", "ViewPosition": ""}
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise DataError(f"cannot read DICOM header of {path}: {exc}") from exc
    return {"PatientID": str(ds.get("PatientID", "") or ""), "ViewPosition": str(ds.get("ViewPosition", "") or "")}


@register_site
class GenericSite(Site):
    """Any PNG/JPEG/DICOM tree, optionally with a labels CSV (the in-house PACS case).

    Images: every image file under `root` (`list_images`); `image_id` is the path
    relative to `root` without its suffix.
    Labels CSV (`labels_csv`, relative to `root` or absolute): `image_col` holds the
    image path relative to `root`. Multi-label: `label_cols` (default: every column
    not used for image/patient/split/view/class) with values 1, 0 or blank (NaN).
    Multi-class: `class_col` names one column of class names, expanded to one-hot
    columns (sorted names). Images not in the CSV are dropped (`unlisted="drop"`) or
    kept with NaN labels (`"keep"`); CSV rows whose image is missing follow `missing`.
    Patient id, first match wins: `patient_col` in the CSV; `patient_pattern`, a regex
    whose first group is taken from the relative POSIX path; the DICOM PatientID; the
    image id. Split: `split_col` (values train/val/test) or `train` everywhere (split
    by patient later, `bench.data.splits`). View: `view_col`, DICOM ViewPosition, or
    `unknown`.
    """

    name = "generic"
    labels = ()
    description = "any PNG/JPEG/DICOM folder + optional labels CSV (multi-label or multi-class)"
    option_defaults = GENERIC_DEFAULTS  # the options `load_index` takes (checked at plan time)

    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        opts = check_options(self.name, options, GENERIC_DEFAULTS)
        check_choice(self.name, "unlisted", opts["unlisted"], UNLISTED_POLICIES)
        check_choice(self.name, "missing", opts["missing"], MISSING_POLICIES)
        root = require_dir(self.name, root)
        files = list_images(root)
        df = pd.DataFrame({"path": [str(p) for p in files], "rel": [p.relative_to(root).as_posix() for p in files]})
        log_step(self.name, f"image files under {root}", len(df), len(df))
        labels: tuple[str, ...] = ()
        if opts["labels_csv"] is not None:
            df, labels = self._join_labels(root, df, opts)
        if df.empty:
            raise DataError(f"site 'generic': no images under {root}")
        df["image_id"] = df["rel"].map(lambda r: str(Path(r).with_suffix("")))
        dicom = [dicom_fields(Path(p)) for p in df["path"]]
        patient = df["_patient"] if "_patient" in df else pd.Series(np.nan, index=df.index, dtype=object)
        if opts["patient_pattern"] is not None:
            pattern = re.compile(opts["patient_pattern"])
            if pattern.groups < 1:
                raise DataError(f"site 'generic': patient_pattern {opts['patient_pattern']!r} needs a capturing group")
            from_path = df["rel"].map(lambda r: m.group(1) if (m := pattern.search(r)) else None)
            patient = patient.where(patient.notna(), from_path)
        from_dicom = pd.Series([d["PatientID"] or None for d in dicom], index=df.index, dtype=object)
        patient = patient.where(patient.notna(), from_dicom)
        df["patient_id"] = patient.where(patient.notna(), df["image_id"]).astype(str)
        view = df["_view"] if "_view" in df else pd.Series(np.nan, index=df.index, dtype=object)
        view = view.where(view.notna(), pd.Series([d["ViewPosition"] or None for d in dicom], index=df.index, dtype=object))
        df["view"] = view.where(view.notna(), "unknown").astype(str)
        if "_split" in df:
            bad = sorted(set(df["_split"].astype(str)) - {"train", "val", "test"})
            if bad:
                raise DataError(
                    f"site 'generic': split column {opts['split_col']!r} has values {bad}; allowed train/val/test"
                )
            df["split"] = df["_split"].astype(str)
        else:
            df["split"] = "train"
        df = attach_sizes(df)
        return finish_index(df, self.name, labels)

    def _join_labels(
        self, root: Path, df: pd.DataFrame, opts: dict[str, Any]
    ) -> tuple[pd.DataFrame, tuple[str, ...]]:
        """Merge the labels CSV onto the image list (`df`: path, rel); returns (frame, label names).

        Side columns `_patient`, `_split`, `_view` carry the CSV's optional columns.
        """
        csv_path = Path(opts["labels_csv"])
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path
        roles = ("image_col", "patient_col", "split_col", "view_col", "class_col")
        used = {opts[k]: k for k in roles if opts[k] is not None}  # CSV column -> role
        table = read_csv(csv_path, self.name, list(used) + list(opts["label_cols"] or []), dtype={opts["image_col"]: str})
        if opts["class_col"] is not None:
            names = table[opts["class_col"]]
            labels = tuple(sorted(names.dropna().astype(str).unique()))
            for c in labels:
                table[c] = np.where(names.isna(), np.nan, (names.astype(str) == c).astype(float))
        else:
            labels = tuple(opts["label_cols"] if opts["label_cols"] is not None else [c for c in table.columns if c not in used])
            for c in labels:
                table[c] = _binary_column(table[c], f"{csv_path}: label column {c!r}")
        table["_rel"] = table[opts["image_col"]].astype(str).map(lambda r: Path(r).as_posix())  # Path drops a leading ./
        table = drop_duplicate_images(table, self.name, csv_path, key="_rel", ignore=(opts["image_col"],))
        rel = table["_rel"]
        side = {"patient_col": "_patient", "split_col": "_split", "view_col": "_view"}
        listed = pd.DataFrame(
            {
                "rel": rel.to_numpy(),
                **{side[role]: table[col].to_numpy() for col, role in used.items() if role in side},
                **{c: table[c].to_numpy() for c in labels},
            }
        )
        merged = listed.merge(df, on="rel", how="outer", indicator=True)
        lost = merged["_merge"] == "left_only"
        if lost.any() and opts["missing"] == "error":
            raise DataError(
                f"{csv_path}: {int(lost.sum())} listed image(s) not found under {root}, "
                f"e.g. {merged.loc[lost, 'rel'].tolist()[:3]}; pass missing='drop' to skip them"
            )
        if lost.any():
            log_step(self.name, "drop listed images that are missing", len(merged), int((~lost).sum()))
            merged = merged[~lost]
        unlisted = merged["_merge"] == "right_only"
        if unlisted.any() and opts["unlisted"] == "drop":
            log_step(self.name, f"drop images not listed in {csv_path.name}", len(merged), int((~unlisted).sum()))
            merged = merged[~unlisted]
        merged = merged.drop(columns="_merge").sort_values("rel").reset_index(drop=True)
        return merged, labels


def _binary_column(values: pd.Series, where: str) -> pd.Series:
    """1 / 0 / blank -> 1.0 / 0.0 / NaN; anything else is a DataError naming `where`."""
    numeric = pd.to_numeric(values, errors="coerce")
    not_numbers = set(values[numeric.isna() & values.notna()].astype(str))
    not_binary = {str(v) for v in set(numeric.dropna()) - {0.0, 1.0}}
    bad = sorted(not_numbers | not_binary)
    if bad:
        raise DataError(f"{where} has values {bad[:5]}; expected 1, 0 or blank")
    return numeric.astype(float)
