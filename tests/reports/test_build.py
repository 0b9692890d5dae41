"""build_reports end to end on real parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.sites import DataError
from reports import build_reports


def _manifest(make_row, rng, n=60) -> pd.DataFrame:
    classes = ["Atelectasis", "Edema"]
    y = (rng.random((n, 2)) < 0.4).astype(float)
    rows = []
    for exp, strength in (("1.1", 0.2), ("3.4", 0.6)):
        for seed in (0, 1, 2):
            s = np.clip(strength * y + rng.random((n, 2)) * (1 - strength), 0, 1)
            for col, loc in (("NIH 5 class avg.", "Bethesda (USA)"), ("CheXpert vali", "Stanford (USA)")):
                rows.append(make_row(exp, seed, col, y, s, classes, n=n, location=loc))
    return pd.DataFrame(rows)


def test_build_writes_table2_and_index(make_row, tmp_path) -> None:
    m = _manifest(make_row, np.random.default_rng(1))
    out = tmp_path / "out"
    paths = build_reports(m, out, title="Smoke")
    names = {p.name for p in paths}
    assert {"table2_multisite.tex", "table2_multisite.md", "table2_multisite.csv", "index.md"} <= names
    assert all(p.is_file() for p in paths)
    index = (out / "index.md").read_text()
    assert index.startswith("# Smoke")
    for rid in m["run_id"]:
        assert rid in index
    md = (out / "table2_multisite.md").read_text()
    assert "| 3.4 | **" in md  # the strong experiment is best in both columns
    again = build_reports(m, out, title="Smoke")
    assert [p.name for p in again] == [p.name for p in paths]
    assert (out / "table2_multisite.md").read_text() == md


def test_build_rejects_bad_manifest(tmp_path) -> None:
    with pytest.raises(DataError, match="lacks keys"):
        build_reports(pd.DataFrame({"experiment": ["a"]}), tmp_path, title="x")
