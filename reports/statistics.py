"""Image-level uncertainty of AUC results: bootstrap CIs, paired differences, DeLong.

Conventions:

* `y_true`: (N, C) float, 1/0/NaN; `scores`: (S, N, C) probabilities of S runs
  (seeds) of one experiment on the *same images in the same order* (a single
  (N, C) array is taken as S = 1). The statistic is always the seed-averaged
  class-mean AUC: mean over seeds of `reports.metrics.mean_auc`.
* The bootstrap resamples **images** (all labels of an image together, keeping
  cross-label correlation) within strata: the label itself when C = 1 (pROC's
  `boot.stratified=TRUE`), "has any positive label" when C > 1. Replicate weights
  are multinomial counts, shape (B, N); the AUC of a weighted sample is computed
  exactly (ties count 1/2), vectorised over replicates. Intervals are percentile
  intervals. The same seed gives the same replicates, and paired comparisons use
  the same resampled images for both experiments.
* Seed (training) variance is *not* part of these intervals; it is the sd the
  tables print next to the mean.
* `delong_test`: DeLong, DeLong & Clarke-Pearson (1988) for two correlated AUCs
  on one label, with the midrank placement algorithm of Sun & Xu (2014).
* `influence_difference_test`: the same idea for seed-averaged class-mean AUCs
  (a linear combination of many correlated AUCs): variance from the per-image
  influence (placement) values, sum_i (sum_k a_k psi_ik)^2. For one label and
  one seed it equals DeLong's variance up to the factors m/(m-1), n/(n-1). It costs
  O(N log N) per run, so it is what `build_reports` uses where an exact bootstrap
  (cost B x N per class and run) would be too slow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
from scipy.stats import norm

from reports.metrics import as_label_matrix

DEFAULT_N_BOOT = 2000
# Replicate chunks are capped at this many weights (B_chunk x N) to bound memory.
_CHUNK_CELLS = 4_000_000
# `weighted_auc` uses the (positive x negative) pair matrix while it has at most
# `_PAIR_CELLS` entries and at most `_PAIR_PER_IMAGE` x N (a BLAS multiply-add costs
# far less than the ~10 array passes per image of the sort path); else it sorts.
_PAIR_CELLS = 2_000_000
_PAIR_PER_IMAGE = 64


def _use_pairs(m: int, n: int) -> bool:
    return m * n <= min(_PAIR_CELLS, _PAIR_PER_IMAGE * (m + n))


@dataclass(frozen=True)
class Interval:
    """Point estimate, percentile interval at `level` and the replicate values."""

    estimate: float
    low: float
    high: float
    level: float
    replicates: np.ndarray

    @property
    def se(self) -> float:
        r = self.replicates[np.isfinite(self.replicates)]
        return float(np.std(r, ddof=1)) if r.size > 1 else float("nan")


@dataclass(frozen=True)
class Difference:
    """Estimate of a - b with interval, standard error and two-sided p-value."""

    estimate: float
    low: float
    high: float
    se: float
    p_value: float
    method: str


@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov: float
    z: float
    p_value: float

    @property
    def se_diff(self) -> float:
        return float(np.sqrt(max(self.var_a + self.var_b - 2 * self.cov, 0.0)))


def _as_runs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N, C), scores (S, N, C)) from (N,)/(N, C) labels and (N,)/(N, C)/(S, N, C) scores."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :, None]
    elif s.ndim == 2:
        s = s[None]
    if s.ndim != 3:
        raise ValueError(f"scores must be (N,), (N, C) or (S, N, C), got shape {s.shape}")
    t, _ = as_label_matrix(y_true, s[0])
    return t, s


def strata(y_true: np.ndarray) -> np.ndarray:
    """Stratum of each image: its label (0/1/2=unknown) for C = 1, else 'any positive' (0/1)."""
    t = np.asarray(y_true, dtype=np.float64)
    if t.ndim == 1 or t.shape[1] == 1:
        col = t.reshape(-1)
        return np.where(np.isnan(col), 2, col).astype(np.int64)
    return np.any(t == 1.0, axis=1).astype(np.int64)


def bootstrap_weights(
    groups: np.ndarray, n_boot: int, seed: int | np.random.Generator = 0
) -> Iterator[np.ndarray]:
    """Yield chunks of replicate weights, each (b, N) int32, b summing to `n_boot`.

    Each replicate draws, within every stratum of `groups` (shape (N,)), as many
    images with replacement as the stratum holds; the weight of an image is how
    often it was drawn. Same `seed` -> same replicates.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    n = groups.size
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        flat = np.zeros(b * n, dtype=np.int64)
        offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
        for idx in members:
            draws = idx[rng.integers(0, idx.size, size=(b, idx.size))]
            flat += np.bincount((draws + offsets).ravel(), minlength=b * n)
        done += b
        yield flat.reshape(b, n).astype(np.int32)


