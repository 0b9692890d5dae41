"""Tables of the registered metrics a matrix names: `reports: {metric_tables: [ece, f1_micro]}`.

Each name is looked up in the metric registry (`reports.metrics.METRICS`; `bench plan`
rejects a name it does not know, listing the registered ones), applied to every run's
predictions, and written as a Table-2-shaped table `table_metric_<name>`: rows =
experiments, columns = report columns, cells = mean (sample sd) over seeds, the best per
column in bold in the metric's own direction (`register_metric(..., higher_is_better=)`).

A metric that gives one number per run is shown as is; one that gives one value per class
(`ece_per_label`) is shown as its mean over the classes where it is defined, as Table 2
shows the class-mean AUC. Anything else (a confusion matrix) cannot be a table cell and is
refused with the metric's name.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from bench.data.errors import DataError
from reports.aggregate import summarise
from reports.metrics import METRICS
from reports.predictions import Predictions
from reports.tables import Table, metric_table

Loader = Callable[[str, Sequence[str]], Predictions]


def as_cell_value(name: str, value: Any, n_classes: int) -> float:
    """One number per run: a scalar as is, a per-class vector as its mean over defined classes."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return float(v)
    if v.ndim == 1 and v.size == n_classes:
        return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")
    raise DataError(
        f"reports.metric_tables: metric {name!r} gives an array of shape {v.shape} per run, "
        f"not a number or one value per class ({n_classes}); it cannot be a table cell"
    )


def metric_tables(runs: pd.DataFrame, manifest: pd.DataFrame, names: Sequence[str], load: Loader) -> list[Table]:
    """One table per metric name, over the runs of `reports.aggregate.run_metrics` (any task)."""
    tables = []
    for name in names:
        fn = METRICS.get(name)  # an unknown name raises UnknownNameError listing the registered metrics
        values = []
        for row in runs.itertuples(index=False):
            pred = load(row.predictions, row.classes)
            try:
                values.append(as_cell_value(name, fn(pred.y_true, pred.y_score), pred.y_true.shape[1]))
            except ValueError as exc:
                raise DataError(f"reports.metric_tables: metric {name!r} on {row.predictions}: {exc}") from exc
        scored = runs.assign(**{f"metric:{name}": values})
        higher = bool(getattr(fn, "higher_is_better", True))
        what = METRICS.info(name).description.rstrip(".")
        tables.append(
            metric_table(
                summarise(scored, f"metric:{name}"),
                manifest,
                name=f"table_metric_{name}",
                caption=(
                    f"Metric {name} ({what}) per report column: mean over seeds, in brackets the sample standard "
                    f"deviation (ddof=1) over seeds. In bold, best per column ({'higher' if higher else 'lower'} is better)."
                ),
                higher_is_better=higher,
            )
        )
    return tables
