"""The predictions file format, in one place for the two stages that write it.

The evaluate stage writes `predictions.parquet` (a test column's images) and the fine-tune
stage `val_predictions.parquet` (its validation images, scored by the kept model, so that
reports can choose decision thresholds on validation data, `reports.youden`). Format
(docs/DESIGN.md): one row per image, `image_id, patient_id, site, split`, then per class
`label:<class>` (1/0/NaN) and `prob:<class>`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def prediction_frame(
    index: pd.DataFrame, site: str, split: str, classes: Sequence[str], truth: np.ndarray, probs: np.ndarray
) -> pd.DataFrame:
    """Rows of `index` (the images that were scored, in order) with their labels and probabilities."""
    out = pd.DataFrame(
        {
            "image_id": index["image_id"].astype(str).to_numpy(),
            "patient_id": index["patient_id"].astype(str).to_numpy(),
            "site": site,
            "split": split,
        }
    )
    for j, c in enumerate(classes):
        out[f"label:{c}"] = truth[:, j]
        out[f"prob:{c}"] = probs[:, j]
    return out
