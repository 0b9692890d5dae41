"""Metric registry and the ranking metrics (ROC AUC) every report is built on.

Metrics are plain functions with scikit-learn's argument order `(y_true, y_score,
**options)` and no torch anywhere, so reports run on any machine that has the
prediction files.

Array conventions shared by every metric module in `reports/`:

* `y_true`: float array, shape (N, C) (or (N,) for one class), columns in the
  order of the row's `classes`; 1.0 positive, 0.0 negative, NaN unknown. Unknown
  entries are dropped *per class*, never per image.
* `y_score`: float array, same shape, the model's probability for each class.

Any module of `reports/` registers metrics with `@register_metric("name")`; the registry
finds them in the sources (`bench.registry.PluginRegistry`, no list to keep), so
`bench list metrics` imports none of them, and `get(name)` imports a metric's module on
first use. A matrix names metrics to tabulate in `reports: {metric_tables: [...]}`
(checked against this registry by `bench plan`; built by `reports.metric_tables`), so a new
metric is one decorated function plus its test.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.registry import PluginRegistry

MetricFn = Callable[..., Any]

METRICS: PluginRegistry[MetricFn] = PluginRegistry("metric", "reports", "register_metric")


def register_metric(name: str, *, higher_is_better: bool = True) -> Callable[[MetricFn], MetricFn]:
    """Decorator: record a metric function under `name` (see `bench list metrics`).

    `higher_is_better` is the direction a metric table (`reports.metric_tables`) marks as
    best (False for errors: calibration error, false-negative rate).
    """
    record = METRICS.register(name)

    def deco(fn: MetricFn) -> MetricFn:
        fn.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        return record(fn)

    return deco


def get(name: str) -> MetricFn:
    """Look a metric up by name; unknown names raise a KeyError listing all metrics."""
    return METRICS.get(name)


def list_metrics() -> list[str]:
    return METRICS.names()


def as_label_matrix(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and coerce a (labels, scores) pair to float64 arrays of shape (N, C).

    1-D inputs become one column. Labels must be 0, 1 or NaN; scores must be finite.
    """
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"y_true {t.shape} and y_score {s.shape} must both be (N, C) with equal shapes")
    known = ~np.isnan(t)
    if not np.all((t[known] == 0.0) | (t[known] == 1.0)):
        bad = np.unique(t[known][(t[known] != 0.0) & (t[known] != 1.0)])[:5]
        raise ValueError(f"y_true must hold 0, 1 or NaN; found {bad.tolist()}")
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score holds NaN or infinite values")
    return t, s


@register_metric("auc_per_class")
def auc_per_class(y_true: Any, y_score: Any) -> np.ndarray:
    """ROC AUC per class, shape (C,), via `sklearn.metrics.roc_auc_score`.

    Rows whose truth is NaN are dropped for that class only. A class whose known
    labels are all one value has no defined AUC and gets NaN (the Krones code writes
    0 there and then skips it; NaN says the same thing without a magic number).
    """
    from sklearn.metrics import roc_auc_score  # here, so `bench list metrics` does not load scikit-learn

    t, s = as_label_matrix(y_true, y_score)
    out = np.full(t.shape[1], np.nan)
    for c in range(t.shape[1]):
        keep = ~np.isnan(t[:, c])
        yc = t[keep, c]
        if yc.size == 0 or yc.min() == yc.max():
            continue
        out[c] = roc_auc_score(yc, s[keep, c])
    return out


@register_metric("mean_auc")
def mean_auc(y_true: Any, y_score: Any) -> float:
    """Mean of `auc_per_class` over the classes where both labels occur; NaN if none."""
    per = auc_per_class(y_true, y_score)
    return float(np.nanmean(per)) if np.any(~np.isnan(per)) else float("nan")
