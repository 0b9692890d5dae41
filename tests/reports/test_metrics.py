"""AUC metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from reports import metrics


def test_auc_matches_sklearn_with_unknown_labels() -> None:
    rng = np.random.default_rng(0)
    n, c = 300, 4
    y = (rng.random((n, c)) < 0.3).astype(float)
    s = np.clip(0.3 * y + rng.random((n, c)) * 0.7, 0, 1)
    y[rng.random((n, c)) < 0.2] = np.nan
    got = metrics.auc_per_class(y, s)
    for j in range(c):
        keep = ~np.isnan(y[:, j])
        assert got[j] == pytest.approx(roc_auc_score(y[keep, j], s[keep, j]), abs=1e-12)
    assert metrics.mean_auc(y, s) == pytest.approx(got.mean(), abs=1e-12)


def test_class_without_positives_is_nan_and_skipped() -> None:
    y = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], dtype=float)
    s = np.array([[0.2, 0.9], [0.3, 0.1], [0.4, 0.6], [0.1, 0.7]])
    per = metrics.auc_per_class(y, s)
    assert np.isnan(per[0])
    # class 1: positives 0.9, 0.6; negatives 0.1, 0.7 -> pairs won 1+1+1+0 = 3/4
    assert per[1] == pytest.approx(0.75)
    assert metrics.mean_auc(y, s) == pytest.approx(0.75)


def test_hand_computed_four_samples_with_tie() -> None:
    y = [0, 0, 1, 1]
    assert metrics.auc_per_class(y, [0.1, 0.4, 0.35, 0.8])[0] == pytest.approx(3 / 4)
    # a positive tied with a negative counts one half: (1 + 0.5 + 2) / 4
    assert metrics.auc_per_class(y, [0.1, 0.4, 0.4, 0.8])[0] == pytest.approx(3.5 / 4)


def test_all_unknown_gives_nan_mean() -> None:
    assert np.isnan(metrics.mean_auc(np.full((3, 2), np.nan), np.zeros((3, 2))))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        metrics.auc_per_class([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.auc_per_class(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.auc_per_class([0, 1], [np.nan, 0.3])


def test_registry_lists_and_resolves() -> None:
    names = metrics.list_metrics()
    for n in ("auc_per_class", "mean_auc", "subset_accuracy", "krones_ce", "oracle_auc", "balanced_top1_accuracy"):
        assert n in names
    assert metrics.get("mean_auc") is metrics.mean_auc
    with pytest.raises(KeyError, match="registered"):
        metrics.get("no_such_metric")
