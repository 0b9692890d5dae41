"""MLflow tracking: one parent run per `bench run`, one child run per executed stage.

We use `MlflowClient` (explicit run ids) instead of the fluent `mlflow.start_run` API
because stages run in other processes (submitit local/SLURM jobs): the parent run id
travels with the stage and children are linked through the `mlflow.parentRunId`
tag, which avoids the `MLFLOW_RUN_ID` precedence pitfall and the `set_experiment`
race (the launcher creates the experiment once, before any job starts).

SQLite is the default backend (`sqlite:///results/mlflow.db`); concurrent writers can
hit "database is locked", so every call is retried with back-off. Artifacts go to an
absolute directory next to the store (the sqlite default would be a relative
`./mlruns`).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

log = logging.getLogger(__name__)
stage_log = logging.getLogger("bench.stage")
T = TypeVar("T")

DEFAULT_EXPERIMENT = "medssl-bench"


def default_tracking_uri(results: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


@contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Hold `<db>.init.lock` (flock) while a client opens a SQLite store.

    Why: the first client of a fresh `mlflow.db` creates the tables and runs the alembic
    migrations; two `bench run`s (or two workers) doing it at once fail with
    `alembic.util.exc.CommandError: Online migration expected to match one row`.
    Other backends (a tracking server) serialise this themselves.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.init.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(fn: Callable[[], T], what: str, attempts: int = 8) -> T:
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlite "database is locked" surfaces as various MLflow errors
            if i == attempts - 1 or "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                raise
            log.debug("mlflow %s: %s; retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


class Tracker:
    """Thin, retrying wrapper over `MlflowClient` bound to one experiment."""

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT, artifact_root: Path | None = None, description: str = "") -> None:
        from mlflow import MlflowClient

        self.uri = uri
        with _schema_lock(uri):  # one process at a time creates/migrates a fresh SQLite store (issue 14.2)
            self.client = MlflowClient(tracking_uri=uri)
            exp = _retry(lambda: self.client.get_experiment_by_name(experiment), "get experiment")
        if exp is None:
            loc = artifact_root.resolve().as_uri() if artifact_root else None
            try:
                tags = {"mlflow.note.content": description} if description else None
                self.experiment_id = _retry(
                    lambda: self.client.create_experiment(experiment, artifact_location=loc, tags=tags), "create experiment"
                )
            except Exception:
                # another process created it between our get and create
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.base = _sqlite_dir(uri)
        if exp is None and artifact_root is not None and self.base is not None:
            _make_relative(uri, self.experiment_id, Path(artifact_root), self.base)

    def start(self, name: str, tags: dict[str, str] | None = None, parent: str | None = None) -> str:
        tags = dict(tags or {})
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = _retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=name), "create run")
        return run.info.run_id

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 90):
            chunk = items[i : i + 90]
            _retry(lambda: self.client.log_batch(run_id, params=chunk), "log params")

    def metrics(self, run_id: str, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in values.items() if v is not None]
        if items:
            _retry(lambda: self.client.log_batch(run_id, metrics=items), "log metrics")

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), "set tags")

    def resume(self, run_id: str) -> bool:
        """Mark an earlier attempt's run RUNNING again so a resumed stage's curves stay one run."""
        try:
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "resume run")
            return True
        except Exception as exc:  # the run was deleted or lives in another store
            log.debug("cannot resume MLflow run %s: %s", run_id, exc)
            return False

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        if self.base is not None:
            uri = _retry(lambda: self.client.get_run(run_id), "get run").info.artifact_uri
            if "://" not in uri and not uri.startswith("/"):
                # relative to the results folder (see _make_relative): resolve it here, not against the cwd
                from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

                repo = LocalArtifactRepository(str(self.base / uri))
                if path.is_dir():
                    repo.log_artifacts(str(path), artifact_path)
                else:
                    repo.log_artifact(str(path), artifact_path)
                return
        if path.is_dir():
            _retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), "log artifacts")
        else:
            _retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), "log artifact")

    def latest_matrix_run(self, matrix: str) -> str | None:
        """Run id of the most recent `bench run` parent run of this matrix file, if any."""
        runs = _retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.kind = 'matrix' and tags.matrix = '{matrix}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            ),
            "search runs",
        )
        return runs[0].info.run_id if runs else None

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(run_id, status=status), "end run")


def _sqlite_dir(uri: str) -> Path | None:
    """Folder of a SQLite tracking store (the results folder), or None for servers and other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).parent


