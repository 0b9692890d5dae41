"""Per report column: image-level CIs for every experiment and tests against the best one.

For one column, every experiment is scored on the same images, so the comparison
"is experiment e worse than the column's best?" is paired. Two methods, chosen per
column by its image count:

* `bootstrap` (n_images <= `max_bootstrap_images`): stratified image-level paired
  bootstrap (`reports.statistics.bootstrap_replicates`), percentile CIs, B replicates;
* `influence` (larger columns): normal approximation from per-image influence
  (DeLong placement) values. An exact bootstrap costs at least B x N per class and
  run (measured: about 2.5 s per class and run at N = 25,596, B = 2,000, one core),
  which a Table-1-sized report (70 runs x 34 class columns) cannot afford; at such N
  the normal approximation is accurate (`tests/reports/test_statistics.py` checks
  it against the bootstrap).

The statistic is the seed-averaged class-mean AUC (the table's mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from bench.data.errors import DataError
from reports.manifest import ordered
from reports.predictions import Predictions
from reports.statistics import (
    Difference,
    bootstrap_replicates,
    difference,
    interval,
)

Loader = Callable[[str, tuple[str, ...]], Predictions]


@dataclass(frozen=True)
class ColumnStats:
    """CIs per experiment and the test of each experiment against the column's best."""

    column: str
    method: str  # "bootstrap" or "influence"
    best: object
    ci: dict[object, tuple[float, float, float]]  # experiment -> (estimate, low, high)
    vs_best: dict[object, Difference]  # experiment -> best - experiment (absent for best)
    n_boot: int
    level: float


def _stack(rows: pd.DataFrame, loader: Loader) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N, C) and scores (S, N, C) of one experiment's seeds, images aligned."""
    preds = [loader(r.predictions, r.classes) for r in rows.itertuples(index=False)]
    first = preds[0]
    for p in preds[1:]:
        if not np.array_equal(p.image_ids, first.image_ids) or not np.array_equal(
            p.y_true, first.y_true, equal_nan=True
        ):
            raise DataError(f"{p.path}: images or labels differ from {first.path} on the same report column")
    return first.y_true, np.stack([p.y_score for p in preds])


def column_stats(
    runs: pd.DataFrame,
    column: str,
    loader: Loader,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    max_bootstrap_images: int = 1000,
) -> ColumnStats:
    """CIs and tests against the best experiment for one multilabel report column.

    `runs` is `reports.aggregate.run_metrics` output (any columns; this one is selected).
    """
    g = runs[runs["column"] == column]
    exps = ordered(g["experiment"])
    means = {e: float(g.loc[g["experiment"] == e, "mean_auc"].mean()) for e in exps}
    best = max(exps, key=lambda e: (np.nan_to_num(means[e], nan=-np.inf), -exps.index(e)))
    n_images = int(g["n_images"].max())
    method = "bootstrap" if n_images <= max_bootstrap_images else "influence"
    ci: dict[object, tuple[float, float, float]] = {}
    vs: dict[object, Difference] = {}
    if method == "bootstrap":
        stacks = {}
        y = None
        for e in exps:
            y_e, s_e = _stack(g[g["experiment"] == e], loader)
            if y is not None and not np.array_equal(y, y_e, equal_nan=True):
                raise DataError(f"report column {column!r}: experiment {e!r} was evaluated on other labels")
            y, stacks[e] = y_e, s_e
        reps = bootstrap_replicates(y, stacks, n_boot=n_boot, seed=seed)
        for e in exps:
            iv = interval(means[e], reps[e], level)
            ci[e] = (iv.estimate, iv.low, iv.high)
            if e != best:
                vs[e] = difference(means[best] - means[e], reps[best], reps[e], level)
    else:
        if g["labels_key"].nunique() != 1:
            raise DataError(f"report column {column!r}: runs were evaluated on different images or labels")
        zq = float(norm.ppf(0.5 + level / 2.0))
        psi = {}
        for e in exps:
            # seed-averaged statistic -> seed-averaged influence (from `run_metrics`)
            psi[e] = np.mean(np.stack(g.loc[g["experiment"] == e, "influence"].tolist()), axis=0)
            se = float(np.sqrt(np.sum(psi[e] ** 2)))
            ci[e] = (means[e], means[e] - zq * se, means[e] + zq * se)
        for e in exps:
            if e == best:
                continue
            d = means[best] - means[e]
            se = float(np.sqrt(np.sum((psi[best] - psi[e]) ** 2)))
            p = float(2 * norm.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else 0.0)
            vs[e] = Difference(d, d - zq * se, d + zq * se, se, p, "influence (DeLong-type) z-test")
    return ColumnStats(column, method, best, ci, vs, n_boot, level)
