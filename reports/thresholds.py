"""Decision-threshold metrics for multilabel predictions (Krones Table 7, Figure 2b-c).

Hard labels are `y_hat = 1[p > t]` (strict, as in the Krones code). Unknown (NaN)
truth entries are ignored: per-label counts use the known entries of that label;
an image counts towards subset accuracy if all of its *known* labels are right
(images with no known label are left out).

Definitions per label c (TP/FP/TN/FN over known entries):
accuracy = (TP+TN)/n, FNR ("underdiagnosis") = FN/(TP+FN), sensitivity = 1-FNR,
specificity = TN/(TN+FP), F1 = 2TP/(2TP+FP+FN). Undefined ratios are NaN and the
label means are nan-means (the Krones `underdiagnosis_mean`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from reports.metrics import as_label_matrix, register_metric

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_counts(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-label TP, FP, TN, FN (each shape (C,)) at `p > threshold`."""
    t, s = as_label_matrix(y_true, y_score)
    known = ~np.isnan(t)
    pred = s > threshold
    pos = (t == 1.0) & known
    neg = (t == 0.0) & known
    return {
        "tp": np.sum(pos & pred, axis=0),
        "fn": np.sum(pos & ~pred, axis=0),
        "tn": np.sum(neg & ~pred, axis=0),
        "fp": np.sum(neg & pred, axis=0),
    }


@register_metric("accuracy_per_label")
def accuracy_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> np.ndarray:
    k = confusion_counts(y_true, y_score, threshold)
    return _ratio(k["tp"] + k["tn"], k["tp"] + k["tn"] + k["fp"] + k["fn"])


@register_metric("mean_accuracy")
def mean_accuracy(y_true: Any, y_score: Any, *, threshold: float = 0.5, compat: bool = False) -> float:
    """Mean over labels of the per-label accuracy (Krones "mean accuracy").

    `compat=True` computes it as the Krones code does: the mean of the per-label
    accuracies *already rounded* to 4 decimals, rounded again to 4
    (``round(np.mean([round(c, 4) for c in acc_per_class]), 4)``), which can differ from
    the exact mean in the 4th decimal. Use it only to compare with the paper.
    """
    acc = accuracy_per_label(y_true, y_score, threshold=threshold)
    if compat:
        return float(round(np.mean([round(c, 4) for c in acc]), 4))
    return float(np.nanmean(acc))


@register_metric("subset_accuracy")
def subset_accuracy(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> float:
    """Fraction of images with every known label right (exact-match ratio)."""
    t, s = as_label_matrix(y_true, y_score)
    known = ~np.isnan(t)
    wrong = known & ((s > threshold) != (t == 1.0))
    has_label = known.any(axis=1)
    if not has_label.any():
        return float("nan")
    return float(np.mean(~wrong[has_label].any(axis=1)))


@register_metric("fnr_per_label", higher_is_better=False)
def fnr_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> np.ndarray:
    """False-negative rate FN/P per label; NaN for a label without positives."""
    k = confusion_counts(y_true, y_score, threshold)
    return _ratio(k["fn"], k["tp"] + k["fn"])


@register_metric("fnr_mean", higher_is_better=False)
def fnr_mean(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> float:
    """Nan-mean over labels of the FNR (Krones "underdiagnosis")."""
    v = fnr_per_label(y_true, y_score, threshold=threshold)
    return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")


@register_metric("sensitivity_per_label")
def sensitivity_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> np.ndarray:
    k = confusion_counts(y_true, y_score, threshold)
    return _ratio(k["tp"], k["tp"] + k["fn"])


@register_metric("specificity_per_label")
def specificity_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> np.ndarray:
    k = confusion_counts(y_true, y_score, threshold)
    return _ratio(k["tn"], k["tn"] + k["fp"])


@register_metric("f1_per_label")
def f1_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> np.ndarray:
    """F1 per label; NaN where the label has no positives and nothing is predicted positive."""
    k = confusion_counts(y_true, y_score, threshold)
    return _ratio(2 * k["tp"], 2 * k["tp"] + k["fp"] + k["fn"])


@register_metric("f1_micro")
def f1_micro(y_true: Any, y_score: Any, *, threshold: float = 0.5) -> float:
    """F1 of the pooled counts over all labels (the Krones code's F1)."""
    k = confusion_counts(y_true, y_score, threshold)
    tp, fp, fn = k["tp"].sum(), k["fp"].sum(), k["fn"].sum()
    return float(_ratio(np.array(2 * tp), np.array(2 * tp + fp + fn)))


def threshold_metrics(
    y_true: Any, y_score: Any, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *, compat: bool = False
) -> pd.DataFrame:
    """Label-averaged threshold metrics, one row per threshold.

    Columns: `threshold, mean_accuracy, subset_accuracy, fnr, sensitivity,
    specificity, f1` (label nan-means; F1 is macro over labels), and with `compat`
    also `mean_accuracy_compat` (`mean_accuracy(compat=True)`).
    """
    rows = []
    for t in thresholds:
        extra = {"mean_accuracy_compat": mean_accuracy(y_true, y_score, threshold=t, compat=True)} if compat else {}
        rows.append(
            {
                "threshold": float(t),
                "mean_accuracy": mean_accuracy(y_true, y_score, threshold=t),
                **extra,
                "subset_accuracy": subset_accuracy(y_true, y_score, threshold=t),
                "fnr": fnr_mean(y_true, y_score, threshold=t),
                "sensitivity": float(np.nanmean(sensitivity_per_label(y_true, y_score, threshold=t))),
                "specificity": float(np.nanmean(specificity_per_label(y_true, y_score, threshold=t))),
                "f1": float(np.nanmean(f1_per_label(y_true, y_score, threshold=t))),
            }
        )
    return pd.DataFrame(rows)
