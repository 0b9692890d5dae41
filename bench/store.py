"""The results store: one directory per stage key, written atomically.

Layout: `<root>/<stage_key>/` holds `config.json` (the stage), `status.json`,
`log.txt`, the stage's outputs (`encoder.pt`, `model.pt`, `predictions.parquet`,
`metrics.json`) and, while running, `checkpoint.pt`.

Why this shape: a stage is *done* only when `status.json` says so AND every output it
declared exists; outputs are written to a temporary name in the same directory and
renamed (atomic on POSIX), so a crash or Ctrl-C never leaves a half-written file under
a final name. A done stage is never rewritten: `write_output` refuses and a done
status cannot be replaced by any other state, which is what makes "a re-run never
overwrites results" hold by construction.

Claims: before a process runs a stage it takes the stage's lock (`claim`), an
`O_CREAT|O_EXCL` file holding pid, host, SLURM job id and a token, refreshed by a
heartbeat. Two `bench run`s on one results folder (or two matrices sharing a
pre-training, or a SLURM job and a local run) therefore never execute one stage twice:
the second waits for the holder or skips. A lock is stale when its holder is provably
gone: a dead pid on this host, the same SLURM job restarted (requeue after a node
failure), or no heartbeat for `stale_after` seconds (another host on a shared
filesystem). A stale lock is broken by renaming it away, which exactly one taker wins.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STATUS = "status.json"
LOCK = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = float(os.environ.get("BENCH_LOCK_STALE_SECONDS", "600"))


def slurm_job_id() -> str | None:
    """This process's SLURM job id (array jobs: `<array>_<task>`), or None outside SLURM."""
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs on this host (a zombie counts as gone: it holds nothing any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it holds nothing any more
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class Claim:
    """A held stage lock; `release()` (or leaving the `with`) gives it back."""

    store: "Store"
    key: str
    token: str
    _stop: threading.Event | None = None

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.store._release(self.key, self.token)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class StoreError(Exception):
    pass


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_s = str(self.root)

    def dir(self, key: str) -> Path:
        return self.root / key

    # ------------------------------------------------------------------ status
    def status(self, key: str) -> dict[str, Any]:
        # plain os paths and one open (no exists() first): `bench plan`/`bench run` read the
        # status of every stage of a study (10,000 at a time), so this is the planner's hot path
        try:
            with open(os.path.join(self._root_s, key, STATUS), "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return {"state": "pending"}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"state": "corrupt-status"}

    def _outputs_exist(self, key: str, st: dict[str, Any]) -> bool:
        d = os.path.join(self._root_s, key)
        return all(os.path.exists(os.path.join(d, name)) for name in st.get("outputs", []))

    def is_done(self, key: str) -> bool:
        st = self.status(key)
        return st.get("state") == "done" and self._outputs_exist(key, st)

    def done_status(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The status of each key that is done (one read per stage): what a rerun needs to skip
        them and to tell whether reports built from them are current."""
        out: dict[str, dict[str, Any]] = {}
        present = self._present()
        for k in keys:
            if k not in present:
                continue
            st = self.status(k)
            if st.get("state") == "done" and self._outputs_exist(k, st):
                out[k] = st
        return out

    def states(self, keys: list[str]) -> dict[str, str]:
        """Each key's state, `done` only when its outputs exist too (one status read per stage)."""
        out: dict[str, str] = {}
        present = self._present()
        for k in keys:
            if k not in present:
                out[k] = "pending"
                continue
            st = self.status(k)
            state = str(st.get("state", "pending"))
            if state == "done" and not self._outputs_exist(k, st):
                state = "incomplete"  # says done, an output is missing: runs again
            out[k] = state
        return out

    def _present(self) -> set[str]:
        """Stage folders in the store (one directory listing instead of a failed open per new stage)."""
        try:
            return set(os.listdir(self._root_s))
        except FileNotFoundError:
            return set()

    def done_keys(self, keys: list[str]) -> set[str]:
        return set(self.done_status(keys))

    def _write_status(self, key: str, **fields: Any) -> None:
        st = self.status(key)
        if self.is_done(key) and fields.get("state") != "done":
            raise StoreError(f"stage {key} is done; its status is final (refusing to set {fields.get('state')!r})")
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

    def mark_failed(self, key: str, error: str, state: str = "failed") -> bool:
        """Record a failure/interruption; a done stage keeps its status (returns False then)."""
        if self.is_done(key):
            return False
        self._write_status(key, state=state, finished=time.time(), error=error)
        return True

    def update_status(self, key: str, **fields: Any) -> None:
        """Add fields (provenance, run ids) to a stage's status without changing its state."""
        fields.pop("state", None)
        st = self.status(key)
        if st.get("state") in ("pending", "corrupt-status"):
            return
        st.update(fields)
        self._atomic_text(self.dir(key) / STATUS, json.dumps(st, indent=2, default=str))

    # ------------------------------------------------------------------ claims
    def lock_info(self, key: str) -> dict[str, Any] | None:
        """The current holder of `key` (pid, host, job, started, age of heartbeat), or None."""
        p = self.dir(key) / LOCK
        try:
            info = json.loads(p.read_text())
            info["heartbeat_age"] = time.time() - p.stat().st_mtime
            return info
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def lock_is_stale(self, info: dict[str, Any]) -> bool:
        if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", 0))):
            return True
        job = slurm_job_id()
        if job and info.get("slurm_job") == job and int(info.get("pid", -1)) != os.getpid():
            return True  # this very SLURM job was requeued: the earlier attempt is gone
        return float(info.get("heartbeat_age", 0.0)) > STALE_AFTER_S

    def claim(self, key: str, heartbeat: bool = True) -> Claim | None:
        """Take the stage's lock, breaking a stale one; None when a live process holds it."""
        d = self.dir(key)
        d.mkdir(parents=True, exist_ok=True)
        lock = d / LOCK
        token = uuid.uuid4().hex
        body = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": slurm_job_id(), "started": time.time(), "token": token}
        )
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.lock_info(key)
                if info is None:
                    continue  # released between our open and read
                if not self.lock_is_stale(info):
                    return None
                try:  # exactly one taker wins the rename
                    os.rename(lock, d / f"{LOCK}.stale.{token}")
                    os.unlink(d / f"{LOCK}.stale.{token}")
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            stop = None
            if heartbeat:
                stop = threading.Event()
                threading.Thread(target=_beat, args=(lock, token, stop), daemon=True, name=f"lock-{key}").start()
            return Claim(self, key, token, stop)
        return None

    def _release(self, key: str, token: str) -> None:
        lock = self.dir(key) / LOCK
        try:
            if json.loads(lock.read_text()).get("token") == token:
                lock.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass

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

    def path(self, key: str, name: str) -> Path:
        return self.dir(key) / name

    @staticmethod
    def _atomic_text(path: Path, text: str) -> None:
        atomic_write_text(path, text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename; on any failure (disk full, read-only) no temporary file is left behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _beat(lock: Path, token: str, stop: threading.Event) -> None:
    """Refresh the lock's mtime while its holder lives (other hosts judge staleness by it)."""
    while not stop.wait(HEARTBEAT_S):
        try:
            if json.loads(lock.read_text()).get("token") != token:
                return
            os.utime(lock)
        except (OSError, json.JSONDecodeError):
            return
