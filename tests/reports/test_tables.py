"""Table model: Table-2 shape, bold best, n/Location rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
