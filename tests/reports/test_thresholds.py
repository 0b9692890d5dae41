"""Threshold metrics: a hand-computed case and scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, multilabel_confusion_matrix

from reports import thresholds as th

Y = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=float)
P = np.array([[0.6, 0.2], [0.3, 0.1], [0.2, 0.7], [0.5, 0.5]])


def test_hand_computed_at_05_is_strict() -> None:
    # p = 0.5 is *not* positive at t = 0.5 (strict p > t)
    assert th.accuracy_per_label(Y, P, threshold=0.5).tolist() == [0.75, 0.75]
    assert th.mean_accuracy(Y, P, threshold=0.5) == 0.75
    assert th.subset_accuracy(Y, P, threshold=0.5) == 0.5
    assert th.fnr_per_label(Y, P, threshold=0.5).tolist() == [0.5, 0.5]
    assert th.sensitivity_per_label(Y, P, threshold=0.5).tolist() == [0.5, 0.5]
    assert th.specificity_per_label(Y, P, threshold=0.5).tolist() == [1.0, 1.0]
    assert th.f1_per_label(Y, P, threshold=0.5) == pytest.approx([2 / 3, 2 / 3])


def test_hand_computed_at_04() -> None:
    assert th.accuracy_per_label(Y, P, threshold=0.4).tolist() == [0.5, 1.0]
    assert th.subset_accuracy(Y, P, threshold=0.4) == 0.5
    assert th.fnr_mean(Y, P, threshold=0.4) == 0.25


def test_against_sklearn_random() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((500, 5)) < 0.3).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random((500, 5)), 0, 1)
    for t in th.DEFAULT_THRESHOLDS:
        yhat = (p > t).astype(int)
        mcm = multilabel_confusion_matrix(y.astype(int), yhat)  # [[tn, fp], [fn, tp]] per label
        tn, fp, fn, tp = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 1, 1]
        assert th.mean_accuracy(y, p, threshold=t) == pytest.approx(np.mean((tp + tn) / 500))
        assert th.subset_accuracy(y, p, threshold=t) == pytest.approx(accuracy_score(y.astype(int), yhat))
        assert th.fnr_per_label(y, p, threshold=t) == pytest.approx(fn / (fn + tp))
        assert th.f1_per_label(y, p, threshold=t) == pytest.approx(f1_score(y.astype(int), yhat, average=None))
        assert th.f1_micro(y, p, threshold=t) == pytest.approx(f1_score(y.astype(int), yhat, average="micro"))
    frame = th.threshold_metrics(y, p)
    assert frame["threshold"].tolist() == list(th.DEFAULT_THRESHOLDS)
    assert (frame["sensitivity"] + frame["fnr"]).to_numpy() == pytest.approx(np.ones(5))


def test_unknown_entries_are_ignored_and_no_positive_label_is_nan() -> None:
    y = np.array([[1, np.nan], [0, 0], [np.nan, 0]])
    p = np.array([[0.9, 0.9], [0.1, 0.9], [0.9, 0.1]])
    assert th.accuracy_per_label(y, p).tolist() == [1.0, 0.5]
    assert th.subset_accuracy(y, p) == pytest.approx(2 / 3)  # image 2 has a wrong known label
    fnr = th.fnr_per_label(y, p)
    assert fnr[0] == 0.0 and np.isnan(fnr[1])
    assert th.fnr_mean(y, p) == 0.0


def _paper_mean_acc(y: np.ndarray, p: np.ndarray, t: float) -> float:
    """The Krones mean accuracy written out from its definition: hard labels p > t, per-label
    accuracy from `multilabel_confusion_matrix`, each rounded to 4 decimals, their mean rounded."""
    labels = np.array([[1 if v > t else 0 for v in row] for row in p])
    per = [m.diagonal().sum() / m.sum() for m in multilabel_confusion_matrix(y, labels)]
    return round(np.mean([round(c, 4) for c in per]), 4)


def test_compat_mean_accuracy_rounds_each_label_first() -> None:
    # per-label accuracies 188/202, 170/202, 160/202, 141/202, 144/202: exact mean 0.79505 (0.7950
    # at 4 decimals), mean of the 4-decimal values 0.79512 -> 0.7951
    wrong = [202 - k for k in (188, 170, 160, 141, 144)]
    y = np.zeros((202, 5))
    p = np.array([[0.9 if i < w else 0.1 for w in wrong] for i in range(202)])
    assert th.mean_accuracy(y, p) == pytest.approx(0.795049504950495)
    assert th.mean_accuracy(y, p, compat=True) == 0.7951
    assert round(th.mean_accuracy(y, p), 4) == 0.795


@pytest.mark.parametrize("seed", range(4))
def test_compat_mean_accuracy_matches_the_paper_on_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random((202, 5)) < 0.3).astype(float)
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random((202, 5)), 0, 1), 1)  # many p exactly at a threshold
    frame = th.threshold_metrics(y, p, compat=True)
    for t, got, exact in zip(frame["threshold"], frame["mean_accuracy_compat"], frame["mean_accuracy"]):
        assert got == _paper_mean_acc(y, p, t)
        assert abs(got - exact) <= 1e-4
    assert "mean_accuracy_compat" not in th.threshold_metrics(y, p).columns
