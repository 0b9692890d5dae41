"""Youden thresholds on validation predictions and the threshold metrics at them (`reports.youden`)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_curve

from reports.youden import rates_at, validation_thresholds, youden_threshold, youden_thresholds


def sklearn_youden(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return float(thr[int(np.argmax(tpr - fpr))])


@pytest.mark.parametrize("seed", range(8))
def test_threshold_is_sklearns_roc_youden_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0.0, 1.0]
    # coarse scores (ties) on odd seeds, continuous on even ones
    s = np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1)
    if seed % 2:
        s = np.round(s, 1)
    assert youden_threshold(y, s) == sklearn_youden(y, s)


def test_hand_case_and_undefined_classes() -> None:
    # positives 0.9, 0.6; negatives 0.7, 0.2, 0.1: t = 0.6 gives TPR 1, FPR 1/3 (J = 2/3), the maximum
    y = np.array([1, 1, 0, 0, 0], dtype=float)
    s = np.array([0.9, 0.6, 0.7, 0.2, 0.1])
    assert youden_threshold(y, s) == 0.6
    # a scorer that is worse than chance everywhere: nothing beats J = 0 at +inf (all negative)
    assert youden_threshold(np.array([0, 1.0]), np.array([0.9, 0.1])) == np.inf
    t = np.array([[1, 1], [0, 1], [np.nan, 1]], dtype=float)
    out = youden_thresholds(t, np.array([[0.8, 0.5], [0.3, 0.4], [0.9, 0.2]]))
    assert out[0] == 0.8 and np.isnan(out[1])  # second class has no negatives


def test_rates_match_sklearn_confusion_matrix_with_nan_labels() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (200, 3)).astype(float)
    y[rng.random((200, 3)) < 0.1] = np.nan
    s = rng.random((200, 3))
    thr = np.array([0.5, 0.3, np.nan])
    r = rates_at(y, s, thr)
    for c in range(2):
        keep = ~np.isnan(y[:, c])
        tn, fp, fn, tp = confusion_matrix(y[keep, c], s[keep, c] >= thr[c], labels=[0, 1]).ravel()
        assert r["accuracy"][c] == pytest.approx((tp + tn) / keep.sum())
        assert r["sensitivity"][c] == pytest.approx(tp / (tp + fn))
        assert r["specificity"][c] == pytest.approx(tn / (tn + fp))
    assert all(np.isnan(r[k][2]) for k in r)  # no threshold, no metric


def test_threshold_at_youden_reproduces_the_roc_point() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400).astype(float)
    s = np.clip(0.2 * y + rng.random(400) * 0.8, 0, 1)
    t = youden_threshold(y, s)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    k = int(np.argmax(tpr - fpr))
    r = rates_at(y, s, t)
    assert r["sensitivity"][0] == pytest.approx(tpr[k]) and r["specificity"][0] == pytest.approx(1 - fpr[k])


def test_validation_thresholds_follow_class_names() -> None:
    y_val = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    s_val = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6], [0.3, 0.1]])
    out = validation_thresholds(("B", "missing", "A"), ("A", "B"), y_val, s_val)
    assert out[0] == 0.6 and np.isnan(out[1]) and out[2] == 0.7
