"""The poster's tables (Bühler & Hager): downstream balanced top-1 and tokens/compute.

* Downstream: rows = tasks (multiclass report columns), a "Supervised labels"
  column (manifest key `n_train`), then one column per experiment (initialisation),
  cells balanced top-1 accuracy mean (sd) over seeds.
* Tokens/compute: built from a DataFrame produced by the batching benchmark, one
  row per strategy, the first row being the reference (100%). Required columns:
  `strategy`, `tokens_processed` (total tokens fed to the model, padding included);
  optional `flops` (total forward FLOPs). Compute is the FLOP ratio; it is **not**
  the squared token ratio the poster prints (attention cost is per sequence and the
  linear layers dominate; docs/DATA_AND_METRICS.md §9).
"""

from __future__ import annotations

import math

import pandas as pd

from bench.data.errors import DataError
from reports.manifest import column_meta, is_number, ordered
from reports.tables import Cell, Row, Source, Table


def downstream_table(summary: pd.DataFrame, manifest: pd.DataFrame, *, name: str = "table_downstream") -> Table:
    """Tasks as rows, experiments as columns; `summary` from `summarise(runs, "balanced_top1")`."""
    exps = [e for e in ordered(manifest["experiment"]) if e in set(summary["experiment"])]
    rows = []
    for col in ordered(summary["column"]):
        n_train = column_meta(manifest, col, "n_train")
        cells = [Cell(text=f"{int(n_train):,}" if is_number(n_train) else "-")]
        for e in exps:
            hit = summary[(summary["experiment"] == e) & (summary["column"] == col)]
            if hit.empty:
                cells.append(Cell())
                continue
            h = hit.iloc[0]
            srcs = tuple(Source(s, str(r), str(k)) for s, r, k in zip(h["seeds"], h["run_ids"], h["stage_keys"]))
            cells.append(Cell(float(h["mean"]), float(h["sd"]), sources=srcs))
        rows.append(Row(str(col), cells))
    caption = "Downstream performance: balanced top-1 accuracy, mean over seeds (sample sd over seeds)."
    return Table(name, caption, "Task", ["Supervised labels", *map(str, exps)], rows)


def token_table(frame: pd.DataFrame, *, name: str = "table_tokens_compute") -> Table:
    """Tokens and compute per batching strategy relative to the first row (= 100%)."""
    missing = [c for c in ("strategy", "tokens_processed") if c not in frame.columns]
    if missing:
        raise DataError(f"token table input lacks columns {missing}; has {list(frame.columns)}")
    if frame.empty:
        raise DataError("token table input has no rows")
    base_tokens = float(frame["tokens_processed"].iloc[0])
    has_flops = "flops" in frame.columns
    base_flops = float(frame["flops"].iloc[0]) if has_flops else math.nan
    rows = []
    for r in frame.itertuples(index=False):
        tokens = float(r.tokens_processed)
        cells = [Cell(text=f"{tokens:.2e}"), Cell(100.0 * tokens / base_tokens)]
        if has_flops:
            cells.append(Cell(100.0 * float(r.flops) / base_flops))
        rows.append(Row(str(r.strategy), cells))
    cols = ["Total input tokens", "Processed tokens (%)"] + (["Total compute (%, FLOPs)"] if has_flops else [])
    t = Table(
        name,
        f"Tokens and compute per batching strategy relative to {frame['strategy'].iloc[0]} (100%).",
        "Strategy",
        cols,
        rows,
        digits=0,
    )
    t.notes.append("Compute is the ratio of forward FLOPs, not the squared token ratio.")
    return t
