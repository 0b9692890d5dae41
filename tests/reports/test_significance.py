"""Per-column CIs and tests against the best experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports import statistics as st
from reports.aggregate import run_metrics
from reports.predictions import load_predictions
from reports.significance import column_stats

CLASSES = ["a", "b"]


def _setup(make_row, n=150):
    rng = np.random.default_rng(5)
    y = (rng.random((n, 2)) < 0.35).astype(float)
    base = np.clip(0.45 * y + 0.55 * rng.random((n, 2)), 0, 1)
    scores = {
        "best": [np.clip(base + 0.01 * rng.random((n, 2)), 0, 1) for _ in range(3)],
        "close": [np.clip(base + 0.02 * rng.random((n, 2)), 0, 1) for _ in range(3)],
        "bad": [rng.random((n, 2)) for _ in range(3)],
    }
    rows = [make_row(e, k, "col", y, s[k], CLASSES) for e, s in scores.items() for k in range(3)]
    return y, {e: np.stack(v) for e, v in scores.items()}, run_metrics(pd.DataFrame(rows))


def test_bootstrap_column_matches_direct_paired_bootstrap(make_row) -> None:
    y, scores, runs = _setup(make_row)
    cs = column_stats(runs, "col", load_predictions, n_boot=300, seed=3)
    assert cs.method == "bootstrap" and cs.best in ("best", "close") and set(cs.vs_best) == {"best", "close", "bad"} - {cs.best}
    other = "close" if cs.best == "best" else "best"
    direct = st.paired_bootstrap_difference(y, scores[cs.best], scores[other], n_boot=300, seed=3)
    got = cs.vs_best[other]
    assert (got.estimate, got.low, got.high, got.p_value) == pytest.approx(
        (direct.estimate, direct.low, direct.high, direct.p_value), abs=1e-12
    )
    assert got.p_value >= 0.05  # near-identical scores are not distinguishable
    assert cs.vs_best["bad"].p_value < 0.01
    est, lo, hi = cs.ci["bad"]
    assert lo < est < hi and est == pytest.approx(runs.loc[runs.experiment == "bad", "mean_auc"].mean())


def test_influence_column_matches_influence_test(make_row) -> None:
    y, scores, runs = _setup(make_row)
    cs = column_stats(runs, "col", load_predictions, max_bootstrap_images=10)
    assert cs.method == "influence"
    want = st.influence_difference_test(y, scores[cs.best], scores["bad"])
    assert cs.vs_best["bad"].se == pytest.approx(want.se)
    assert cs.vs_best["bad"].p_value == pytest.approx(want.p_value)


def test_labels_must_agree_within_a_column(make_row) -> None:
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 1.0]])
    s = np.random.default_rng(0).random((4, 2))
    rows = [make_row("e1", 0, "col", y, s, CLASSES), make_row("e2", 0, "col", 1 - y, s, CLASSES)]
    with pytest.raises(DataError, match="other labels"):
        column_stats(run_metrics(pd.DataFrame(rows)), "col", load_predictions, n_boot=10)
