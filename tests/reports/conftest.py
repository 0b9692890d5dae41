"""Fixtures: real prediction parquet files and manifests built from small arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pytest


def write_predictions(
    path: Path, y_true: np.ndarray, y_score: np.ndarray, classes: Sequence[str], site: str = "s", split: str = "test"
) -> Path:
    """Write a predictions parquet in the DESIGN.md format."""
    y_true = np.asarray(y_true, dtype=float).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, dtype=float).reshape(len(y_score), -1)
    n = y_true.shape[0]
    df = pd.DataFrame(
        {
            "image_id": [f"img{i:06d}" for i in range(n)],
            "patient_id": [f"p{i // 2:06d}" for i in range(n)],
            "site": site,
            "split": split,
        }
    )
    for j, c in enumerate(classes):
        df[f"label:{c}"] = y_true[:, j]
        df[f"prob:{c}"] = y_score[:, j]
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


@pytest.fixture
def make_row(tmp_path: Path) -> Callable[..., dict]:
    """Returns `make_row(experiment, seed, column, y_true, y_score, classes, **extra) -> manifest row`."""

    def _make(experiment, seed, column, y_true, y_score, classes, **extra) -> dict:
        f = tmp_path / "preds" / f"{experiment}_{seed}_{column}.parquet".replace(" ", "_")
        write_predictions(f, y_true, y_score, classes, site=str(column))
        row = {
            "experiment": experiment,
            "seed": seed,
            "column": column,
            "site": str(column),
            "split": "test",
            "classes": list(classes),
            "predictions": str(f),
            "stage_key": f"evaluate-{experiment}-{seed}-{column}",
            "run_id": f"run{experiment}{seed}{column}".replace(" ", "").replace(".", ""),
        }
        row.update(extra)
        return row

    return _make


def strip_escaped(s: str) -> str:
    for esc in (r"\{", r"\}", r"\&", r"\%", r"\_", r"\$", r"\#"):
        s = s.replace(esc, "")
    return s


def check_latex_structure(tex: str, n_columns: int | None = None) -> None:
    """Structural checks of one `to_latex` output (used here and on every built table).

    One or more `table` / `sidewaystable` floats, ASCII only, balanced braces, booktabs
    rules in order, and every body line with one `&` less than the tabular has columns
    (`n_columns` = that count of `&` when given).
    """
    lines = tex.splitlines()
    begins = (r"\begin{table}[htbp]", r"\begin{sidewaystable}")
    ends = (r"\end{table}", r"\end{sidewaystable}")
    assert lines[0] in begins and lines[-1] in ends
    assert tex.isascii(), [ch for ch in tex if not ch.isascii()][:5]
    body = strip_escaped(tex)
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    floats: list[list[str]] = []
    for line in lines:
        if line in begins:
            floats.append([])
        floats[-1].append(line)
    for fl in floats:
        assert fl[-1] in ends
        spec = [l for l in fl if l.startswith(r"\begin{tabular}{")]
        assert len(spec) == 1, spec
        amps = sum(spec[0][len(r"\begin{tabular}{") : -1].count(ch) for ch in "lrc") - 1
        if n_columns is not None:
            assert amps == n_columns, (amps, n_columns)
        assert fl.index(r"\toprule") < fl.index(r"\midrule") < fl.index(r"\bottomrule")
        top, bottom = fl.index(r"\toprule"), fl.index(r"\bottomrule")
        for line in fl[top + 1 : bottom]:
            if line.startswith((r"\midrule", r"\cmidrule", r"\addlinespace")) or r"\multicolumn" in line:
                continue
            assert strip_escaped(line).count("&") == amps, line
            assert line.endswith(r"\\")


@pytest.fixture
def check_latex() -> Callable[..., None]:
    """Returns `check_latex(tex, n_columns=None)`: structural checks of a `to_latex` output."""
    return check_latex_structure