def _make_relative(uri: str, experiment_id: str, artifact_root: Path, base: Path) -> None:
    """Store the experiment's artifact location relative to the results folder.

    MLflow turns local artifact locations into absolute `file://` URIs, which break as soon
    as a results folder is copied off a cluster. A relative location (`mlartifacts/<id>`)
    resolves against the results folder: `Tracker.artifact` writes there and `bench ui`
    serves from there, wherever the folder has moved.
    """
    import sqlite3

    try:
        rel = artifact_root.resolve().relative_to(base.resolve()) / str(experiment_id)
    except ValueError:
        return  # artifacts outside the results folder: keep MLflow's absolute location
    con = sqlite3.connect(uri[len("sqlite:///") :], timeout=30)
    try:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (str(rel), int(experiment_id)))
        con.commit()
    finally:
        con.close()


class StageLogger:
    """What a stage sees: per-epoch metrics to MLflow (if tracking) and to the stage log file."""

    def __init__(self, tracker: Tracker | None, run_id: str | None, log_file: Path | None) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.log_file = log_file

    def text(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        stage_log.info(msg)
        if self.log_file is not None:
            with open(self.log_file, "a") as fh:
                fh.write(line + "\n")

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.text(f"step {step}: " + ", ".join(f"{k}={v:.5g}" for k, v in values.items()))
        if self.tracker and self.run_id:
            self.tracker.metrics(self.run_id, values, step)


class DeferredTracker:
    """The `Tracker` interface, written as JSON lines into the stage folder instead of MLflow.

    Why: SQLite on a shared filesystem breaks under hundreds of concurrent SLURM jobs.
    Each job appends its own events (one file per stage, never shared), and
    `import_events` replays them into MLflow exactly once from one process.
    """

    RUN_ID = "deferred"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _emit(self, **event: Any) -> None:
        import json

        event["ts"] = int(time.time() * 1000)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def start(self, name: str, tags: dict[str, str] | None = None, parent: str | None = None) -> str:
        self._emit(op="start", name=name, tags=dict(tags or {}), parent=parent)
        return self.RUN_ID

    def resume(self, run_id: str) -> bool:
        if not self.path.exists():
            return False
        self._emit(op="resume")
        return True

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        self._emit(op="params", params=flatten(params))

    def metrics(self, run_id: str, values: dict[str, float], step: int | None = None) -> None:
        vals = {k: float(v) for k, v in values.items() if v is not None}
        if vals:
            self._emit(op="metrics", values=vals, step=step or 0)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._emit(op="tags", tags={k: str(v) for k, v in tags.items()})

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._emit(op="artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._emit(op="end", status=status)


EVENTS = "mlflow_events.jsonl"
IMPORTED = "mlflow_events.imported.json"


def import_events(store_root: Path, tracker: "Tracker | Callable[[str | None], Tracker]", parent_of: Callable[[str], str | None] | None = None) -> dict[str, int]:
    """Replay every stage's deferred MLflow events into `tracker`'s store, exactly once.

    Per stage, `mlflow_events.imported.json` records how many lines are in MLflow and in
    which run. It is written as `importing` before a batch and `imported` after it; a
    crash in between leaves `importing`, and the next import deletes that run and
    replays the whole file, so no event is lost or duplicated. Only one importer runs at
    a time (a lock file in the store root). Events of a stage that is still running are
    imported up to its last complete line and continued later in the same run.
    """
    import json

    from mlflow.entities import Metric, Param, RunTag

    store_root = Path(store_root)
    trackers: dict[str | None, Tracker] = {}

    def tracker_for(events_path: Path) -> "Tracker":
        if isinstance(tracker, Tracker):
            return tracker
        first = events_path.open().readline()
        name = json.loads(first).get("tags", {}).get("matrix") if first.strip() else None
        if name not in trackers:
            trackers[name] = tracker(name)
        return trackers[name]

    counts = {"stages": 0, "events": 0, "runs_created": 0, "recovered": 0}
    lock = store_root / ".mlflow_import.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if time.time() - lock.stat().st_mtime < 600:
            return counts  # another importer is at work; it will import these events
        lock.unlink(missing_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    try:
        for events in sorted(store_root.glob(f"*/{EVENTS}")):
            stage_dir = events.parent
            marker = stage_dir / IMPORTED
            state = json.loads(marker.read_text()) if marker.exists() else {"lines": 0, "run_id": None, "state": "imported"}
            lines = events.read_text().splitlines(keepends=True)
            complete = [ln for ln in lines if ln.endswith("\n")]
            if state["state"] == "importing":
                if state.get("run_id"):
                    try:
                        _retry(lambda: tracker_for(events).client.delete_run(state["run_id"]), "delete partial run")
                    except Exception as exc:
                        log.debug("partial run %s already gone: %s", state["run_id"], exc)
                state = {"lines": 0, "run_id": None, "state": "imported"}
                counts["recovered"] += 1
            new = complete[state["lines"] :]
            if not new:
                continue
            run_id = state["run_id"]
            tk = tracker_for(events)
            _write_json(marker, {**state, "state": "importing"})
            params: list[Param] = []
            for ln in new:
                ev = json.loads(ln)
                op = ev["op"]
                if op == "start" and run_id is None:
                    tags = dict(ev["tags"])
                    parent = ev.get("parent") or (parent_of(stage_dir.name) if parent_of else None)
                    if parent:
                        tags["mlflow.parentRunId"] = parent
                    tags["bench.events"] = stage_dir.name
                    run = _retry(lambda: tk.client.create_run(tk.experiment_id, tags=tags, run_name=ev["name"], start_time=ev["ts"]), "create run")
                    run_id = run.info.run_id
                    counts["runs_created"] += 1
                    _write_json(marker, {"lines": state["lines"], "run_id": run_id, "state": "importing"})
                elif run_id is None:
                    continue
                elif op == "params":
                    have = {p.key for p in params}
                    params.extend(Param(k, v) for k, v in ev["params"].items() if k not in have)
                elif op == "metrics":
                    items = [Metric(k, v, ev["ts"], ev["step"]) for k, v in ev["values"].items()]
                    _retry(lambda: tk.client.log_batch(run_id, metrics=items), "log metrics")
                elif op == "tags":
                    items_t = [RunTag(k, v) for k, v in ev["tags"].items()]
                    _retry(lambda: tk.client.log_batch(run_id, tags=items_t), "set tags")
                elif op == "artifact" and Path(ev["path"]).exists():
                    tk.artifact(run_id, Path(ev["path"]), ev.get("artifact_path"))
                elif op == "resume":
                    _retry(lambda: tk.client.update_run(run_id, status="RUNNING"), "resume run")
                elif op == "end":
                    _retry(lambda: tk.client.set_terminated(run_id, status=ev["status"], end_time=ev["ts"]), "end run")
                counts["events"] += 1
            for i in range(0, len(params), 90):
                chunk = params[i : i + 90]
                _retry(lambda: tk.client.log_batch(run_id, params=chunk), "log params")
            _write_json(marker, {"lines": len(complete), "run_id": run_id, "state": "imported"})
            counts["stages"] += 1
    finally:
        lock.unlink(missing_ok=True)
    return counts


def _write_json(path: Path, obj: Any) -> None:
    import json

    from bench.store import atomic_write_text

    atomic_write_text(path, json.dumps(obj))