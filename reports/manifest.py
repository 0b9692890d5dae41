"""The report manifest: what `bench` hands to `reports/` (see docs/DESIGN.md).

One row per (experiment, seed, report column). Required keys are listed in
`REQUIRED`. Optional keys this package understands:

* `n`, `location`: per-column metadata printed in the `n:` / `Location:` rows.
* `task`: `multilabel` (default; sigmoid outputs, AUC tables) or `multiclass`
  (one-hot labels, softmax outputs; top-1 / balanced top-1 tables).
* `pretrain_size` (images) and `series` (the curve/row a size study belongs to):
  Table 6 and Figure 3.
* `meta:<name>`: descriptive columns (e.g. `meta:Initialisation`) printed to the
  left of the numbers in the options table (Table 5).
* `n_train`: number of labelled training images (poster downstream table).
* `val_predictions`: the fine-tuned model's predictions file on its validation split
  (Youden thresholds of the initialisation study, `reports.init_study`); `init_row`: that
  study's row label for the experiment (default: from `meta:*`, see `reports.init_rows`).

Experiments and columns keep the order of their first appearance: that order is
the row and column order of every table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.data.errors import DataError

REQUIRED: tuple[str, ...] = (
    "experiment",
    "seed",
    "column",
    "site",
    "split",
    "classes",
    "predictions",
    "stage_key",
    "run_id",
)

TASKS = ("multilabel", "multiclass")


def check_manifest(manifest: pd.DataFrame) -> pd.DataFrame:
    """Validate the manifest and return a normalised copy.

    Raises `DataError` naming the missing key, the offending row or the bad value.
    Adds `task` (default `multilabel`) and turns `classes` into tuples of str.
    """
    if not isinstance(manifest, pd.DataFrame):
        raise DataError(f"report manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    missing = [c for c in REQUIRED if c not in manifest.columns]
    if missing:
        raise DataError(f"report manifest lacks keys {missing}; has {list(manifest.columns)}")
    if manifest.empty:
        raise DataError("report manifest has no rows: nothing to report")
    m = manifest.copy().reset_index(drop=True)
    classes = []
    for i, value in enumerate(m["classes"]):
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise DataError(f"report manifest row {i}: `classes` must be a list of class names, got {value!r}")
        names = tuple(str(c) for c in value)
        if not names:
            raise DataError(f"report manifest row {i}: `classes` is empty")
        classes.append(names)
    m["classes"] = classes
    if "task" not in m.columns:
        m["task"] = "multilabel"
    m["task"] = m["task"].fillna("multilabel")
    bad = sorted(set(m["task"]) - set(TASKS))
    if bad:
        raise DataError(f"report manifest: unknown `task` values {bad}; allowed {TASKS}")
    dup = m.duplicated(["experiment", "seed", "column"], keep=False)
    if dup.any():
        first = m.loc[dup, ["experiment", "seed", "column"]].iloc[0].tolist()
        raise DataError(f"report manifest: (experiment, seed, column) {first} appears more than once")
    return m


def ordered(values: pd.Series) -> list:
    """Unique values in order of first appearance (the table order)."""
    return list(dict.fromkeys(values.tolist()))


def column_meta(manifest: pd.DataFrame, column: str, key: str) -> object:
    """The first non-missing value of a per-column key (`n`, `location`), or None."""
    if key not in manifest.columns:
        return None
    for v in manifest.loc[manifest["column"] == column, key]:
        if not is_missing(v):
            return v
    return None


def is_missing(value: object) -> bool:
    """None or a float NaN (pandas' two spellings of 'no value' in object columns)."""
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not (
        isinstance(value, (float, np.floating)) and np.isnan(value)
    )
