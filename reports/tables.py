"""Table model (rows of cells with provenance) and the builders of the paper tables.

A `Table` is format-free: `reports.writers` turns it into LaTeX, Markdown and CSV.
Cells carry the numbers (`mean`, `sd`) rather than strings, so "best per column"
is decided on the numbers as displayed (rounded to `digits`) and ties are all bold.
Each cell also carries the (seed, run_id, stage_key) of the runs it came from, which
`index.md` lists so every number can be traced to its MLflow run and stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from reports.manifest import column_meta, is_missing, is_number, ordered


@dataclass(frozen=True)
class Source:
    """One run a cell is computed from."""

    seed: object
    run_id: str
    stage_key: str


@dataclass
class Cell:
    """A table cell: a number with optional sd, or a text.

    `bold` marks the best entry of its column; `tied` marks an entry not
    significantly different from that best (see `reports.statistics`); `flag`
    says why the entry is degenerate (at chance, or no spread over seeds; see
    `reports.degenerate`), printed as a double dagger and explained in a note.
    """

    mean: float = math.nan
    sd: float = math.nan
    text: str | None = None
    bold: bool = False
    tied: bool = False
    sources: tuple[Source, ...] = ()
    low: float = math.nan  # confidence interval, printed as `mean [low, high]` when set
    high: float = math.nan
    flag: str | None = None

    @property
    def numeric(self) -> bool:
        return self.text is None and not math.isnan(self.mean)


@dataclass
class Row:
    label: str
    cells: list[Cell]
    group: str | None = None  # rows sharing a group are printed under one group line


@dataclass
class Table:
    """A paper table. `name` is the file stem (`table2_multisite`).

    `column_groups` are header groups over the columns as (label, span) pairs in
    column order (label "" = no group), e.g. Krones Table 2's
    `[("In-distribution", 2), ("Out-of-distribution", 3)]`. With `group_header`
    set, row groups are printed as a first column under that header (Krones
    Table 7's "No" column) instead of a line of their own.
    """

    name: str
    caption: str
    row_header: str
    columns: list[str]
    rows: list[Row]
    meta_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    digits: int = 4
    notes: list[str] = field(default_factory=list)
    column_groups: list[tuple[str, int]] = field(default_factory=list)
    group_header: str | None = None

    def column_cells(self, j: int) -> list[Cell]:
        return [r.cells[j] for r in self.rows]


def fmt_number(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def cell_text(cell: Cell, digits: int) -> str:
    """Plain text of a cell: `0.7505 (0.0065)`, `0.7505`, the text, or `-` if empty."""
    if cell.text is not None:
        return cell.text
    if math.isnan(cell.mean):
        return "-"
    if not math.isnan(cell.low):
        return f"{fmt_number(cell.mean, digits)} [{fmt_number(cell.low, digits)}, {fmt_number(cell.high, digits)}]"
    if math.isnan(cell.sd):
        return fmt_number(cell.mean, digits)
    return f"{fmt_number(cell.mean, digits)} ({fmt_number(cell.sd, digits)})"


def mark_best(table: Table, *, higher_is_better: bool = True) -> Table:
    """Bold the best numeric cell of every column (all of them on a displayed tie)."""
    for j in range(len(table.columns)):
        cells = [c for c in table.column_cells(j) if c.numeric]
        if not cells:
            continue
        shown = [round(c.mean, table.digits) for c in cells]
        best = max(shown) if higher_is_better else min(shown)
        for c, v in zip(cells, shown):
            c.bold = v == best
    return table


def _fmt_meta(value: object) -> str:
    if value is None:
        return "-"
    if is_number(value) and float(value).is_integer():
        return f"{int(value):,}"
    return str(value)


def metric_table(
    summary: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    name: str,
    caption: str,
    columns: Sequence[str] | None = None,
    descriptors: Sequence[str] = (),
    row_header: str = "Exp.",
    meta: bool = True,
    higher_is_better: bool = True,
) -> Table:
    """Krones Table-2 shape: rows = experiments, columns = report columns.

    `summary` is `reports.aggregate.summarise(...)` output. Cells are `mean (sd)`
    over seeds; with `meta` the `n:` and `Location:` rows come first (n from the
    manifest's `n` when given, else the number of evaluated images). `descriptors`
    are manifest columns (e.g. `meta:Initialisation`) printed as text columns to the
    left of the numbers (Table 5); their header drops the `meta:` prefix.
    """
    cols = list(columns) if columns is not None else ordered(summary["column"])
    exps = [e for e in ordered(manifest["experiment"]) if e in set(summary["experiment"])]
    heads = [d.split(":", 1)[1] if d.startswith("meta:") else d for d in descriptors]
    rows: list[Row] = []
    for exp in exps:
        cells: list[Cell] = []
        m_exp = manifest[manifest["experiment"] == exp]
        for d in descriptors:
            vals = [v for v in m_exp[d].tolist() if not is_missing(v)]
            cells.append(Cell(text=str(vals[0]) if vals else "-"))
        for col in cols:
            hit = summary[(summary["experiment"] == exp) & (summary["column"] == col)]
            if hit.empty:
                cells.append(Cell())
                continue
            h = hit.iloc[0]
            srcs = tuple(Source(s, str(r), str(k)) for s, r, k in zip(h["seeds"], h["run_ids"], h["stage_keys"]))
            cells.append(Cell(mean=float(h["mean"]), sd=float(h["sd"]), sources=srcs))
        rows.append(Row(str(exp), cells))
    meta_rows: list[tuple[str, list[str]]] = []
    if meta:
        n_vals = []
        for col in cols:
            given = column_meta(manifest, col, "n")
            if given is None:
                counted = summary.loc[summary["column"] == col, "n_images"]
                given = int(counted.max()) if not counted.empty else None
            n_vals.append(_fmt_meta(given))
        meta_rows.append(("n:", [""] * len(descriptors) + n_vals))
        if "location" in manifest.columns:
            meta_rows.append(
                ("Location:", [""] * len(descriptors) + [_fmt_meta(column_meta(manifest, c, "location")) for c in cols])
            )
    table = Table(name, caption, row_header, heads + cols, rows, meta_rows)
    return mark_best(table, higher_is_better=higher_is_better)


def per_class_table(per_class: pd.DataFrame, column: str, *, name: str) -> Table:
    """Krones Table 3: rows = experiments, columns = classes, per-class AUC mean (sd) over seeds.

    `per_class` is `reports.aggregate.summarise_per_class(runs, column)`.
    """
    classes = ordered(per_class["class"])
    rows = []
    for exp in ordered(per_class["experiment"]):
        e = per_class[per_class["experiment"] == exp].set_index("class")
        cells = [Cell(float(e.loc[c, "mean"]), float(e.loc[c, "sd"])) if c in e.index else Cell() for c in classes]
        rows.append(Row(str(exp), cells))
    caption = (
        f"Performance across classes on {column}: AUC per class, mean over seeds and in brackets the sample "
        "standard deviation (ddof=1) of that class's AUC over seeds. In bold, best per class."
    )
    return mark_best(Table(name, caption, "Exp.", list(classes), rows))


def size_table(runs: pd.DataFrame, column: str, *, name: str, metric: str = "mean_auc") -> Table:
    """Krones Table 6: rows = series (learning strategy), columns = pre-training size (images).

    Uses manifest keys `pretrain_size` and `series` (rows without `series` use the
    experiment name). Cells: mean (sample sd) over seeds of `metric`; `-` where a
    series lacks that size. Bold: best per size.
    """
    g = runs[(runs["column"] == column) & runs["pretrain_size"].notna()].copy()
    if "series" not in g.columns:
        g["series"] = g["experiment"]
    g["series"] = [e if is_missing(s) else s for s, e in zip(g["series"], g["experiment"])]
    sizes = sorted({int(v) for v in g["pretrain_size"]})
    rows = []
    for series in ordered(g["series"]):
        cells = []
        for size in sizes:
            hit = g[(g["series"] == series) & (g["pretrain_size"].astype(int) == size)]
            if hit.empty:
                cells.append(Cell())
                continue
            vals = hit[metric].to_numpy(dtype=np.float64)
            sd = float(np.std(vals, ddof=1)) if vals.size > 1 else math.nan
            srcs = tuple(Source(s, str(r), str(k)) for s, r, k in zip(hit["seed"], hit["run_id"], hit["stage_key"]))
            cells.append(Cell(float(np.mean(vals)), sd, sources=srcs))
        rows.append(Row(str(series), cells))
    caption = (
        f"Pre-training size: {column} performance of each pre-training series by the number of pre-training "
        "images. Mean AUC over classes and seeds, in brackets the sample standard deviation (ddof=1) over seeds. "
        "In bold, best per size."
    )
    t = Table(name, caption, "Learning strategy", [f"{s:,}" for s in sizes], rows)
    t.column_groups = [("Pre-training size (images)", len(sizes))]
    return mark_best(t)
