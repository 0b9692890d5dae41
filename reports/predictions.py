"""Read the prediction parquet files written by evaluate stages.

Format (docs/DESIGN.md): one row per image, `image_id, patient_id, site, split`,
then per class `label:<class>` (1/0/NaN) and `prob:<class>` (probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bench.data.errors import DataError

ID_COLUMNS = ("image_id", "patient_id", "site", "split")


@dataclass(frozen=True)
class Predictions:
    """Labels and scores of one evaluated model on one report column.

    `y_true`, `y_score`: float64 arrays of shape (N, C), columns in `classes` order.
    `image_ids`: shape (N,), the row order (sorted by image_id so that the arrays of
    different runs on the same images line up for paired statistics).
    """

    path: Path
    classes: tuple[str, ...]
    image_ids: np.ndarray
    y_true: np.ndarray
    y_score: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y_true.shape[0])


def load_predictions(path: str | Path, classes: Sequence[str]) -> Predictions:
    """Load one predictions parquet restricted to `classes` (in that order).

    Raises `DataError` naming the file when it is missing or unreadable, lacks an
    id / label / prob column, has duplicate image ids, probabilities outside [0, 1]
    or NaN, or labels other than 0/1/NaN.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: predictions file does not exist")
    want = [f"label:{c}" for c in classes] + [f"prob:{c}" for c in classes]
    try:
        have = pq.read_schema(p).names
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{p}: cannot read predictions parquet ({exc})") from exc
    missing = [c for c in ("image_id", *want) if c not in have]
    if missing:
        raise DataError(f"{p}: predictions lack columns {missing}; has {have}")
    try:
        df = pd.read_parquet(p, columns=["image_id", *want])
    except Exception as exc:
        raise DataError(f"{p}: cannot read predictions parquet ({exc})") from exc
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise DataError(f"{p}: image_id {dup!r} appears more than once")
    if not df["image_id"].is_monotonic_increasing:
        df = df.sort_values("image_id", kind="stable")
    y_true = df[[f"label:{c}" for c in classes]].to_numpy(dtype=np.float64)
    y_score = df[[f"prob:{c}" for c in classes]].to_numpy(dtype=np.float64)
    known = ~np.isnan(y_true)
    if not np.all((y_true[known] == 0.0) | (y_true[known] == 1.0)):
        raise DataError(f"{p}: label columns must hold 1, 0 or NaN")
    if not np.all(np.isfinite(y_score)) or y_score.min(initial=0.0) < 0.0 or y_score.max(initial=0.0) > 1.0:
        raise DataError(f"{p}: prob columns must be finite probabilities in [0, 1]")
    return Predictions(p, tuple(classes), df["image_id"].to_numpy(), y_true, y_score)


class PredictionCache:
    """Loads each (file, classes) pair once per report build; reports read files many times."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, tuple[str, ...]], Predictions] = {}

    def get(self, path: str | Path, classes: Sequence[str]) -> Predictions:
        key = (str(path), tuple(classes))
        if key not in self._items:
            self._items[key] = load_predictions(path, classes)
        return self._items[key]
