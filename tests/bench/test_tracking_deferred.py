"""Deferred MLflow events (cluster jobs on the SQLite store) arrive exactly once, even after a crashed import."""

from __future__ import annotations

import json
from pathlib import Path

from bench.tracking import DeferredTracker, Tracker, import_events


def _stage_events(store: Path, key: str, epochs: int) -> None:
    (store / key).mkdir(parents=True)
    (store / key / "log.txt").write_text("log\n")
    t = DeferredTracker(store / key / "mlflow_events.jsonl")
    rid = t.start(f"run {key}", tags={"stage_key": key, "stage_kind": "pretrain"})
    t.params(rid, {"pretrain": {"method": "mae", "epochs": epochs}})
    for e in range(epochs):
        t.metrics(rid, {"train_loss": 1.0 / (e + 1)}, step=e)
    t.artifact(rid, store / key / "log.txt")
    t.end(rid, "FINISHED")


def _history(tracker: Tracker, key: str) -> list[float]:
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.stage_key = '{key}'")
    assert len(runs) == 1, f"{len(runs)} runs for {key}"
    return [m.value for m in tracker.client.get_metric_history(runs[0].info.run_id, "train_loss")]


def test_events_imported_exactly_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for i in range(16):
        _stage_events(store, f"pretrain-{i:02d}", epochs=3)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    counts = import_events(store, tracker)
    assert counts["stages"] == 16 and counts["runs_created"] == 16
    again = import_events(store, tracker)  # nothing new: nothing imported twice
    assert again["stages"] == 0 and again["events"] == 0
    for i in range(16):
        assert _history(tracker, f"pretrain-{i:02d}") == [1.0, 0.5, 1.0 / 3]
    run = tracker.client.search_runs([tracker.experiment_id], filter_string="tags.stage_key = 'pretrain-00'")[0]
    assert run.info.status == "FINISHED" and run.data.params["pretrain.method"] == "mae"


def test_a_crashed_import_is_replayed_without_duplicates(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _stage_events(store, "pretrain-a", epochs=4)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    import_events(store, tracker)
    run_id = json.loads((store / "pretrain-a" / "mlflow_events.imported.json").read_text())["run_id"]
    # simulate a crash after MLflow got the events but before the marker said so
    (store / "pretrain-a" / "mlflow_events.imported.json").write_text(json.dumps({"lines": 0, "run_id": run_id, "state": "importing"}))
    counts = import_events(store, tracker)
    assert counts["recovered"] == 1
    assert _history(tracker, "pretrain-a") == [1.0, 0.5, 1.0 / 3, 0.25]


def test_events_appended_later_continue_the_same_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "k").mkdir(parents=True)
    t = DeferredTracker(store / "k" / "mlflow_events.jsonl")
    t.start("k", tags={"stage_key": "k"})
    t.metrics("deferred", {"train_loss": 2.0}, step=0)
    t.end("deferred", "KILLED")  # preempted attempt
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    import_events(store, tracker)
    assert t.resume("deferred")  # the requeued attempt continues the stage's run
    t.metrics("deferred", {"train_loss": 1.0}, step=1)
    t.end("deferred", "FINISHED")
    import_events(store, tracker)
    assert _history(tracker, "k") == [2.0, 1.0]
    run = tracker.client.search_runs([tracker.experiment_id], filter_string="tags.stage_key = 'k'")[0]
    assert run.info.status == "FINISHED"


def test_artifacts_survive_moving_the_results_folder(tmp_path: Path, monkeypatch) -> None:
    import shutil

    import mlflow

    res = tmp_path / "results"
    res.mkdir()
    tracker = Tracker(f"sqlite:///{res / 'mlflow.db'}", experiment="moved", artifact_root=res / "mlartifacts")
    run = tracker.start("r")
    (tmp_path / "a.txt").write_text("hello")
    tracker.artifact(run, tmp_path / "a.txt")
    tracker.end(run)
    assert not Path(tracker.client.get_run(run).info.artifact_uri).is_absolute()
    assert list((res / "mlartifacts").rglob("a.txt"))
    shutil.move(str(res), str(tmp_path / "elsewhere"))
    new = tmp_path / "elsewhere"
    monkeypatch.chdir(new)  # what `bench ui` does: serve from the results folder
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{new / 'mlflow.db'}")
    got = client.download_artifacts(run, "a.txt", str(tmp_path))
    assert Path(got).read_text() == "hello"
