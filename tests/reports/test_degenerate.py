"""Degenerate cells: at chance within noise, or sd exactly 0 over different seeds."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from reports import build_reports
from reports.degenerate import chance_se, degenerate_cells


def _multiclass(make_row, probs_by_seed, seeds=(0, 1)) -> list[dict]:
    rng = np.random.default_rng(3)
    y = np.eye(4)[rng.integers(0, 4, 200)]
    return [
        make_row("P.1", s, "OCT", y, probs_by_seed(y, s), ["a", "b", "c", "d"], task="multiclass", finetune_key=f"ft-{s}")
        for s in seeds
    ]


def test_constant_probe_is_at_chance_with_zero_sd(make_row) -> None:
    rows = _multiclass(make_row, lambda y, s: np.tile([0.4, 0.2, 0.2, 0.2], (len(y), 1)))
    cells = degenerate_cells(pd.DataFrame(rows))
    assert {(c.experiment, c.column, c.kind) for c in cells} == {("P.1", "OCT", "chance"), ("P.1", "OCT", "zero_sd")}
    chance = [c for c in cells if c.kind == "chance"][0]
    assert chance.value == 0.25 and chance.chance == 0.25 and chance.metric == "balanced_top1"
    assert chance.stage_keys == ("evaluate-P.1-0-OCT", "evaluate-P.1-1-OCT") and chance.finetune_keys == ("ft-0", "ft-1")
    assert "within 2 SE" in chance.reason


def test_a_probe_that_learns_is_not_flagged(make_row) -> None:
    rng = np.random.default_rng(0)
    rows = _multiclass(make_row, lambda y, s: y * 0.5 + rng.random(y.shape) * 0.5)
    assert degenerate_cells(pd.DataFrame(rows)) == []


def test_single_seed_has_no_zero_sd_flag(make_row) -> None:
    rows = _multiclass(make_row, lambda y, s: np.tile([0.4, 0.2, 0.2, 0.2], (len(y), 1)), seeds=(0,))
    assert [c.kind for c in degenerate_cells(pd.DataFrame(rows))] == ["chance"]  # one seed: no spread to judge


def test_auc_chance_rule_uses_label_counts(make_row) -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    random_rows = [make_row("rand", s, "NIH", y, rng.random(y.shape), ["a", "b", "c"]) for s in (0, 1)]
    good_rows = [make_row("good", s, "NIH", y, 0.3 * y + 0.7 * rng.random(y.shape), ["a", "b", "c"]) for s in (0, 1)]
    cells = degenerate_cells(pd.DataFrame(random_rows + good_rows))
    assert [(c.experiment, c.kind) for c in cells] == [("rand", "chance")]
    # SE of a random scorer's class-mean AUC: sqrt(sum (n1+n0+1)/(12 n1 n0)) / C
    n1 = y.sum(0)
    n0 = 400 - n1
    assert chance_se("multilabel", n1, n0)[1] == pytest.approx(np.sqrt(((n1 + n0 + 1) / (12 * n1 * n0)).sum()) / 3)
    assert chance_se("multiclass", np.array([50, 50, 50, 50]), np.array([150] * 4)) == pytest.approx(
        (0.25, np.sqrt(4 * 0.25 * 0.75 / 50) / 4)
    )


def test_build_marks_flagged_cells_everywhere(make_row, tmp_path) -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((150, 2)) < 0.4).astype(float)
    same = 0.2 * y + 0.8 * rng.random(y.shape)
    rows = [make_row("3.5", s, "CheXpert vali", y, same, ["a", "b"]) for s in (0, 1)]
    rows += [make_row("3.4", s, "CheXpert vali", y, 0.2 * y + 0.8 * rng.random(y.shape), ["a", "b"]) for s in (0, 1)]
    out = tmp_path / "r"
    build_reports(pd.DataFrame(rows), out, title="t", n_boot=50, make_figures=False)
    md = (out / "table2_multisite.md").read_text()
    line_35 = [l for l in md.splitlines() if l.startswith("| 3.5 |")][0]
    line_34 = [l for l in md.splitlines() if l.startswith("| 3.4 |")][0]
    assert "‡" in line_35 and "‡" not in line_34 and "degenerate" in md
    tex = (out / "table2_multisite.tex").read_text()
    assert r"\ddagger" in tex and r"\textdaggerdbl{} degenerate" in tex
    flags = {(r["row"], r["degenerate"]) for r in csv.DictReader(io.StringIO((out / "table2_multisite.csv").read_text()))}
    assert ("3.4", "") in flags and any(r == "3.5" and "sd 0" in f for r, f in flags)
    assert "evaluate-3.5-0-CheXpert vali" in (out / "index.md").read_text().split("## Tables")[0]
    assert (out / "degenerate_cells.csv").read_text().count("\n") == 2
