"""Oracle AUC: standard referral, the Krones cumulative mode, per-label variant."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from reports import referral as rf
from reports.metrics import mean_auc


def _data(n=202, c=5, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, c)), 0, 1)
    return y, p


def test_standard_referral_by_hand() -> None:
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    p = np.array([[0.45], [0.9], [0.8], [0.1]])  # |p - .5| = .05, .4, .3, .4
    got = rf.oracle_auc(y, p, fractions=(0.0, 0.25, 0.5))
    # f = 0: positives .45, .8 vs negatives .9, .1 -> 2/4
    # f = .25: image 0 referred -> p0 = 1 -> positives 1, .8 -> 3/4
    # f = .5: images 0 and 2 (u = .3) referred -> 1, 1 vs .9, .1 -> 1
    assert got.tolist() == [0.5, 0.75, 1.0]


def test_standard_matches_explicit_replacement() -> None:
    y, p = _data()
    u = np.mean(np.abs(p - 0.5), axis=1)
    for f, got in zip(rf.DEFAULT_FRACTIONS, rf.oracle_auc(y, p)):
        k = int(np.floor(202 * f + 1e-9))
        q = p.copy()
        q[np.argsort(u)[:k]] = y[np.argsort(u)[:k]]
        assert got == pytest.approx(np.mean([roc_auc_score(y[:, c], q[:, c]) for c in range(5)]))


def test_krones_compat_is_cumulative_referral() -> None:
    assert rf.referred_counts(202, rf.DEFAULT_FRACTIONS, compat=True) == [0, 10, 30, 60, 100, 150]
    assert rf.referred_counts(202, rf.DEFAULT_FRACTIONS) == [0, 10, 20, 30, 40, 50]
    y, p = _data()
    compat = rf.oracle_auc(y, p, compat=True)
    effective = [0, 10 / 202, 30 / 202, 60 / 202, 100 / 202, 150 / 202]
    assert np.round(100 * np.array(effective), 2).tolist() == [0.0, 4.95, 14.85, 29.7, 49.5, 74.26]
    assert compat == pytest.approx(rf.oracle_auc(y, p, fractions=effective), abs=1e-12)
    standard = rf.oracle_auc(y, p)
    assert compat[0] == standard[0] == pytest.approx(mean_auc(y, p))
    assert np.all(compat[2:] > standard[2:])  # the bug inflates the curve


def test_per_label_variant() -> None:
    y, p = _data(seed=3)
    per = rf.oracle_auc_per_label(y, p, fractions=(0.0, 0.1, 1.0))
    assert per.shape == (3, 5)
    assert per[0] == pytest.approx([roc_auc_score(y[:, c], p[:, c]) for c in range(5)])
    assert np.all(per[1] >= per[0] - 1e-12) and np.all(per[2] == 1.0)


def test_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        rf.oracle_auc(*_data(), fractions=(1.5,))


def _paper_oracle_auc(y: np.ndarray, p: np.ndarray, fractions) -> list[float]:
    """The Krones oracle AUC written out from its definition (docs/DATA_AND_METRICS.md §10):
    scores modified in place across fractions, `np.argpartition` on per-row mean |p - .5|,
    referred rows' scores set to the truth, mean of the per-label AUCs that are > 0."""
    probs = p.copy()
    out = []
    for f in fractions:
        k = int(len(probs) * f)
        rows = np.argpartition([np.mean(o) for o in abs(probs - 0.5)], k)[:k]
        probs[rows] = y[rows]
        aucs = [roc_auc_score(y[:, c], probs[:, c]) if y[:, c].sum() else 0.0 for c in range(y.shape[1])]
        out.append(float(np.mean([a for a in aucs if a > 0])))
    return out


def _two_decimal(seed: int, n: int = 202) -> tuple[np.ndarray, np.ndarray]:
    """Tie-heavy scores: probabilities rounded to 2 decimals, as the paper's exported files hold."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 5)) < np.array([0.37, 0.33, 0.16, 0.21, 0.32])).astype(float)
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random((n, 5)) ** 1.5, 0, 1), 2)
    return y, p


@pytest.mark.parametrize("seed", range(6))
def test_compat_selects_as_the_paper_on_ties(seed: int) -> None:
    y, p = _two_decimal(seed)
    got = rf.oracle_auc(y, p, compat=True)
    assert got.tolist() == pytest.approx(_paper_oracle_auc(y, p, rf.DEFAULT_FRACTIONS), abs=1e-12)


def test_argpartition_and_stable_sort_refer_different_tied_images() -> None:
    """Why compat replicates the call: with ties, a stable sort refers other images and
    (on some inputs) gives another oracle AUC, as issue 11 observed (0.8324 vs 0.8329)."""
    differs_rows = differs_auc = 0
    for seed in range(6):
        y, p = _two_decimal(seed)
        u = [np.mean(o) for o in abs(p - 0.5)]
        for k in (10, 20, 30, 50):
            krones = set(rf.krones_referral_rows(p, k).tolist())
            stable = set(np.argsort(u, kind="stable")[:k].tolist())
            assert sorted(u[i] for i in krones) == sorted(u[i] for i in stable)  # same uncertainties...
            differs_rows += krones != stable  # ...but not always the same images
        stable_cumulative = []
        q = p.copy()
        for f in rf.DEFAULT_FRACTIONS:
            k = int(len(q) * f)
            rows = np.argsort(np.mean(np.abs(q - 0.5), axis=1), kind="stable")[:k]
            q[rows] = y[rows]
            stable_cumulative.append(mean_auc(y, q))
        differs_auc += not np.allclose(stable_cumulative, rf.oracle_auc(y, p, compat=True), atol=1e-12)
    assert differs_rows > 0 and differs_auc > 0


def test_krones_referral_rows_edges() -> None:
    p = np.array([[0.5], [0.9], [0.5], [0.1]])
    assert rf.krones_referral_rows(p, 0).size == 0
    assert sorted(rf.krones_referral_rows(p, 4).tolist()) == [0, 1, 2, 3]  # k = n: everyone
    assert sorted(rf.krones_referral_rows(p, 2).tolist()) == [0, 2]
