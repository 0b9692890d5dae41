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
from pathlib import Path
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)
stage_log = logging.getLogger("bench.stage")
T = TypeVar("T")

DEFAULT_EXPERIMENT = "medssl-bench"


def default_tracking_uri(results: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


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

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT, artifact_root: Path | None = None) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = _retry(lambda: self.client.get_experiment_by_name(experiment), "get experiment")
        if exp is None:
            loc = artifact_root.resolve().as_uri() if artifact_root else None
            try:
                self.experiment_id = _retry(
                    lambda: self.client.create_experiment(experiment, artifact_location=loc), "create experiment"
                )
            except Exception:
                # another process created it between our get and create
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

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

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), "set tags")

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
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
