"""Multiclass metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from reports import multiclass as mc


def test_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    yt = rng.choice(4, size=300, p=[0.6, 0.2, 0.15, 0.05])
    scores = rng.random((300, 4)) + 0.8 * np.eye(4)[yt]
    onehot = np.eye(4)[yt]
    yp = scores.argmax(1)
    assert mc.top1_accuracy(onehot, scores) == pytest.approx(accuracy_score(yt, yp))
    assert mc.balanced_top1_accuracy(onehot, scores) == pytest.approx(balanced_accuracy_score(yt, yp))
    assert np.array_equal(mc.confusion(onehot, scores), confusion_matrix(yt, yp, labels=range(4)))


def test_balanced_accuracy_hand_case() -> None:
    onehot = np.eye(2)[[0, 0, 0, 1]]
    always_zero = np.tile([0.9, 0.1], (4, 1))
    assert mc.top1_accuracy(onehot, always_zero) == 0.75
    assert mc.balanced_top1_accuracy(onehot, always_zero) == 0.5


def test_rejects_non_one_hot() -> None:
    with pytest.raises(ValueError, match="one-hot"):
        mc.top1_accuracy(np.array([[1, 1], [0, 1.0]]), np.zeros((2, 2)))
