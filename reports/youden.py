"""Per-class decision thresholds chosen on validation predictions (Youden's J) and the
threshold-dependent metrics of the DINOv2-initialisation study (seed 004).

The study reports accuracy, sensitivity and specificity per finding at a threshold chosen
per class on held-out data; choosing it on the *test* predictions themselves would make
those numbers optimistic, so the threshold comes from the fine-tune stage's validation
split (`val_predictions.parquet`) and is then applied to the test predictions. Every
number is also given at the fixed threshold 0.5, labelled as such.

Conventions (shared with `reports.thresholds`: NaN truth entries are dropped per class):

* A prediction is positive when `p >= t`: scikit-learn's `roc_curve` convention, so the
  sensitivity and specificity at the Youden threshold are exactly those of its ROC point.
  (`reports.thresholds`, the Krones tables, use `p > t`; the two differ only for
  probabilities equal to the threshold.)
* Youden's J = sensitivity + specificity - 1 = TPR - FPR. The candidates are +inf (nothing
  positive, J = 0) and every distinct score; the threshold is the candidate with the largest
  J, and on a tie the largest such threshold (the first maximum of `roc_curve` with
  `drop_intermediate=False`). A class without both labels among the known validation
  entries has no threshold (NaN), and its threshold metrics are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reports.metrics import as_label_matrix, register_metric
from reports.statistics import class_auc_influence

FIXED_THRESHOLD = 0.5
THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity")


def youden_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """Youden-optimal threshold of one class: y (N,) 0/1 (no NaN), s (N,) scores; NaN without both labels."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    pos = y == 1.0
    m, n = int(pos.sum()), int(y.size - pos.sum())
    if m == 0 or n == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # last image of each group of equal scores (descending)
    tpr = np.cumsum(pos[order])[last] / m  # share of positives with score >= that group's score
    fpr = np.cumsum(~pos[order])[last] / n
    j = np.r_[0.0, tpr - fpr]  # candidate 0 is +inf: nothing predicted positive
    thresholds = np.r_[np.inf, ss[last]]
    return float(thresholds[int(np.argmax(j))])


@register_metric("youden_thresholds")
def youden_thresholds(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class Youden thresholds (C,) from (validation) labels and scores; NaN where undefined."""
    t, s = as_label_matrix(y_true, y_score)
    out = np.full(t.shape[1], np.nan)
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        out[c] = youden_threshold(t[keep, c], s[keep, c])
    return out


def rates_at(y_true: Any, y_score: Any, thresholds: Any) -> dict[str, np.ndarray]:
    """Accuracy, sensitivity and specificity per class (each (C,)) at per-class `thresholds` (p >= t).

    `thresholds` is a scalar or (C,); a NaN threshold gives NaN metrics for that class, and
    a ratio with an empty denominator (no positives: sensitivity) is NaN.
    """
    t, s = as_label_matrix(y_true, y_score)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (t.shape[1],))
    known = ~np.isnan(t)
    pred = s >= thr[None, :]
    pos, neg = (t == 1.0) & known, (t == 0.0) & known
    tp, fn = np.sum(pos & pred, 0), np.sum(pos & ~pred, 0)
    tn, fp = np.sum(neg & ~pred, 0), np.sum(neg & pred, 0)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.full(a.shape, np.nan)
        np.divide(a.astype(np.float64), b, out=out, where=b > 0)
        out[np.isnan(thr)] = np.nan
        return out

    return {
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
    }


@dataclass(frozen=True)
class FindingMetrics:
    """One run's per-finding metrics on a test column.

    `auc` (C,); `youden_threshold` (C,) chosen on validation; `at_youden` / `at_fixed`
    map accuracy / sensitivity / specificity to (C,) arrays; `fixed` is the fixed threshold.
    """

    classes: tuple[str, ...]
    auc: np.ndarray
    youden_threshold: np.ndarray
    at_youden: dict[str, np.ndarray]
    at_fixed: dict[str, np.ndarray]
    fixed: float = FIXED_THRESHOLD


def finding_metrics(
    classes: tuple[str, ...],
    y_test: np.ndarray,
    s_test: np.ndarray,
    thresholds: np.ndarray,
    fixed: float = FIXED_THRESHOLD,
) -> FindingMetrics:
    """AUC and threshold metrics of one run on its test predictions; `thresholds` from validation."""
    auc, _ = class_auc_influence(y_test, s_test)
    return FindingMetrics(
        tuple(classes),
        auc,
        np.asarray(thresholds, dtype=np.float64),
        rates_at(y_test, s_test, thresholds),
        rates_at(y_test, s_test, fixed),
        fixed,
    )


def validation_thresholds(test_classes: tuple[str, ...], val_classes: tuple[str, ...], y_val: np.ndarray, s_val: np.ndarray) -> np.ndarray:
    """Youden thresholds for `test_classes` from validation predictions over `val_classes`.

    The validation file holds the classes the model was fine-tuned on; a test class the
    model never saw on validation gets NaN.
    """
    per = youden_thresholds(y_val, s_val)
    where = {c: j for j, c in enumerate(val_classes)}
    return np.array([per[where[c]] if c in where else np.nan for c in test_classes])
