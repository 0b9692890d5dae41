"""Reports: metrics, statistics, tables and figures of the papers, from stored predictions only.

Consumes the report manifest built by `bench` (docs/DESIGN.md) and the predictions
parquet files it points to; never imports torch, the plan or the store.
Entry point: `build_reports(manifest, out_dir, title=...)` (see `reports.build`).
`degenerate_cells(manifest)` lists the cells at chance or without seed spread, with
their stage keys, for `bench run` to warn about (see `reports.degenerate`).
Metrics: `reports.metrics.get(name)` / `reports.metrics.list_metrics()`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_reports", "degenerate_cells"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import reports.metrics` (e.g. `bench list metrics`) does not pull in matplotlib.
    if name == "build_reports":
        from reports.build import build_reports

        return build_reports
    if name == "degenerate_cells":
        from reports.degenerate import degenerate_cells

        return degenerate_cells
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
