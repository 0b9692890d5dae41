"""Seeded patient-level splits and few-label subsets of a standard index.

Every function here moves whole patients: no patient ever has images on two sides
of a split, which is what keeps a test set honest (NIH follow-ups of one patient
look alike). Sizes are counted in *images* (rows), because that is what the papers
report ("1 % of the labels", "652 labels").

Stratification is iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011,
"On the stratification of multi-label data") lifted to patients: each patient
carries its image count and, per label, its number of positive images; the rarest
label still unassigned is served first, each of its patients going to the split
that most lacks positives of that label (ties: the split most short of images,
then a seeded coin). Patients without any positive fill the splits by remaining
size. A split that would overflow its image budget is avoided while another still
has room; few-label subsets then move single patients in or out to hit the exact
image count (652 labels means 652 images) whenever the patient sizes allow it.
NaN labels count as not positive.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from bench.data.errors import DataError

log = logging.getLogger(__name__)

SUBSET, REST = "subset", "rest"


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: index lacks column(s) {missing}; has {list(df.columns)}")


def _patient_table(df: pd.DataFrame, stratify: Sequence[str], patient_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient ids (sorted), images per patient (P,), positive images per label (P, L)."""
    _check_columns(df, [patient_col, *stratify], "split")
    patients = df[patient_col].astype(str)
    if stratify:
        positive = (df[list(stratify)].to_numpy(dtype=float) == 1.0).astype(np.int64)
    else:
        positive = np.zeros((len(df), 0), np.int64)
    grouped = pd.DataFrame(positive, index=patients.to_numpy()).groupby(level=0, sort=True)
    ids = np.asarray(grouped.size().index, dtype=str)
    counts = grouped.size().to_numpy()
    labels = grouped.sum().to_numpy() if stratify else np.zeros((len(ids), 0), np.int64)
    return ids, counts, labels


