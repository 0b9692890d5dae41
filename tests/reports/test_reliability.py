"""Reliability tables (Krones 7-8) from the best seed of each experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports import reliability
from reports.aggregate import run_metrics
from reports.calibration import krones_ce
from reports.predictions import PredictionCache
from reports.referral import oracle_auc
from reports.thresholds import subset_accuracy

CLASSES = ["Atelectasis", "Edema"]


def _runs(make_row):
    rng = np.random.default_rng(8)
    y = (rng.random((120, 2)) < 0.3).astype(float)
    scores = {}
    rows = []
    for e, strength in (("1.2", 0.05), ("3.4", 0.1)):
        for seed in (0, 11, 21):
            s = np.clip(strength * (1 + seed / 21) * y + 0.5 * rng.random((120, 2)), 0, 1)
            scores[(e, seed)] = s
            rows.append(make_row(e, seed, "CheXpert vali", y, s, CLASSES))
    return y, scores, run_metrics(pd.DataFrame(rows))


def test_best_seed_tables_equal_direct_metrics(make_row) -> None:
    y, scores, runs = _runs(make_row)
    res = reliability.analyse(
        runs, "CheXpert vali", PredictionCache().get, thresholds=(0.3, 0.5), fractions=(0.0, 0.1), compat=True
    )
    assert {e: s.seed for e, s in res.sources.items()} == {"1.2": 21, "3.4": 21}  # strongest signal
    best = scores[("3.4", 21)]
    names = [t.name for t in reliability.tables(res)]
    assert names == [
        "table7_threshold_metrics",
        "table7_threshold_metrics_more",
        "table8_oracle_auc",
        "table8_oracle_auc_compat",
        "table8_oracle_auc_per_label",
        "table_calibration",
        "table_random_baselines",
    ]
    t7 = reliability.threshold_table(res)
    subset_row = [r for r in t7.rows if r.group == "3.4" and r.label == "Subset accuracy"][0]
    assert [c.mean for c in subset_row.cells] == pytest.approx([subset_accuracy(y, best, threshold=t) for t in (0.3, 0.5)])
    # the paper's four rows per experiment; the others (and Krones' calibration error) in the "more" table
    assert [r.label for r in t7.rows if r.group == "3.4"] == [
        "Mean accuracy", "Subset accuracy", "FNR (underdiagnosis)", "Calibration error (ECE, top-label)",
    ]
    more = reliability.threshold_table(res, more=True)
    ce_row = [r for r in more.rows if r.group == "3.4" and r.label.startswith("Calibration error")][0]
    assert ce_row.cells[1].mean == pytest.approx(krones_ce(y, best, threshold=0.5))
    assert t7.group_header == "No." and t7.column_groups == [("Decision threshold", 2)]
    assert "p² + (1 - p)²" in t7.notes[1]
    t8 = reliability.oracle_table(res)
    assert [c.mean for c in t8.rows[1].cells] == pytest.approx(oracle_auc(y, best, fractions=(0.0, 0.1)).tolist())
    assert t8.rows[1].cells[0].bold
    assert "[0, 12]" in t8.notes[0]


def test_selection_and_errors(make_row) -> None:
    _, _, runs = _runs(make_row)
    res = reliability.analyse(runs, "CheXpert vali", PredictionCache().get, experiments=["3.4"], thresholds=(0.5,), fractions=(0.0,))
    assert list(res.per_threshold) == ["3.4"] and not res.compat
    assert not any("Krones" in r.label for r in reliability.threshold_table(res, more=True).rows)
    with pytest.raises(DataError, match="no results"):
        reliability.analyse(runs, "CheXpert vali", PredictionCache().get, experiments=["9.9"], thresholds=(0.5,), fractions=(0.0,))
    with pytest.raises(DataError, match="no multilabel rows"):
        reliability.analyse(runs, "nope", PredictionCache().get, thresholds=(0.5,), fractions=(0.0,))
