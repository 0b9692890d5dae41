"""Metric tables (`reports: {metric_tables: [...]}`): registered metrics looked up by name.

Also the "a metric is one file plus its test" check: the first test defines a metric here,
registers it, and the report builder tabulates it with nothing else to edit.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports import build_reports
from reports.calibration import ece_per_label
from reports.metrics import METRICS, register_metric

CLASSES = ["Atelectasis", "Edema"]


@pytest.fixture
def manifest(make_row) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Two experiments x two seeds x two columns of real prediction files."""
    rng = np.random.default_rng(4)
    y = (rng.random((50, 2)) < 0.4).astype(float)
    rows = []
    for exp, strength in (("1.1", 0.2), ("3.4", 0.7)):
        for seed in (0, 1):
            s = np.clip(strength * y + rng.random((50, 2)) * (1 - strength), 0, 1)
            for col in ("NIH", "CheXpert"):
                rows.append(make_row(exp, seed, col, y, s, CLASSES, n=50))
    return pd.DataFrame(rows)


@pytest.fixture
def mean_score_metric() -> Iterator[str]:
    """A metric defined in a test: the mean predicted probability (lower is 'better' here, to see the direction)."""

    @register_metric("mean_score_test", higher_is_better=False)
    def mean_score(y_true: Any, y_score: Any) -> float:
        """Mean predicted probability over images and classes."""
        return float(np.mean(y_score))

    yield "mean_score_test"
    METRICS._entries.pop("mean_score_test", None)


def _csv(out, name: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_csv(out / f"{name}.csv")


def _expected(manifest: pd.DataFrame, fn: Any, exp: str, col: str) -> float:
    rows = manifest[(manifest["experiment"] == exp) & (manifest["column"] == col)]
    vals = []
    for f in rows["predictions"]:
        df = pd.read_parquet(f)
        t, s = df[[f"label:{c}" for c in CLASSES]].to_numpy(float), df[[f"prob:{c}" for c in CLASSES]].to_numpy(float)
        vals.append(float(np.nanmean(np.atleast_1d(fn(t, s)))))
    return float(np.mean(vals))


def test_a_metric_defined_in_a_test_is_tabulated_by_name(manifest: pd.DataFrame, mean_score_metric: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    paths = build_reports(manifest, out, title="t", metric_tables=[mean_score_metric], make_figures=False, n_boot=50)
    assert out / f"table_metric_{mean_score_metric}.md" in paths
    md = (out / f"table_metric_{mean_score_metric}.md").read_text()
    assert "Mean predicted probability over images and classes" in md and "lower is better" in md
    for exp in ("1.1", "3.4"):
        for col in ("NIH", "CheXpert"):
            want = _expected(manifest, lambda t, s: np.mean(s), exp, col)
            assert f"{want:.4f}" in md, (exp, col, want)
    # lower is better: the weaker experiment (scores nearer 0.5 -> here lower mean) is bold, not always 3.4
    means = {e: _expected(manifest, lambda t, s: np.mean(s), e, "NIH") for e in ("1.1", "3.4")}
    best = min(means, key=means.get)
    assert any(line.startswith(f"| {best} |") and "**" in line for line in md.splitlines())


def test_a_per_class_metric_is_shown_as_its_class_mean(manifest: pd.DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    build_reports(manifest, out, title="t", metric_tables=["ece_per_label"], make_figures=False, n_boot=50)
    md = (out / "table_metric_ece_per_label.md").read_text()
    for exp in ("1.1", "3.4"):
        assert f"{_expected(manifest, ece_per_label, exp, 'CheXpert'):.4f}" in md


def test_a_metric_that_is_not_a_number_per_run_is_refused_by_name(make_row, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    y = np.eye(2)[rng.integers(0, 2, 40)]  # one-hot: a two-class multi-class task
    m = pd.DataFrame([make_row("a", seed, "OCT", y, rng.dirichlet([1, 1], 40), CLASSES, task="multiclass") for seed in (0, 1)])
    with pytest.raises(DataError, match=r"metric 'confusion_matrix' gives an array of shape \(2, 2\) per run"):
        build_reports(m, tmp_path / "out", title="t", metric_tables=["confusion_matrix"], make_figures=False, n_boot=50)


def test_a_metric_that_fails_on_a_run_names_the_metric_and_the_file(manifest: pd.DataFrame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # top-1 accuracy needs one-hot truth; multilabel rows have none: the message says which metric and file
    with pytest.raises(DataError, match=r"metric 'top1_accuracy' on .*1\.1_0_NIH\.parquet: .*one-hot"):
        build_reports(manifest, tmp_path / "out", title="t", metric_tables=["top1_accuracy"], make_figures=False, n_boot=50)