def _normalised(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions:
        raise DataError("split: no fractions given")
    bad = {k: v for k, v in fractions.items() if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
        raise DataError(f"split: fractions must be non-negative numbers, got {bad}")
    total = float(sum(fractions.values()))
    if not np.isclose(total, 1.0, atol=1e-6):
        raise DataError(f"split: fractions {dict(fractions)} sum to {total}, not 1")
    return {k: float(v) / total for k, v in fractions.items()}


def _iterative_stratification(
    counts: np.ndarray, labels: np.ndarray, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Assign patients to splits; returns the split number per patient, shape (P,).

    `counts` (P,) images per patient, `labels` (P, L) positive images per label,
    `targets` (S,) desired images per split (summing to counts.sum()).
    """
    n_p, n_l = labels.shape
    n_s = len(targets)
    share = targets / max(targets.sum(), 1e-12)
    need_size = targets.astype(float).copy()
    need_label = share[:, None] * labels.sum(axis=0)[None, :].astype(float)  # (S, L)
    out = np.full(n_p, -1, dtype=np.int64)
    order = rng.permutation(n_p)
    tiebreak = rng.random((n_p, n_s))  # fixed per (patient, split): deterministic ties

    def choose(p: int, label: int | None) -> int:
        fits = need_size >= counts[p] - 1e-9
        room = fits if fits.any() else np.ones(n_s, dtype=bool)
        keys = []
        if label is not None:
            keys.append(np.where(room, need_label[:, label], -np.inf))
        keys.append(np.where(room, need_size, -np.inf))
        best = np.ones(n_s, dtype=bool)
        for key in keys:
            top = key[best].max()
            best &= np.isclose(key, top) | (key > top)
        return int(np.argmax(np.where(best, tiebreak[p], -1.0)))

    remaining = labels.copy()
    while True:
        unassigned = out < 0
        totals = remaining[unassigned].sum(axis=0) if n_l else np.zeros(0)
        live = np.flatnonzero(totals > 0)
        if live.size == 0:
            break
        label = int(live[np.argmin(totals[live])])  # the rarest label first
        for p in order:
            if out[p] < 0 and labels[p, label] > 0:
                s = choose(p, label)
                out[p] = s
                need_size[s] -= counts[p]
                need_label[s] -= labels[p]
    for p in order:
        if out[p] < 0:
            s = choose(p, None)
            out[p] = s
            need_size[s] -= counts[p]
    return out


def assign_splits(
    df: pd.DataFrame,
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    stratify: Sequence[str] = (),
    patient_col: str = "patient_id",
) -> pd.Series:
    """Split name per row (index aligned with `df`), whole patients per split.

    `fractions` maps split names to their share of images (summing to 1), e.g.
    ``{"train": 0.8, "val": 0.1, "test": 0.1}``; `stratify` names label columns whose
    positive rates should match across splits. Deterministic given `seed`.
    """
    shares = _normalised(fractions)
    ids, counts, labels = _patient_table(df, stratify, patient_col)
    targets = np.array(list(shares.values())) * counts.sum()
    which = _iterative_stratification(counts, labels, targets, np.random.default_rng(seed))
    names = np.array(list(shares), dtype=object)
    by_patient = dict(zip(ids, names[which]))
    return df[patient_col].astype(str).map(by_patient).rename("split")


def split_index(
    df: pd.DataFrame,
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    stratify: Sequence[str] = (),
    patient_col: str = "patient_id",
) -> pd.DataFrame:
    """A copy of a standard index with its `split` column replaced by `assign_splits`."""
    out = df.copy()
    out["split"] = assign_splits(df, fractions, seed=seed, stratify=stratify, patient_col=patient_col)
    for name, group in out.groupby("split"):
        log.info("split %s: %d images, %d patients", name, len(group), group[patient_col].nunique())
    return out


def subset_size(n_rows: int, size: int | float) -> int:
    """Rows wanted: an int is a count (652), a float a fraction in (0, 1] (0.01)."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise DataError(f"few-label subset: size must be a count or a fraction, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < float(size) <= 1.0:
            raise DataError(f"few-label subset: fraction {size} is not in (0, 1]")
        return max(1, int(round(float(size) * n_rows)))
    if not 0 < int(size) <= n_rows:
        raise DataError(f"few-label subset: count {size} is not in [1, {n_rows}] (rows available)")
    return int(size)


def few_label_subset(
    df: pd.DataFrame,
    size: int | float,
    *,
    seed: int = 0,
    stratify: Sequence[str] = (),
    patient_col: str = "patient_id",
) -> pd.DataFrame:
    """Rows of whole patients totalling `size` images (exact when patient sizes allow).

    `size` is a count (e.g. 652 or 1000) or a fraction of the rows (e.g. 0.01; a
    float 1.0 means all rows, an int 1 one row). With `stratify`, the subset keeps
    the label prevalences of `df` (iterative stratification, see module doc). The
    returned frame keeps `df`'s index and row order.
    """
    n = subset_size(len(df), size)
    if n == len(df):
        return df.copy()
    picked = assign_splits(
        df, {SUBSET: n / len(df), REST: 1.0 - n / len(df)}, seed=seed, stratify=stratify, patient_col=patient_col
    )
    chosen = _fit_exactly(df[patient_col].astype(str), picked == SUBSET, n, np.random.default_rng(seed))
    out = df[chosen].copy()
    if len(out) != n:
        log.warning("few-label subset: %d images requested, %d drawn (whole patients)", n, len(out))
    return out


def _fit_exactly(patients: pd.Series, chosen: pd.Series, n: int, rng: np.random.Generator) -> pd.Series:
    """Move whole patients in or out of `chosen` until it has `n` rows, when possible.

    Stratified assignment can miss a small target by a patient or two; this greedy
    repair adds (if short) or removes (if over) patients whose size fits the gap,
    largest first, visiting candidates in a seeded order.
    """
    chosen = chosen.copy()
    sizes = patients.value_counts()
    for _ in range(len(sizes)):
        gap = n - int(chosen.sum())
        if gap == 0:
            break
        pool = patients[~chosen] if gap > 0 else patients[chosen]
        cand = sizes[sorted(set(pool))]
        cand = cand[cand <= abs(gap)]
        if cand.empty:
            break
        order = rng.permutation(len(cand))
        pick = cand.iloc[order].sort_values(ascending=False, kind="stable").index[0]
        chosen[patients == pick] = gap > 0
    return chosen


def nested_subsets(
    df: pd.DataFrame,
    sizes: Sequence[int | float],
    *,
    seed: int = 0,
    stratify: Sequence[str] = (),
    patient_col: str = "patient_id",
) -> dict[int | float, pd.DataFrame]:
    """Few-label subsets where each smaller one lies inside each larger one.

    For label-efficiency curves (1 %, 10 %, 100 %) the smaller training sets should be
    subsets of the larger ones, so that differences come from the amount of data and
    not from which patients were drawn. Sizes are relative to `df` (counts or
    fractions, see `subset_size`); the largest is drawn from `df`, each next one from
    the previous subset, with the same `seed` and `stratify`. Returns size -> rows.
    """
    wanted = {size: subset_size(len(df), size) for size in sizes}
    out: dict[int | float, pd.DataFrame] = {}
    current = df
    for size in sorted(wanted, key=lambda k: -wanted[k]):
        n = min(wanted[size], len(current))
        current = current if n == len(current) else few_label_subset(
            current, n, seed=seed, stratify=stratify, patient_col=patient_col
        )
        out[size] = current
    return {size: out[size] for size in sizes}


def check_patient_disjoint(df: pd.DataFrame, patient_col: str = "patient_id", split_col: str = "split") -> None:
    """Raise DataError naming patients that appear in more than one split."""
    _check_columns(df, [patient_col, split_col], "patient-disjoint check")
    n_splits = df.groupby(patient_col)[split_col].nunique()
    shared = n_splits[n_splits > 1]
    if len(shared):
        raise DataError(f"{len(shared)} patient(s) appear in several splits, e.g. {shared.index[:5].tolist()}")
