"""Reports: metrics, statistics, tables and figures of the papers, from stored predictions only.

Consumes the report manifest built by `bench` (docs/DESIGN.md) and the predictions
parquet files it points to; never imports torch, the plan or the store.
Entry point: `build_reports(manifest, out_dir, title=...)` (see `reports.build`).
Metrics: `reports.metrics.get(name)` / `reports.metrics.list_metrics()`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_reports"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import reports.metrics` (e.g. `bench list metrics`) does not pull in matplotlib.
    if name == "build_reports":
        from reports.build import build_reports

        return build_reports
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
