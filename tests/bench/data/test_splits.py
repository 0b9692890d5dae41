"""Patient-level splits and few-label subsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from bench.data.splits import (
    assign_splits,
    check_patient_disjoint,
    few_label_subset,
    split_index,
    subset_size,
)

LABELS = ["common", "medium", "rare"]
PREVALENCE = [0.3, 0.1, 0.02]
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def make_index(n_patients: int = 800, seed: int = 0, max_images: int = 5) -> pd.DataFrame:
    """A standard-index-like frame: patients with 1..max_images rows, patient-level
    labels (each follow-up keeps the patient's findings) and some NaN labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        k = int(rng.integers(1, max_images + 1))
        findings = rng.random(len(LABELS)) < PREVALENCE
        for i in range(k):
            values = [float(f) if rng.random() > 0.05 else np.nan for f in findings]
            rows.append({"image_id": f"{p}_{i}", "patient_id": f"p{p:05d}", **dict(zip(LABELS, values))})
    return pd.DataFrame(rows)


def prevalence(df: pd.DataFrame) -> np.ndarray:
    return (df[LABELS] == 1.0).mean().to_numpy()


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return make_index()


def test_no_patient_in_two_splits_and_all_rows_assigned(index: pd.DataFrame) -> None:
    split = assign_splits(index, FRACTIONS, seed=1, stratify=LABELS)
    assert split.index.equals(index.index)
    assert set(split) == set(FRACTIONS)
    assert split.notna().all()
    check_patient_disjoint(index.assign(split=split))
    assert (index.assign(split=split).groupby("patient_id")["split"].nunique() == 1).all()


def test_sizes_follow_the_fractions(index: pd.DataFrame) -> None:
    split = assign_splits(index, FRACTIONS, seed=1)
    n = len(index)
    for name, frac in FRACTIONS.items():
        assert abs((split == name).sum() - frac * n) <= 5  # at most one patient off


def test_deterministic_given_seed(index: pd.DataFrame) -> None:
    a = assign_splits(index, FRACTIONS, seed=3, stratify=LABELS)
    b = assign_splits(index, FRACTIONS, seed=3, stratify=LABELS)
    c = assign_splits(index, FRACTIONS, seed=4, stratify=LABELS)
    assert a.equals(b)
    assert not a.equals(c)
    shuffled = index.sample(frac=1.0, random_state=0)
    assert assign_splits(shuffled, FRACTIONS, seed=3, stratify=LABELS).sort_index().equals(a)  # row order irrelevant


def test_stratification_keeps_prevalence_closer_than_random_patient_splits(index: pd.DataFrame) -> None:
    overall = prevalence(index)
    strat_dev, random_dev = [], []
    for seed in range(5):
        s = assign_splits(index, FRACTIONS, seed=seed, stratify=LABELS)
        r = assign_splits(index, FRACTIONS, seed=seed)
        strat_dev.append(max(np.abs(prevalence(index[s == k]) - overall).max() for k in FRACTIONS))
        random_dev.append(max(np.abs(prevalence(index[r == k]) - overall).max() for k in FRACTIONS))
    assert np.mean(strat_dev) < np.mean(random_dev)
    assert max(strat_dev) < 0.02
    # every split receives positives of the rare label (~2 % of 800 patients)
    s = assign_splits(index, FRACTIONS, seed=0, stratify=LABELS)
    assert all((index.loc[s == k, "rare"] == 1.0).any() for k in FRACTIONS)


def test_split_index_replaces_split_column(index: pd.DataFrame) -> None:
    out = split_index(index.assign(split="train"), {"train": 0.5, "test": 0.5}, seed=0)
    assert set(out["split"]) == {"train", "test"}
    assert out.drop(columns="split").equals(index)


@pytest.mark.parametrize("size, expected", [(652, 652), (1000, 1000), (0.01, None), (0.1, None)])
def test_few_label_subset_sizes_are_exact_by_whole_patients(index: pd.DataFrame, size, expected) -> None:
    sub = few_label_subset(index, size, seed=0, stratify=LABELS)
    want = expected if expected is not None else round(size * len(index))
    assert len(sub) == want
    in_sub = set(sub["patient_id"])
    rest = index[~index.index.isin(sub.index)]
    assert not in_sub & set(rest["patient_id"])  # whole patients only
    assert sub.index.is_monotonic_increasing


def test_few_label_subset_is_seeded_and_stratified(index: pd.DataFrame) -> None:
    a = few_label_subset(index, 652, seed=0, stratify=LABELS)
    b = few_label_subset(index, 652, seed=0, stratify=LABELS)
    c = few_label_subset(index, 652, seed=1, stratify=LABELS)
    assert a.index.equals(b.index) and not a.index.equals(c.index)
    assert np.abs(prevalence(a) - prevalence(index)).max() < 0.02


def test_subset_of_everything_and_size_errors(index: pd.DataFrame) -> None:
    assert len(few_label_subset(index, 1.0)) == len(index)
    assert subset_size(200, 0.01) == 2 and subset_size(200, 7) == 7
    with pytest.raises(DataError, match="count 0 is not in"):
        few_label_subset(index, 0)
    with pytest.raises(DataError, match="fraction 1.5"):
        few_label_subset(index, 1.5)
    with pytest.raises(DataError, match=r"count \d+ is not in"):
        few_label_subset(index, len(index) + 1)


def test_bad_fractions_and_columns(index: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="sum to 0.9"):
        assign_splits(index, {"train": 0.8, "test": 0.1})
    with pytest.raises(DataError, match="non-negative"):
        assign_splits(index, {"train": 1.2, "test": -0.2})
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Edema'\]"):
        assign_splits(index, FRACTIONS, stratify=["Edema"])


def test_check_patient_disjoint_names_the_patients() -> None:
    df = pd.DataFrame({"patient_id": ["a", "a", "b"], "split": ["train", "test", "train"]})
    with pytest.raises(DataError, match=r"1 patient\(s\) appear in several splits, e.g. \['a'\]"):
        check_patient_disjoint(df)


def test_nested_subsets_are_nested_and_sized(index: pd.DataFrame) -> None:
    from bench.data.splits import nested_subsets

    subsets = nested_subsets(index, [0.01, 1000, 0.1], seed=2, stratify=LABELS)
    assert list(subsets) == [0.01, 1000, 0.1]
    assert len(subsets[0.01]) == round(0.01 * len(index))
    assert len(subsets[0.1]) == round(0.1 * len(index)) and len(subsets[1000]) == 1000
    assert set(subsets[0.01].index) <= set(subsets[0.1].index) <= set(subsets[1000].index)
    for sub in subsets.values():
        assert not set(sub["patient_id"]) & set(index.loc[~index.index.isin(sub.index), "patient_id"])