def _pair_auc(sp: np.ndarray, sn: np.ndarray, wp: np.ndarray, wn: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Weighted AUC from positive/negative scores and their weights (B, m), (B, n)."""
    pair = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    num = np.einsum("bj,bj->b", wp @ pair, wn)
    out = np.full(wp.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _sorted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted AUC by sorting once and a cumulative sum per replicate (large N)."""
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ps = (y[order] == 1.0).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    ws = w[:, order].astype(np.float64)
    if starts.size == ss.size:  # no ties: groups are single images
        p, q = ws * ps, ws * (1.0 - ps)
    else:
        p = np.add.reduceat(ws * ps, starts, axis=1)
        q = np.add.reduceat(ws * (1.0 - ps), starts, axis=1)
    below = np.cumsum(q, axis=1) - q
    num = np.einsum("bg,bg->b", p, below + 0.5 * q)
    den = p.sum(axis=1) * q.sum(axis=1)
    out = np.full(w.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact AUC of each weighted sample: y (N,) 0/1, s (N,), w (B, N) -> (B,).

    AUC = sum over (positive i, negative j) of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2),
    divided by W_pos W_neg. NaN where a replicate lacks positives or negatives.
    Small label sets use the (m x n) pair matrix and one matrix product (BLAS);
    large ones a sort and a cumulative sum per replicate.
    """
    pos = y == 1.0
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        return np.full(w.shape[0], np.nan)
    if not _use_pairs(m, n):
        return _sorted_auc(y, s, w)
    wp = w[:, pos].astype(np.float64)
    wn = w[:, ~pos].astype(np.float64)
    return _pair_auc(s[pos], s[~pos], wp, wn, wp.sum(axis=1) * wn.sum(axis=1))


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN slices stay NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _replicates_chunk(t: np.ndarray, runs: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
    """Seed-averaged class-mean AUC per replicate row of `w`, for each run stack (S, N, C)."""
    per = [np.full((s.shape[0], t.shape[1], w.shape[0]), np.nan) for s in runs]
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        yc = t[keep, c]
        pos = yc == 1.0
        m, n = int(pos.sum()), int((~pos).sum())
        if m == 0 or n == 0:
            continue
        wc = w[:, keep]
        pairs = _use_pairs(m, n)
        if pairs:
            # weights split once per class, shared by every experiment and seed
            wp = wc[:, pos].astype(np.float64)
            wn = wc[:, ~pos].astype(np.float64)
            den = wp.sum(axis=1) * wn.sum(axis=1)
        for r, s in enumerate(runs):
            for k in range(s.shape[0]):
                sc = s[k, keep, c]
                if pairs:
                    per[r][k, c] = _pair_auc(sc[pos], sc[~pos], wp, wn, den)
                else:
                    per[r][k, c] = _sorted_auc(yc, sc, wc)
    return [_nanmean(_nanmean(x, axis=1), axis=0) for x in per]


def replicate_mean_auc(y_true: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Seed-averaged class-mean AUC for every replicate weight row: (B,).

    Per replicate and seed, the class mean skips classes without both labels in
    the resample (as `mean_auc` does).
    """
    t, s = _as_runs(y_true, scores)
    return _replicates_chunk(t, [s], w)[0]


def bootstrap_replicates(
    y_true: np.ndarray,
    experiments: Mapping[object, np.ndarray],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    stratify: bool = True,
) -> dict[object, np.ndarray]:
    """Replicate statistics (B,) for several experiments on the same resampled images.

    `experiments` maps a name to its scores (S, N, C). Replicate b uses the same
    image weights for every experiment, so `reps[a] - reps[b]` is the paired
    bootstrap of the difference.
    """
    names = list(experiments)
    t, _ = _as_runs(y_true, experiments[names[0]])
    runs = [_as_runs(t, experiments[k])[1] for k in names]
    groups = strata(t) if stratify else np.zeros(t.shape[0], dtype=np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for w in bootstrap_weights(groups, n_boot, seed):
        for i, r in enumerate(_replicates_chunk(t, runs, w)):
            parts[i].append(r)
    return {k: np.concatenate(parts[i]) for i, k in enumerate(names)}


def _point(y_true: np.ndarray, scores: np.ndarray) -> float:
    t, s = _as_runs(y_true, scores)
    return float(replicate_mean_auc(t, s, np.ones((1, t.shape[0]), dtype=np.int32))[0])


def _percentile(reps: np.ndarray, level: float) -> tuple[float, float]:
    r = reps[np.isfinite(reps)]
    if r.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return float(lo), float(hi)


def interval(estimate: float, reps: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval from replicate values."""
    lo, hi = _percentile(reps, level)
    return Interval(float(estimate), lo, hi, level, reps)


def difference(estimate: float, reps_a: np.ndarray, reps_b: np.ndarray, level: float = 0.95) -> Difference:
    """Paired-bootstrap difference a - b from replicates computed on the same resamples.

    Two-sided p-value: 2 min(P*(d <= 0), P*(d >= 0)), capped at 1.
    """
    reps = reps_a - reps_b
    r = reps[np.isfinite(reps)]
    lo, hi = _percentile(reps, level)
    p = min(1.0, 2.0 * min(float(np.mean(r <= 0.0)), float(np.mean(r >= 0.0)))) if r.size else float("nan")
    se = float(np.std(r, ddof=1)) if r.size > 1 else float("nan")
    return Difference(float(estimate), lo, hi, se, p, "paired bootstrap")


def bootstrap_mean_auc(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
    seed: int = 0,
    stratify: bool = True,
) -> Interval:
    """Stratified image-level percentile bootstrap CI of the seed-averaged mean AUC."""
    reps = bootstrap_replicates(y_true, {0: scores}, n_boot=n_boot, seed=seed, stratify=stratify)[0]
    return interval(_point(y_true, scores), reps, level)


def paired_bootstrap_difference(
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
    seed: int = 0,
    stratify: bool = True,
) -> Difference:
    """Paired image-level bootstrap of (seed-averaged mean AUC of a) - (that of b).

    Both experiments are scored on the same resampled images in every replicate.
    """
    reps = bootstrap_replicates(y_true, {"a": scores_a, "b": scores_b}, n_boot=n_boot, seed=seed, stratify=stratify)
    return difference(_point(y_true, scores_a) - _point(y_true, scores_b), reps["a"], reps["b"], level)


def _placement_values(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Placement value of every image (one sort): V10 for positives, V01 for negatives.

    Tie groups of equal scores count 1/2, as midranks do. Returns (v (N,), pos mask, m, n).
    """
    pos = y == 1.0
    m, n = int(pos.sum()), int(pos.size - pos.sum())
    if m == 0 or n == 0:
        raise ValueError("placements need at least one positive and one negative")
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ps = pos[order]
    gid = np.cumsum(np.r_[True, ss[1:] != ss[:-1]]) - 1  # tie group of each sorted image
    size = np.bincount(gid)
    npos = np.bincount(gid, weights=ps, minlength=size.size)
    nneg = size - npos
    neg_below = np.cumsum(nneg) - nneg
    pos_above = m - np.cumsum(npos)
    v_sorted = np.where(ps, (neg_below[gid] + 0.5 * nneg[gid]) / n, (pos_above[gid] + 0.5 * npos[gid]) / m)
    v = np.empty(s.size)
    v[order] = v_sorted
    return v, pos, m, n


def placements(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong placement values (the midrank algorithm of Sun & Xu 2014, one sort).

    y (N,) 0/1 without NaN, s (N,). Returns (AUC, V10 over positives (m,), V01 over
    negatives (n,)), each in input order: V10_i = share of negatives below positive
    i, V01_j = share of positives above negative j (ties 1/2). AUC = mean V10 = mean V01.
    """
    v, pos, _, _ = _placement_values(np.asarray(y, dtype=np.float64), np.asarray(s, dtype=np.float64))
    return float(v[pos].mean()), v[pos], v[~pos]


def class_auc_influence(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AUC (C,) and the per-image influence (N,) of the class-mean AUC, for one run.

    AUCs equal `sklearn.metrics.roc_auc_score` (tested to 1e-12) with NaN where a
    class lacks one label value; psi_i = mean over defined classes c of
    (V10_ic - A_c)/m_c (positive), (V01_ic - A_c)/n_c (negative), 0 (unknown).
    One sort per class, so reports can afford it on every run.
    """
    t, s = as_label_matrix(y_true, y_score)
    auc = np.full(t.shape[1], np.nan)
    psi = np.zeros(t.shape[0])
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        yc = t[keep, c]
        if yc.size == 0 or yc.min() == yc.max():
            continue
        v, pos, m, n = _placement_values(yc, s[keep, c])
        auc[c] = v[pos].mean()
        psi[keep] += np.where(pos, (v - auc[c]) / m, (v - auc[c]) / n)
    defined = int(np.sum(~np.isnan(auc)))
    return auc, (psi / defined if defined else psi)


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong test of AUC(a) = AUC(b) for two scorers of the same images (one label).

    Var/Cov = S10/m + S01/n with S the sample covariance (ddof=1) of the
    placements; z = (A_a - A_b) / sqrt(Var_a + Var_b - 2 Cov); two-sided normal p.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(y)
    y = y[keep]
    a_auc, a10, a01 = placements(y, np.asarray(score_a, dtype=np.float64).reshape(-1)[keep])
    b_auc, b10, b01 = placements(y, np.asarray(score_b, dtype=np.float64).reshape(-1)[keep])
    s10 = np.cov(np.vstack([a10, b10]), ddof=1)
    s01 = np.cov(np.vstack([a01, b01]), ddof=1)
    cov = s10 / a10.size + s01 / a01.size
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var_diff <= 0:
        z = 0.0 if a_auc == b_auc else float(np.sign(a_auc - b_auc) * np.inf)
    else:
        z = float((a_auc - b_auc) / np.sqrt(var_diff))
    return DeLongResult(a_auc, b_auc, float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]), z, float(2 * norm.sf(abs(z))))


def auc_influence(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """Seed-averaged class-mean AUC and its per-image influence values psi (N,).

    psi is the mean over seeds of `class_auc_influence`'s psi. The variance estimate
    of the statistic is sum_i psi_i^2.
    """
    t, s = _as_runs(y_true, scores)
    parts = [class_auc_influence(t, s[k]) for k in range(s.shape[0])]
    means = [np.nanmean(a) if np.any(~np.isnan(a)) else np.nan for a, _ in parts]
    if np.all(np.isnan(means)):
        return float("nan"), np.zeros(t.shape[0])
    return float(np.mean(means)), np.mean([p for _, p in parts], axis=0)


def influence_difference_test(
    y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *, level: float = 0.95
) -> Difference:
    """Normal-approximation test of the seed-averaged mean-AUC difference a - b (same images)."""
    a, psi_a = auc_influence(y_true, scores_a)
    b, psi_b = auc_influence(y_true, scores_b)
    se = float(np.sqrt(np.sum((psi_a - psi_b) ** 2)))
    d = a - b
    zq = norm.ppf(0.5 + level / 2.0)
    if se > 0:
        p = float(2 * norm.sf(abs(d) / se))
    else:
        p = 1.0 if d == 0 else 0.0
    return Difference(d, d - zq * se, d + zq * se, se, p, "influence (DeLong-type) z-test")
