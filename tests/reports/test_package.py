"""Package contract: no torch, no plan/store imports; lazy entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_reports_never_imports_torch_plan_or_store() -> None:
    code = (
        "import sys, reports, reports.metrics as m; m.list_metrics(); "
        "from reports import build_reports, degenerate_cells; import reports.figures, reports.statistics, reports.latex; "
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith(('torch.', 'bench.plan', 'bench.store'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_metrics_import_does_not_load_matplotlib() -> None:
    code = "import sys, reports.metrics as m; m.list_metrics(); sys.exit(1 if 'matplotlib' in sys.modules else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
