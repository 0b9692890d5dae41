"""Store atomicity, done-marking and refusal to overwrite finished results."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.store import Store, StoreError


def test_done_requires_outputs_and_status(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.begin("k", {"key": "k"})
    assert not s.is_done("k")
    with pytest.raises(StoreError, match="outputs missing"):
        s.mark_done("k", ["out.txt"])
    with s.write_output("k", "out.txt") as tmp:
        tmp.write_text("x")
    s.mark_done("k", ["out.txt"])
    assert s.is_done("k")
    # an output deleted afterwards makes the stage not done again (it will re-run)
    s.path("k", "out.txt").unlink()
    assert not s.is_done("k")


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.begin("k", {})
    with pytest.raises(RuntimeError):
        with s.write_output("k", "pred.parquet") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not s.path("k", "pred.parquet").exists()
    assert [p.name for p in s.dir("k").iterdir() if p.name.endswith(".tmp")] == []


def test_done_stage_is_never_overwritten(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.begin("k", {})
    with s.write_output("k", "a") as tmp:
        tmp.write_text("first")
    s.mark_done("k", ["a"])
    with pytest.raises(StoreError, match="refusing"):
        with s.write_output("k", "a") as tmp:
            tmp.write_text("second")
    with pytest.raises(StoreError, match="already done"):
        s.begin("k", {})
    assert s.path("k", "a").read_text() == "first"


def test_attempts_counted(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.begin("k", {})
    s.mark_failed("k", "boom")
    assert s.status("k")["state"] == "failed" and s.status("k")["error"] == "boom"
    s.begin("k", {})
    assert s.status("k")["attempts"] == 2 and s.status("k")["state"] == "running"
