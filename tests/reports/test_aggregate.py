"""Aggregation over seeds: hand-computed means and sample sds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports.aggregate import best_seeds, run_metrics, summarise, summarise_per_class

Y = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
# class-0 AUC per seed: 0.75, 0.5, 1.0; class-1 AUC is 1.0 for every seed
S0 = {
    0: [0.1, 0.4, 0.35, 0.8],
    1: [0.5, 0.6, 0.4, 0.7],
    2: [0.1, 0.2, 0.3, 0.4],
}
S1 = [0.1, 0.9, 0.2, 0.8]


def _manifest(make_row) -> pd.DataFrame:
    rows = []
    for seed, s0 in S0.items():
        s = np.column_stack([s0, S1])
        rows.append(make_row("A", seed, "site1", Y, s, ["c0", "c1"], n=4, location="Here"))
        rows.append(make_row("B", seed, "site1", Y, np.column_stack([S1, S1]), ["c0", "c1"], n=4, location="Here"))
    return pd.DataFrame(rows)


def test_mean_and_sample_sd_over_seeds(make_row) -> None:
    runs = run_metrics(_manifest(make_row))
    a = runs[runs["experiment"] == "A"].sort_values("seed")
    np.testing.assert_allclose(a["mean_auc"], [0.875, 0.75, 1.0])
    summ = summarise(runs).set_index("experiment")
    assert summ.loc["A", "mean"] == pytest.approx(0.875)
    # sample sd (ddof=1): deviations 0, -0.125, 0.125 -> sqrt(2 * 0.015625 / 2)
    assert summ.loc["A", "sd"] == pytest.approx(0.125)
    assert summ.loc["A", "n_seeds"] == 3 and summ.loc["A", "n_images"] == 4
    # B: class 0 scores S1 -> positives 0.2, 0.8 vs negatives 0.1, 0.9 -> 2/4; class 1 -> 1.0
    assert summ.loc["B", "mean"] == pytest.approx(0.75) and summ.loc["B", "sd"] == pytest.approx(0.0)
    assert list(summ.index) == ["A", "B"]


def test_per_class_summary_and_best_seed(make_row) -> None:
    runs = run_metrics(_manifest(make_row))
    pc = summarise_per_class(runs, "site1")
    a0 = pc[(pc["experiment"] == "A") & (pc["class"] == "c0")].iloc[0]
    assert a0["mean"] == pytest.approx(0.75)
    assert a0["sd"] == pytest.approx(np.std([0.75, 0.5, 1.0], ddof=1))
    assert best_seeds(runs, "site1")["A"] == 2


def test_single_seed_sd_is_nan(make_row) -> None:
    runs = run_metrics(pd.DataFrame([make_row("A", 0, "x", Y, np.column_stack([S1, S1]), ["c0", "c1"])]))
    assert np.isnan(summarise(runs)["sd"].iloc[0])


def test_manifest_errors_name_the_problem(make_row, tmp_path) -> None:
    m = pd.DataFrame([make_row("A", 0, "x", Y, np.column_stack([S1, S1]), ["c0", "c1"])])
    with pytest.raises(DataError, match="run_id"):
        run_metrics(m.drop(columns=["run_id"]))
    bad = m.copy()
    bad.loc[0, "predictions"] = str(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="missing.parquet"):
        run_metrics(bad)
    other = m.copy()
    other["classes"] = [["c0", "nope"]]
    with pytest.raises(DataError, match="prob:nope"):
        run_metrics(other)
    with pytest.raises(DataError, match="more than once"):
        run_metrics(pd.concat([m, m]))
