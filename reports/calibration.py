"""Calibration error for multilabel (per-label sigmoid) predictions.

Standard definitions (report these):

* `ece_per_label`: binary ECE of the **positive-class** probability, per label:
  15 equal-width bins over [0, 1] (`[k/15, (k+1)/15)`, the last bin closed so
  p = 1 falls in it), ECE = sum_b (n_b / n) |mean_b(y) - mean_b(p)|. Same as
  torchmetrics' `binary_calibration_error(norm="l1")` except that torchmetrics
  gives p = 1.0 a bin of its own. Independent of any decision threshold.
* `ece_top_label_per_label`: top-label ECE per label (PLEX/Guo et al.): prediction
  `1[p > t]`, confidence = probability of the predicted label (`max(p, 1-p)` at
  t = 0.5), correctness = prediction equals truth; same binning.

Compatibility metric (do not read as an ECE):

* `krones_ce_per_label`: the Krones code's `expected_calibration_error`, kept to
  reproduce Table 7. Confidence is v = |p - 0.5| in [0, 0.5] (not max(p, 1-p)),
  correctness is `1[p > t] == y`, bin starts are `linspace(0, 0.5, 16)[:-1]` with
  membership `start <= v < start + 1/15` and first match wins (effective bins
  [0, 1/15), then width 1/30 up to 0.5, plus one holding only v = 0.5), and
  CE = sum_b (n_b / n) |mean_b(v) - mean_b(correct)|. Because v is the confidence
  minus 0.5, a perfectly calibrated model scores about **0.5**, and the value
  changes with the threshold t.

All functions return shape (C,); unknown (NaN) truth is dropped per label. The
`ece`, `ece_top_label` and `krones_ce` metrics are the means over labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reports.metrics import as_label_matrix, register_metric

N_BINS = 15


def binned_gap(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = N_BINS) -> float:
    """sum_b (n_b/n) |mean_b(outcome) - mean_b(confidence)| over equal-width bins of [0, 1].

    `confidence` in [0, 1], `outcome` in {0, 1}, both shape (n,). NaN if n == 0.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    out = np.asarray(outcome, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_out = np.bincount(idx, weights=out, minlength=n_bins)
    filled = count > 0
    gap = np.abs(sum_out[filled] / count[filled] - sum_conf[filled] / count[filled])
    return float(np.sum(count[filled] / conf.size * gap))


def _per_label(y_true: Any, y_score: Any, fn) -> np.ndarray:
    t, s = as_label_matrix(y_true, y_score)
    out = np.full(t.shape[1], np.nan)
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        out[c] = fn(t[keep, c], s[keep, c])
    return out


@register_metric("ece_per_label", higher_is_better=False)
def ece_per_label(y_true: Any, y_score: Any, *, n_bins: int = N_BINS) -> np.ndarray:
    """Positive-class binary ECE per label (threshold-free), shape (C,)."""
    return _per_label(y_true, y_score, lambda y, p: binned_gap(p, y, n_bins))


@register_metric("ece", higher_is_better=False)
def ece(y_true: Any, y_score: Any, *, n_bins: int = N_BINS) -> float:
    return float(np.nanmean(ece_per_label(y_true, y_score, n_bins=n_bins)))


@register_metric("ece_top_label_per_label", higher_is_better=False)
def ece_top_label_per_label(
    y_true: Any, y_score: Any, *, threshold: float = 0.5, n_bins: int = N_BINS
) -> np.ndarray:
    """Top-label ECE per label at decision threshold `threshold`, shape (C,)."""

    def one(y: np.ndarray, p: np.ndarray) -> float:
        pred = p > threshold
        conf = np.where(pred, p, 1.0 - p)
        return binned_gap(conf, (pred == (y == 1.0)).astype(np.float64), n_bins)

    return _per_label(y_true, y_score, one)


@register_metric("ece_top_label", higher_is_better=False)
def ece_top_label(y_true: Any, y_score: Any, *, threshold: float = 0.5, n_bins: int = N_BINS) -> float:
    return float(np.nanmean(ece_top_label_per_label(y_true, y_score, threshold=threshold, n_bins=n_bins)))


def krones_bins(v: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index of each v = |p - 0.5| under the Krones code's first-match rule (see module doc)."""
    starts = np.linspace(0.0, 0.5, n_bins + 1)[:-1]
    width = 1.0 / n_bins
    idx = np.full(v.shape, -1, dtype=np.int64)
    for k, s in enumerate(starts):
        hit = (idx < 0) & (s <= v) & (v < s + width)
        idx[hit] = k
    return idx


@register_metric("krones_ce_per_label", higher_is_better=False)
def krones_ce_per_label(y_true: Any, y_score: Any, *, threshold: float = 0.5, n_bins: int = N_BINS) -> np.ndarray:
    """Krones-compatible "calibration error" per label (about 0.5 when perfectly calibrated)."""

    def one(y: np.ndarray, p: np.ndarray) -> float:
        if y.size == 0:
            return float("nan")
        v = np.abs(p - 0.5)
        correct = ((p > threshold) == (y == 1.0)).astype(np.float64)
        idx = krones_bins(v, n_bins)
        total = 0.0
        for k in np.unique(idx[idx >= 0]):
            b = idx == k
            total += b.sum() / y.size * abs(v[b].mean() - correct[b].mean())
        return float(total)

    return _per_label(y_true, y_score, one)


@register_metric("krones_ce", higher_is_better=False)
def krones_ce(y_true: Any, y_score: Any, *, threshold: float = 0.5, n_bins: int = N_BINS) -> float:
    return float(np.nanmean(krones_ce_per_label(y_true, y_score, threshold=threshold, n_bins=n_bins)))
