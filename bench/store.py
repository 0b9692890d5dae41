"""The results store: one directory per stage key, written atomically.

Layout: `<root>/<stage_key>/` holds `config.json` (the stage), `status.json`,
`log.txt`, the stage's outputs (`encoder.pt`, `model.pt`, `predictions.parquet`,
`metrics.json`) and, while running, `checkpoint.pt`.

Why this shape: a stage is *done* only when `status.json` says so AND every output it
declared exists; outputs are written to a temporary name in the same directory and
renamed (atomic on POSIX), so a crash or Ctrl-C never leaves a half-written file under
a final name. A done stage is never rewritten: `write_output` refuses, which is what
makes "a re-run never overwrites results" hold by construction.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

STATUS = "status.json"


class StoreError(Exception):
    pass


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, key: str) -> Path:
        return self.root / key

    # ------------------------------------------------------------------ status
    def status(self, key: str) -> dict[str, Any]:
        p = self.dir(key) / STATUS
        if not p.exists():
            return {"state": "pending"}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {"state": "corrupt-status"}

    def is_done(self, key: str) -> bool:
        st = self.status(key)
        if st.get("state") != "done":
            return False
        return all((self.dir(key) / name).exists() for name in st.get("outputs", []))

    def done_keys(self, keys: list[str]) -> set[str]:
        return {k for k in keys if self.is_done(k)}

    def _write_status(self, key: str, **fields: Any) -> None:
        st = self.status(key)
        if st.get("state") in ("pending", "corrupt-status"):
            st = {}
        st.update(fields, updated=time.time(), host=socket.gethostname(), pid=os.getpid())
        self._atomic_text(self.dir(key) / STATUS, json.dumps(st, indent=2, default=str))

    def begin(self, key: str, stage_json: dict[str, Any]) -> None:
        if self.is_done(key):
            raise StoreError(f"stage {key} is already done; refusing to run it again")
        d = self.dir(key)
        d.mkdir(parents=True, exist_ok=True)
        self._atomic_text(d / "config.json", json.dumps(stage_json, indent=2, sort_keys=True, default=str))
        attempts = int(self.status(key).get("attempts", 0)) + 1
        self._write_status(key, state="running", started=time.time(), attempts=attempts, error=None)

    def mark_done(self, key: str, outputs: list[str], **extra: Any) -> None:
        missing = [o for o in outputs if not (self.dir(key) / o).exists()]
        if missing:
            raise StoreError(f"stage {key}: cannot mark done, outputs missing: {missing}")
        self._write_status(key, state="done", finished=time.time(), outputs=outputs, **extra)

    def mark_failed(self, key: str, error: str, state: str = "failed") -> None:
        self._write_status(key, state=state, finished=time.time(), error=error)

    # ------------------------------------------------------------------ files
    @contextmanager
    def write_output(self, key: str, name: str) -> Iterator[Path]:
        """Yield a temporary path; on success rename it to `name` (atomic). Refuses on done stages."""
        if self.is_done(key):
            raise StoreError(f"stage {key} is done; refusing to overwrite {name}")
        d = self.dir(key)
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, d / name)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()

    def write_json(self, key: str, name: str, obj: Any) -> None:
        with self.write_output(key, name) as tmp:
            tmp.write_text(json.dumps(obj, indent=2, default=str))

    def path(self, key: str, name: str) -> Path:
        return self.dir(key) / name

    @staticmethod
    def _atomic_text(path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
