"""Figures are written as real PDF and PNG files, deterministically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import figures, reliability
from reports.aggregate import run_metrics, summarise_per_class
from reports.predictions import PredictionCache
from reports.tables import size_table


@pytest.mark.slow
def test_figure2_and_3_files(make_row, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    rows = []
    for i, e in enumerate(("a", "b")):
        for seed in (0, 1):
            s = np.clip((0.2 + 0.2 * i) * y + 0.6 * rng.random((60, 2)), 0, 1)
            rows.append(make_row(e, seed, "val", y, s, ["c1", "c2"], pretrain_size=[50000, 100000][i], series="S"))
    runs = run_metrics(pd.DataFrame(rows))
    rel = reliability.analyse(runs, "val", PredictionCache().get, thresholds=(0.1, 0.5), fractions=(0, 0.1), compat=True)
    out = tmp_path / "figs"
    paths = figures.figure2(summarise_per_class(runs, "val"), rel, out)
    paths += figures.figure3(size_table(runs, "val", name="t6"), out)
    assert [p.name for p in paths] == [
        "figure2_reliability.pdf", "figure2_reliability.png", "figure3_pretrain_size.pdf", "figure3_pretrain_size.png",
    ]
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"%PDF") if p.suffix == ".pdf" else head == b"\x89PNG\r\n\x1a\n"
    first = [p.read_bytes() for p in paths]
    again = figures.figure2(summarise_per_class(runs, "val"), rel, out)
    assert [p.read_bytes() for p in again] == first[:2]


@pytest.mark.slow
def test_figure2_legend_names_experiments_and_line_styles(make_row, tmp_path, monkeypatch) -> None:
    """The legend reads without the YAML: labels, not ids; the dashed compat lines have a key."""
    rng = np.random.default_rng(1)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    rows = [
        make_row(e, s, "val", y, np.clip(0.3 * y + 0.7 * rng.random((60, 2)), 0, 1), ["c1", "c2"])
        for e in ("3.2", "3.4") for s in (0, 1)
    ]
    runs = run_metrics(pd.DataFrame(rows))
    rel = reliability.analyse(runs, "val", PredictionCache().get, thresholds=(0.1, 0.5), fractions=(0, 0.1), compat=True)
    seen = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, stem: seen.append(fig) or [])
    labels = {"3.2": "3.2: ViT-S, SimMIM, IN-1k, ChestX-ray14", "3.4": "3.4: ViT-S, GMML, IN-1k, MIMIC-CXR"}
    figures.figure2(summarise_per_class(runs, "val"), rel, tmp_path, labels=labels)
    fig = seen[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(labels.values())
    styles = fig.axes[3].get_legend()
    assert [t.get_text() for t in styles.get_texts()] == ["standard referral", "Krones-compatible (cumulative)"]
