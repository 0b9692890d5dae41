"""Reports: metrics, statistics, tables and figures of the papers, from stored predictions only.

Consumes the report manifest built by `bench` (docs/DESIGN.md) and the predictions
parquet files it points to; never imports torch, the plan or the store.
Entry point: `build_reports(manifest, out_dir, title=...)`.
"""

from reports.build import build_reports

__all__ = ["build_reports"]
