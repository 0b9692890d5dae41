"""Poster tables: downstream balanced accuracy and tokens/compute."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports.aggregate import run_metrics, summarise
from reports.poster_tables import downstream_table, token_table


def test_downstream_layout(make_row) -> None:
    onehot = np.eye(2)[[0, 0, 0, 1]]
    zero = np.tile([0.9, 0.1], (4, 1))
    rows = [
        make_row("IN21k", 0, "ARC", onehot, zero, ["a", "b"], task="multiclass", n_train=1000),
        make_row("MAE", 0, "ARC", onehot, onehot * 0.8 + 0.1, ["a", "b"], task="multiclass", n_train=1000),
        make_row("MAE", 0, "FRAC", onehot, zero, ["a", "b"], task="multiclass", n_train=652),
    ]
    m = pd.DataFrame(rows)
    t = downstream_table(summarise(run_metrics(m), "balanced_top1"), m)
    assert t.columns == ["Supervised labels", "IN21k", "MAE"]
    assert [r.label for r in t.rows] == ["ARC", "FRAC"]
    arc, frac = t.rows
    assert arc.cells[0].text == "1,000" and arc.cells[1].mean == 0.5 and arc.cells[2].mean == 1.0
    assert frac.cells[0].text == "652" and np.isnan(frac.cells[1].mean)


def test_token_table_relative_to_first_row() -> None:
    frame = pd.DataFrame(
        {"strategy": ["pad", "fixed", "dbb"], "tokens_processed": [9.22e8, 2.62e9, 1.10e9], "flops": [2.0, 8.0, 2.5]}
    )
    t = token_table(frame)
    assert [r.cells[0].text for r in t.rows] == ["9.22e+08", "2.62e+09", "1.10e+09"]
    assert [r.cells[1].mean for r in t.rows] == pytest.approx([100, 100 * 2.62e9 / 9.22e8, 100 * 1.10e9 / 9.22e8])
    assert [r.cells[2].mean for r in t.rows] == pytest.approx([100, 400, 125])
    with pytest.raises(DataError, match="tokens_processed"):
        token_table(frame.drop(columns=["tokens_processed"]))
