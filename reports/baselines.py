"""Random-guess reference points for threshold metrics, computed from the labels alone.

Two different "random" baselines exist and the paper's wording mixes them up:

* `always_negative_accuracy`: accuracy of predicting "negative" for every image,
  1 - prevalence per label. This is what the Krones code reports as
  `acc_random_guessing_per_class` ([0.6287, 0.6733, 0.8416, 0.7921, 0.6832] on
  the 202 frontal CheXpert validation images, positives 75/66/32/42/64).
  With prevalence < 0.5 it equals the majority-class accuracy max(p, 1-p).
* `known_prevalence_random_accuracy`: expected accuracy of a guesser that says
  "positive" with probability p (it knows the prevalence), p^2 + (1-p)^2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reports.metrics import register_metric


def prevalence(y_true: Any) -> np.ndarray:
    """Fraction of positives per label over the known entries, shape (C,)."""
    t = np.asarray(y_true, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    known = ~np.isnan(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known.sum(0) > 0, np.nansum(t, axis=0) / known.sum(0), np.nan)


@register_metric("always_negative_accuracy")
def always_negative_accuracy(y_true: Any, y_score: Any = None) -> np.ndarray:
    """Per-label accuracy of predicting negative everywhere: 1 - prevalence. `y_score` is ignored."""
    return 1.0 - prevalence(y_true)


@register_metric("majority_accuracy")
def majority_accuracy(y_true: Any, y_score: Any = None) -> np.ndarray:
    """Per-label accuracy of always predicting the more frequent label: max(p, 1-p)."""
    p = prevalence(y_true)
    return np.maximum(p, 1.0 - p)


@register_metric("known_prevalence_random_accuracy")
def known_prevalence_random_accuracy(y_true: Any, y_score: Any = None) -> np.ndarray:
    """Expected per-label accuracy of guessing positive with probability p: p^2 + (1-p)^2."""
    p = prevalence(y_true)
    return p**2 + (1.0 - p) ** 2


@register_metric("always_negative_subset_accuracy")
def always_negative_subset_accuracy(y_true: Any, y_score: Any = None) -> float:
    """Subset accuracy of predicting negative everywhere: fraction of images with no positive label."""
    t = np.asarray(y_true, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    return float(np.mean(~np.any(t == 1.0, axis=1)))
