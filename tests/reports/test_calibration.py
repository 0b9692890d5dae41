"""Calibration: ECE against an independent binning, Krones CE quirks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from reports import calibration as cal


def _ece_sklearn(y, p, n_bins=15):
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p)  # sklearn's own bin ids
    counts = np.bincount(ids, minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / p.size * np.abs(prob_true - prob_pred)))


def test_positive_class_ece_matches_sklearn_binning() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((400, 3))
    y = (rng.random((400, 3)) < p**1.5).astype(float)  # miscalibrated on purpose
    got = cal.ece_per_label(y, p)
    for c in range(3):
        assert got[c] == pytest.approx(_ece_sklearn(y[:, c], p[:, c]), abs=1e-12)
    assert cal.ece(y, p) == pytest.approx(got.mean())


def test_hand_computed_two_bins() -> None:
    # bin [0, 1/15): p = 0.05, 0.05, y = 0, 1 -> |0.5 - 0.05| ; bin [14/15, 1]: p = 1.0, y = 1 -> 0
    y = np.array([0, 1, 1.0])
    p = np.array([0.05, 0.05, 1.0])
    assert cal.ece_per_label(y, p)[0] == pytest.approx(2 / 3 * 0.45)
    # top-label at 0.5: confidences 0.95, 0.95, 1.0; correct 1, 0, 1 -> 2/3 |0.5 - 0.95|
    assert cal.ece_top_label_per_label(y, p)[0] == pytest.approx(2 / 3 * 0.45)


def test_perfectly_calibrated_model() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((20000, 2))
    y = (rng.random((20000, 2)) < p).astype(float)
    assert cal.ece(y, p) < 0.02
    assert cal.ece_top_label(y, p) < 0.02
    # Krones CE compares |p - 0.5| with accuracy: about 0.5 for a calibrated model
    assert cal.krones_ce(y, p) == pytest.approx(0.5, abs=0.02)


def test_krones_bins_first_match_rule() -> None:
    v = np.array([0.0, 0.05, 0.07, 0.1 + 1e-9, 0.49, 0.5])
    assert cal.krones_bins(v).tolist() == [0, 0, 1, 2, 13, 14]
    rng = np.random.default_rng(2)
    w = rng.random(2000) * 0.5
    w = w[np.abs(w * 30 - np.round(w * 30)) > 1e-6]  # away from edges
    assert np.array_equal(cal.krones_bins(w), np.maximum(0, np.floor(30 * w).astype(int) - 1))


def test_krones_ce_hand_case_and_threshold_dependence() -> None:
    y = np.array([1.0, 0.0])
    p = np.array([0.9, 0.3])  # v = 0.4 (bin 11), 0.2 (bin 5)
    # t = 0.5: both correct -> 1/2 |0.4 - 1| + 1/2 |0.2 - 1|
    assert cal.krones_ce_per_label(y, p, threshold=0.5)[0] == pytest.approx(0.5 * 0.6 + 0.5 * 0.8)
    # t = 0.2: the negative becomes a false positive -> 1/2 |0.4 - 1| + 1/2 |0.2 - 0|
    assert cal.krones_ce_per_label(y, p, threshold=0.2)[0] == pytest.approx(0.5 * 0.6 + 0.5 * 0.2)
