"""Bootstrap, DeLong and influence tests against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from reports import statistics as st


def _data(rng, n=150, prev=0.4, shift=1.0):
    y = (rng.random(n) < prev).astype(float)
    return y, y * shift + rng.normal(size=n)


@pytest.mark.parametrize("pair_cells", [st._PAIR_CELLS, 0])
def test_weighted_auc_equals_sklearn_on_repeated_sample(monkeypatch, pair_cells) -> None:
    monkeypatch.setattr(st, "_PAIR_CELLS", pair_cells)  # 0 forces the sort path
    rng = np.random.default_rng(3)
    y = (rng.random(40) < 0.4).astype(float)
    s = np.round(rng.random(40), 1)  # many ties
    w = rng.integers(0, 4, size=(6, 40)).astype(np.int32)
    got = st.weighted_auc(y, s, w)
    for b in range(6):
        want = roc_auc_score(np.repeat(y, w[b]), np.repeat(s, w[b]))
        assert got[b] == pytest.approx(want, abs=1e-12)
    assert st.weighted_auc(y, s, np.ones((1, 40), dtype=np.int32))[0] == pytest.approx(roc_auc_score(y, s))


def test_bootstrap_weights_keep_stratum_sizes_and_are_seeded() -> None:
    groups = np.array([0] * 7 + [1] * 3)
    chunks = list(st.bootstrap_weights(groups, 50, seed=5))
    w = np.vstack(chunks)
    assert w.shape == (50, 10)
    assert np.all(w[:, :7].sum(1) == 7) and np.all(w[:, 7:].sum(1) == 3)
    assert np.array_equal(w, np.vstack(list(st.bootstrap_weights(groups, 50, seed=5))))
    assert not np.array_equal(w, np.vstack(list(st.bootstrap_weights(groups, 50, seed=6))))


def test_multilabel_multiseed_point_estimate_is_table_mean() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.3).astype(float)
    y[:5, 0] = np.nan
    s = np.clip(0.3 * y[None] + rng.random((4, 80, 3)), 0, 2) / 2
    s = np.nan_to_num(s, nan=0.5)
    ci = st.bootstrap_mean_auc(y, s, n_boot=200, seed=1)
    want = np.mean(
        [np.mean([roc_auc_score(y[~np.isnan(y[:, c]), c], s[k, ~np.isnan(y[:, c]), c]) for c in range(3)]) for k in range(4)]
    )
    assert ci.estimate == pytest.approx(want, abs=1e-12)
    assert ci.low < ci.estimate < ci.high and ci.replicates.shape == (200,)


def test_bootstrap_ci_covers_truth_at_nominal_rate() -> None:
    # binormal model: positives N(d, 1), negatives N(0, 1) -> AUC = Phi(d / sqrt(2))
    d = 1.0
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(2026)
    hits, trials = 0, 200
    for i in range(trials):
        y, s = _data(rng, n=120, shift=d)
        ci = st.bootstrap_mean_auc(y, s, n_boot=1000, seed=i)
        hits += ci.low <= truth <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def _delong_by_definition(y, a, b):
    """DeLong written from the 1988 definitions with explicit pair loops."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(x, z):
        return 1.0 if x > z else 0.5 if x == z else 0.0

    comps = []
    for s in (a, b):
        v10 = np.array([np.mean([psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.array([np.mean([psi(s[i], s[j]) for i in pos]) for j in neg])
        comps.append((v10, v01))
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    cov = s10 / len(pos) + s01 / len(neg)
    aucs = [comps[0][0].mean(), comps[1][0].mean()]
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return aucs, cov, z


def test_delong_matches_definition_on_small_case() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0], dtype=float)
    a = np.array([0.9, 0.4, 0.6, 0.5, 0.2, 0.1, 0.4])
    b = np.array([0.8, 0.7, 0.3, 0.6, 0.2, 0.3, 0.1])
    r = st.delong_test(y, a, b)
    aucs, cov, z = _delong_by_definition(y, a, b)
    # hand check of the first AUC: positive 0.4 beats 0.2, 0.1 and ties 0.4 -> (4 + 2.5 + 4) / 12
    assert r.auc_a == pytest.approx(10.5 / 12) == pytest.approx(aucs[0])
    assert r.auc_b == pytest.approx(aucs[1])
    assert [r.var_a, r.var_b, r.cov] == pytest.approx([cov[0, 0], cov[1, 1], cov[0, 1]])
    assert r.z == pytest.approx(z) and r.p_value == pytest.approx(2 * norm.sf(abs(z)))


def test_delong_agrees_with_paired_bootstrap() -> None:
    rng = np.random.default_rng(7)
    y, a = _data(rng, n=300, prev=0.3, shift=1.2)
    b = 0.6 * a + 0.5 * y + rng.normal(size=300)
    r = st.delong_test(y, a, b)
    boot = st.paired_bootstrap_difference(y, a, b, n_boot=2000, seed=0)
    assert boot.estimate == pytest.approx(r.auc_a - r.auc_b, abs=1e-12)
    assert boot.se == pytest.approx(r.se_diff, rel=0.12)
    assert (boot.p_value < 0.05) == (r.p_value < 0.05)


def test_influence_variance_equals_delong_up_to_ddof() -> None:
    rng = np.random.default_rng(11)
    y, a = _data(rng, n=90)
    b = a + rng.normal(size=90)
    r = st.delong_test(y, a, b)
    inf = st.influence_difference_test(y, a, b)
    m, n = int(y.sum()), int((1 - y).sum())
    _, a10, a01 = st.placements(y, a)
    _, b10, b01 = st.placements(y, b)
    want = np.var(a10 - b10) / m + np.var(a01 - b01) / n  # ddof=0 version of DeLong
    assert inf.se**2 == pytest.approx(want, rel=1e-10)
    assert inf.estimate == pytest.approx(r.auc_a - r.auc_b)
    assert inf.se == pytest.approx(r.se_diff, rel=0.05)


def test_paired_difference_of_identical_runs_is_zero_and_strong_difference_significant() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random((200, 2)) < 0.4).astype(float)
    good = np.clip(0.5 * y + 0.5 * rng.random((3, 200, 2)), 0, 1)
    bad = rng.random((3, 200, 2))
    same = st.paired_bootstrap_difference(y, good, good, n_boot=300)
    assert same.estimate == 0 and same.se == 0 and same.p_value == 1.0
    diff = st.paired_bootstrap_difference(y, good, bad, n_boot=300)
    assert diff.p_value < 0.01 and diff.low > 0
    assert st.influence_difference_test(y, good, bad).p_value < 0.01


def test_class_auc_influence_equals_sklearn_and_bootstrap_se() -> None:
    rng = np.random.default_rng(12)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    s = np.round(np.clip(0.3 * y + 0.7 * rng.random((400, 3)), 0, 1), 2)  # ties
    y[rng.random((400, 3)) < 0.1] = np.nan
    y[:, 2] = 0.0  # no positives: no AUC, no influence
    auc, psi = st.class_auc_influence(y, s)
    for c in range(2):
        keep = ~np.isnan(y[:, c])
        assert auc[c] == pytest.approx(roc_auc_score(y[keep, c], s[keep, c]), abs=1e-12)
    assert np.isnan(auc[2])
    assert psi.sum() == pytest.approx(0.0, abs=1e-12)  # influence values are centred
    boot = st.bootstrap_mean_auc(y, s, n_boot=2000, seed=0)
    assert np.sqrt(np.sum(psi**2)) == pytest.approx(boot.se, rel=0.15)
