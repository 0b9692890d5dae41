"""Table model: Table-2 shape, bold best, n/Location rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.aggregate import run_metrics, summarise
from reports.tables import Cell, Row, Table, cell_text, mark_best, metric_table

Y = np.array([[0], [0], [1], [1]], dtype=float)


def test_table2_shape_order_and_bold(make_row) -> None:
    good, mid, bad = [0.1, 0.2, 0.8, 0.9], [0.1, 0.4, 0.35, 0.8], [0.9, 0.8, 0.2, 0.1]
    rows = []
    for seed in (0, 1):
        rows.append(make_row("3.4", seed, "NIH", Y, good if seed else mid, ["c"], n=25596, location="Bethesda (USA)"))
        rows.append(make_row("1.1", seed, "NIH", Y, mid, ["c"], n=25596, location="Bethesda (USA)"))
        rows.append(make_row("3.4", seed, "VinDr", Y, bad, ["c"], n=3000, location="Hanoi (Vietnam)"))
        rows.append(make_row("1.1", seed, "VinDr", Y, mid, ["c"], n=3000, location="Hanoi (Vietnam)"))
    m = pd.DataFrame(rows)
    t = metric_table(summarise(run_metrics(m)), m, name="t2", caption="c")
    assert [r.label for r in t.rows] == ["3.4", "1.1"]  # manifest order, not sorted
    assert t.columns == ["NIH", "VinDr"]
    assert t.meta_rows == [("n:", ["25,596", "3,000"]), ("Location:", ["Bethesda (USA)", "Hanoi (Vietnam)"])]
    nih34, vin34 = t.rows[0].cells
    nih11, vin11 = t.rows[1].cells
    assert nih34.mean == 0.875 and nih34.bold and not nih11.bold
    assert vin11.bold and not vin34.bold and vin34.mean == 0.0
    assert cell_text(nih11, 4) == "0.7500 (0.0000)"
    assert {s.seed for s in nih34.sources} == {0, 1}


def test_bold_ties_use_displayed_digits_and_lower_is_better() -> None:
    t = Table(
        "x", "c", "Exp.", ["a"],
        [Row("r1", [Cell(0.81234)]), Row("r2", [Cell(0.81231)]), Row("r3", [Cell(0.8)]), Row("r4", [Cell(text="-")])],
    )
    mark_best(t)
    assert [r.cells[0].bold for r in t.rows] == [True, True, False, False]
    mark_best(t, higher_is_better=False)
    assert [r.cells[0].bold for r in t.rows] == [False, False, True, False]


def test_missing_cell_prints_dash() -> None:
    assert cell_text(Cell(), 4) == "-"
    assert cell_text(Cell(0.5), 2) == "0.50"


def test_per_class_and_size_tables(make_row) -> None:
    from reports.aggregate import summarise_per_class
    from reports.tables import per_class_table, size_table

    y2 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    rows = [
        make_row("dino50", 0, "NIH", y2, [[0.1, 0.1], [0.4, 0.9], [0.35, 0.2], [0.8, 0.8]], ["x", "y"], pretrain_size=50000, series="Dino"),
        make_row("dino50", 1, "NIH", y2, [[0.1, 0.1], [0.2, 0.9], [0.3, 0.2], [0.4, 0.8]], ["x", "y"], pretrain_size=50000, series="Dino"),
        make_row("gmml100", 0, "NIH", y2, [[0.5, 0.9], [0.6, 0.1], [0.4, 0.8], [0.7, 0.2]], ["x", "y"], pretrain_size=100000, series="GMML"),
    ]
    runs = run_metrics(pd.DataFrame(rows))
    t3 = per_class_table(summarise_per_class(runs, "NIH"), "NIH", name="t3")
    assert t3.columns == ["x", "y"]
    # dino50 class x: seeds 0.75 and 1.0 -> mean 0.875, sd = 0.25 / sqrt(2)
    assert t3.rows[0].cells[0].mean == pytest.approx(0.875) and t3.rows[0].cells[0].sd == pytest.approx(0.25 / np.sqrt(2))
    assert t3.rows[0].cells[0].bold and t3.rows[0].cells[1].bold and not t3.rows[1].cells[1].bold
    t6 = size_table(runs, "NIH", name="t6")
    assert t6.columns == ["50,000", "100,000"] and [r.label for r in t6.rows] == ["Dino", "GMML"]
    assert t6.rows[0].cells[0].mean == pytest.approx((0.875 + 1.0) / 2)
    assert np.isnan(t6.rows[0].cells[1].mean) and cell_text(t6.rows[0].cells[1], 4) == "-"
    # gmml100: class x positives .4 .7 vs negatives .5 .6 -> 2/4; class y positives .1 .2 vs .9 .8 -> 0
    assert t6.rows[1].cells[1].mean == pytest.approx(0.25) and np.isnan(t6.rows[1].cells[1].sd)


def test_ci_cell_text() -> None:
    assert cell_text(Cell(0.8, low=0.75, high=0.85), 2) == "0.80 [0.75, 0.85]"
