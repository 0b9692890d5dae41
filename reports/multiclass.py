"""Single-label (multiclass) metrics: top-1, balanced top-1, confusion matrix.

Multiclass predictions use the same file format as multilabel ones: `label:<class>`
is one-hot (exactly one 1 per row) and `prob:<class>` the softmax output. The
predicted class is the argmax of the scores (first maximum on ties).
Balanced top-1 accuracy (the poster's downstream metric) is the mean per-class
recall over the classes that occur in `y_true` (`sklearn.metrics.balanced_accuracy_score`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from reports.metrics import register_metric


def class_indices(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(true index (N,), predicted index (N,), C) from one-hot labels and scores (N, C)."""
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"multiclass y_true {t.shape} and y_score {s.shape} must both be (N, C)")
    if np.isnan(t).any() or not np.all(t.sum(axis=1) == 1.0) or not np.all((t == 0) | (t == 1)):
        raise ValueError("multiclass y_true must be one-hot: exactly one 1 per row, no NaN")
    return t.argmax(axis=1), s.argmax(axis=1), t.shape[1]


@register_metric("top1_accuracy")
def top1_accuracy(y_true: Any, y_score: Any) -> float:
    """Fraction of images whose argmax score is the true class."""
    yt, yp, _ = class_indices(y_true, y_score)
    return float(np.mean(yt == yp))


@register_metric("balanced_top1_accuracy")
def balanced_top1_accuracy(y_true: Any, y_score: Any) -> float:
    """Mean recall over the classes present in `y_true` (chance level = 1 / #classes)."""
    yt, yp, _ = class_indices(y_true, y_score)
    return float(balanced_accuracy_score(yt, yp))


@register_metric("confusion_matrix")
def confusion(y_true: Any, y_score: Any) -> np.ndarray:
    """Counts, shape (C, C): row = true class, column = predicted class, `classes` order."""
    yt, yp, c = class_indices(y_true, y_score)
    return confusion_matrix(yt, yp, labels=np.arange(c))
