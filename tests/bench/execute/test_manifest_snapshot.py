"""The cluster manifest (last record wins, torn lines ignored) and content-addressed code snapshots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.execute.manifest import JobRecord, Manifest
from bench.execute.snapshot import setup_lines, snapshot


def test_manifest_last_record_wins_and_survives_a_torn_line(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.append([JobRecord("a", "10_0", "finetune", "a seed 0"), JobRecord("b", "10_1", "finetune", "a seed 1")])
    m.append([JobRecord("a", "12", "finetune", "a seed 0", attempt=2)])
    with open(m.path, "a") as fh:
        fh.write('{"key": "c", "job_')  # a crash mid-line
    latest = m.latest()
    assert latest["a"].job_id == "12" and latest["a"].attempt == 2 and latest["b"].array_job == "10"
    assert [r.job_id for r in m.history("a")] == ["10_0", "12"]


def test_snapshot_is_content_addressed_and_imported_first(tmp_path: Path) -> None:
    a = snapshot(tmp_path)
    assert snapshot(tmp_path) == a  # unchanged code: one snapshot
    assert (a / "bench" / "job.py").exists() and (a / "ssl_methods").is_dir()
    # a job that puts the snapshot first on PYTHONPATH imports it, not the checkout
    lines = "; ".join(setup_lines(a))
    out = subprocess.run(["bash", "-c", f"{lines}; {sys.executable} -c 'import bench.job; print(bench.job.__file__)'"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith(str(a))
