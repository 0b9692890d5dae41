"""Oracle AUC: the AUC after the most uncertain images are referred to an expert.

Standard (default, non-cumulative), per referral fraction f:
  1. k = floor(N f) images;
  2. uncertainty u_i = mean_c |p_ic - 0.5| (smaller = less certain), the k smallest
     are referred (stable sort: ties go to the earlier image);
  3. their scores are replaced by the truth for every label (the oracle answers);
  4. mean AUC over labels with both label values (`reports.metrics.mean_auc`).

`compat=True` reproduces the Krones code, which modifies the score array in place
inside the loop over fractions: referred images become maximally certain, so each
fraction refers int(N f) *new* images on top of the previous ones. Nominal
0/5/10/15/20/25% then refer cumulatively 0, 10, 30, 60, 100, 150 of 202 images
(0, 4.95, 14.85, 29.7, 49.5, 74.3%). It also picks the images the way that code does
(`krones_referral_rows`: `np.argpartition` on the per-image uncertainty, computed
row by row), so among tied uncertainties (frequent with 2-decimal probabilities) it
refers the same images the paper did, not the earliest ones. Use it only to compare
with the paper.

`oracle_auc_per_label` is the per-(image, label) variant (Kivlichan et al. /
robustness_metrics semantics, exact replacement instead of binning): each label
refers its own k most uncertain images by |p_ic - 0.5|.

Unknown (NaN) truth stays unknown after referral and is dropped by the AUC.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from reports.metrics import as_label_matrix, auc_per_class, register_metric

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25)


def referral_count(n: int, fraction: float) -> int:
    """floor(n * fraction), robust to float error (0.15 * 200 is 29.999...)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"referral fraction must lie in [0, 1], got {fraction}")
    return int(math.floor(n * fraction + 1e-9))


def _refer(t: np.ndarray, s: np.ndarray, rows: np.ndarray) -> None:
    """In place: scores of `rows` become their known labels."""
    sub_t = t[rows]
    sub_s = s[rows]
    known = ~np.isnan(sub_t)
    sub_s[known] = sub_t[known]
    s[rows] = sub_s


def krones_referral_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """The `k` images the Krones code refers: its exact call
    ``np.argpartition([np.mean(o) for o in abs(preds_probs - 0.5)], k)[:k]``.

    The uncertainty is built the same way (one `np.mean` per image row, on the
    float64 scores `as_label_matrix` gives), because the order `argpartition` leaves tied values in depends
    on the values and the selection algorithm, not on image order: a stable sort
    refers different images among ties. `k >= n` (where the paper's call would
    raise) refers every image.
    """
    n = scores.shape[0]
    if k >= n:
        return np.arange(n)
    return np.argpartition([np.mean(o) for o in abs(scores - 0.5)], k)[:k]


def referred_counts(n: int, fractions: Sequence[float], *, compat: bool = False) -> list[int]:
    """Number of images referred at each fraction (cumulative sums in compat mode)."""
    counts = [referral_count(n, f) if not compat else int(n * f) for f in fractions]
    return list(np.cumsum(counts)) if compat else counts


@register_metric("oracle_auc")
def oracle_auc(
    y_true: Any, y_score: Any, *, fractions: Sequence[float] = DEFAULT_FRACTIONS, compat: bool = False
) -> np.ndarray:
    """Mean AUC after referral, one value per fraction, shape (F,)."""
    t, s0 = as_label_matrix(y_true, y_score)
    out = np.full(len(fractions), np.nan)
    s_running = s0.copy()  # only used in compat mode (the in-place bug)
    for i, f in enumerate(fractions):
        if compat:
            s = s_running
            k = int(t.shape[0] * f)
        else:
            s = s0.copy()
            k = referral_count(t.shape[0], f)
        if compat:
            rows = krones_referral_rows(s, k)
        else:
            u = np.mean(np.abs(s - 0.5), axis=1)
            rows = np.argsort(u, kind="stable")[:k]
        _refer(t, s, rows)
        per = auc_per_class(t, s)
        out[i] = np.nanmean(per) if np.any(~np.isnan(per)) else np.nan
    return out


@register_metric("oracle_auc_per_label")
def oracle_auc_per_label(y_true: Any, y_score: Any, *, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Per-label referral: AUC per (fraction, label), shape (F, C)."""
    t, s0 = as_label_matrix(y_true, y_score)
    out = np.full((len(fractions), t.shape[1]), np.nan)
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        tc, sc = t[keep, c], s0[keep, c]
        order = np.argsort(np.abs(sc - 0.5), kind="stable")
        for i, f in enumerate(fractions):
            s = sc.copy()
            rows = order[: referral_count(tc.size, f)]
            s[rows] = tc[rows]
            out[i, c] = auc_per_class(tc, s)[0]
    return out
