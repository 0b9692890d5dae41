"""The cluster manifest: which SLURM job runs (or ran) each stage of a matrix.

One append-only JSON-lines file per matrix (`results/slurm/<matrix>/manifest.jsonl`);
the last record of a stage key wins. Appending whole lines with `O_APPEND` under an
exclusive `flock` keeps it consistent with several `bench` commands at once (run,
cancel, status), and nothing is ever rewritten, so a crash loses at most the line
being written. The store stays the truth about *results*; the manifest is the truth
about *jobs* (so a second `bench run` never submits a stage that is queued or running).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"}


@dataclass
class JobRecord:
    key: str
    job_id: str  # `<id>` or `<array id>_<index>`
    kind: str
    label: str
    state: str = "SUBMITTED"  # SLURM state last seen, or SUBMITTED / CANCELLED (by bench cancel)
    attempt: int = 1  # how many times bench submitted this stage
    submitted: float = field(default_factory=time.time)
    log: str = ""  # the job's stdout/stderr folder
    dependency: str = ""

    @property
    def array_job(self) -> str:
        return self.job_id.split("_")[0]


class Manifest:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "manifest.jsonl"

    def append(self, records: Iterable[JobRecord]) -> None:
        lines = "".join(json.dumps(asdict(r)) + "\n" for r in records)
        if not lines:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def latest(self) -> dict[str, JobRecord]:
        out: dict[str, JobRecord] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                d: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash
            out[d["key"]] = JobRecord(**d)
        return out

    def history(self, key: str) -> list[JobRecord]:
        if not self.path.exists():
            return []
        recs = []
        for line in self.path.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if d.get("key") == key:
                recs.append(JobRecord(**d))
        return recs
