"""Stage claims and final statuses: one stage never runs in two processes, a done stage never changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.store import Store, StoreError


def _done(s: Store, key: str) -> None:
    s.begin(key, {"key": key})
    with s.write_output(key, "out.txt") as tmp:
        tmp.write_text("x")
    s.mark_done(key, ["out.txt"])


def test_second_claim_fails_while_held_and_succeeds_after_release(tmp_path: Path) -> None:
    s = Store(tmp_path)
    c = s.claim("k")
    assert c is not None
    assert s.claim("k") is None  # this very process holds it: a second claim is refused
    info = s.lock_info("k")
    assert info is not None and info["pid"] == os.getpid()
    c.release()
    c2 = s.claim("k")
    assert c2 is not None
    c2.release()
    assert s.lock_info("k") is None


def test_lock_of_a_dead_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    s = Store(tmp_path)
    code = f"from bench.store import Store; c = Store({str(tmp_path)!r}).claim('k', heartbeat=False); print(c.token)"
    token = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    info = s.lock_info("k")
    assert info is not None and info["token"] == token  # the dead process never released it
    assert s.lock_is_stale(info)
    c = s.claim("k")
    assert c is not None and c.token != token
    c.release()


def test_lock_of_a_live_process_elsewhere_is_respected_until_its_heartbeat_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    (tmp_path / "k").mkdir()
    lock = tmp_path / "k" / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "another-node", "slurm_job": None, "token": "t"}))
    assert s.claim("k") is None
    old = os.stat(lock).st_mtime - 3600
    os.utime(lock, (old, old))  # no heartbeat for an hour: the other host is gone
    c = s.claim("k")
    assert c is not None
    c.release()


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / ".lock").write_text(json.dumps({"pid": 999999, "host": "node7", "slurm_job": "42_3", "token": "t"}))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    c = s.claim("k")
    assert c is not None
    c.release()


def test_done_status_is_final(tmp_path: Path) -> None:
    s = Store(tmp_path)
    _done(s, "k")
    assert s.mark_failed("k", "boom") is False
    assert s.is_done("k")
    with pytest.raises(StoreError, match="status is final"):
        s._write_status("k", state="running")
    with pytest.raises(StoreError):
        s.begin("k", {})


def test_failed_status_write_leaves_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.begin("k", {})

    def disk_full(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        s.mark_failed("k", "x")
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")] == []
    assert s.status("k")["state"] == "running"
