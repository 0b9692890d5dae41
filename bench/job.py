"""The job body: what runs inside a job, whichever executor launched it.

`execute_stage` claims a stage in the store, records it in MLflow, runs the stage's
runner (`bench.train`) and marks the result; `execute_chain` runs a stage and its
cheap dependants in one process. Executors (`bench.execute.*`) only decide *where*
and *when* these functions run; stage runners only see a `StageEnv`.

Guarantees, whatever the launcher:
- a stage runs in at most one process at a time (the store's claim), a second caller
  waits for the holder (or skips) and never re-runs or rewrites a done stage;
- a stop request (SIGTERM, SIGUSR2, Ctrl-C) checkpoints at a consistent step and the
  stage is marked interrupted/requeued, never done or failed;
- every attempt records where it ran (device, versions, threads, world size, host,
  SLURM job) in `status.json` (`provenance`), because bit-identical results need the
  same device, thread count and world size.
"""

from __future__ import annotations

import platform
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from bench import preempt
from bench.env import StageEnv
from bench.plan import Stage
from bench.store import Store, slurm_job_id


@dataclass(frozen=True)
class JobContext:
    """Everything a job needs besides its stages; small and picklable (it travels in every job)."""

    store_root: str
    env: StageEnv = field(default_factory=StageEnv)
    tracking_uri: str | None = None
    # direct: log to MLflow while running (a server, or SQLite with few writers);
    # deferred: append events to the stage folder, imported exactly once by `bench sync`
    tracking_mode: str = "direct"
    experiment: str = "medssl-bench"
    parent_run_id: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)  # added to every stage run (matrix name, ...)
    stage_tags: dict[str, dict[str, str]] = field(default_factory=dict)  # per stage key: experiment ids, axes
    # per evaluate stage key: report column -> its classes, so the run logs what the tables report
    eval_columns: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    wait_for_holder: bool = True  # a stage held by another process: wait (True) or skip it
    wait_poll_s: float = 2.0


def provenance(env: StageEnv) -> dict[str, Any]:
    import torch

    try:
        import timm

        timm_version = timm.__version__
    except Exception:  # pragma: no cover - timm is a dependency
        timm_version = "?"
    dev = env.resolved_device()
    name = dev
    if dev.startswith("cuda") and torch.cuda.is_available():
        name = f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    return {
        "device": name,
        "torch": torch.__version__,
        "timm": timm_version,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "world_size": env.world_size,
        "host": socket.gethostname(),
        "slurm_job": slurm_job_id(),
    }


def _tracker(ctx: JobContext, store: Store, key: str):  # -> Tracker | DeferredTracker | None
    if not ctx.tracking_uri:
        return None
    from bench.tracking import DeferredTracker, Tracker

    if ctx.tracking_mode == "deferred":
        return DeferredTracker(store.path(key, "mlflow_events.jsonl"))
    return Tracker(ctx.tracking_uri, ctx.experiment)


def _wait_for_holder(store: Store, key: str, ctx: JobContext):  # -> Claim | None | "done"
    """Claim `key`; while another live process holds it, wait (or give up when told to skip)."""
    announced = False
    while True:
        if store.is_done(key):
            return "done"
        claim = store.claim(key)
        if claim is not None:
            return claim
        if not ctx.wait_for_holder:
            return None
        if not announced:
            info = store.lock_info(key) or {}
            print(f"stage {key} is being run by pid {info.get('pid')} on {info.get('host')}; waiting for it", flush=True)
            announced = True
        time.sleep(ctx.wait_poll_s)


def execute_stage(stage_json: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run one stage end to end; returns {"key", "state": done|held|..., ...}. Raises on failure."""
    import torch

    from bench import distributed
    from bench.tracking import StageLogger
    from bench.train import run_stage

    stage = Stage.from_json(stage_json)
    store = Store(ctx.store_root)
    env = distributed.setup(ctx.env)
    claim = None
    try:
        decision: Any = None
        if env.is_main:
            got = "done" if store.is_done(stage.key) else _wait_for_holder(store, stage.key, ctx)
            claim = got if got not in ("done", None) else None
            decision = "run" if claim is not None else ("done" if got == "done" else "held")
        decision = distributed.broadcast_object(decision)
        if decision == "done":
            return {"key": stage.key, "state": "done", "skipped": True}
        if decision == "held":
            return {"key": stage.key, "state": "held"}
        if env.threads:
            torch.set_num_threads(env.threads)
        tracker, run_id, logger = None, None, StageLogger(None, None, None)
        if env.is_main:
            previous = store.status(stage.key)
            store.begin(stage.key, stage_json)
            attempt = int(store.status(stage.key).get("attempts", 1))
            store.update_status(stage.key, provenance=provenance(env))
            tracker = _tracker(ctx, store, stage.key)
            if tracker is not None:
                run_id = _start_run(tracker, stage, ctx, attempt, previous.get("mlflow_run_id"))
                store.update_status(stage.key, mlflow_run_id=run_id)
            logger = StageLogger(tracker, run_id, store.path(stage.key, "log.txt"))
            logger.text(f"attempt {attempt} of {stage.kind} {stage.key} ({stage.label}) on {provenance(env)}")
        try:
            with preempt.graceful_stop():
                outputs, summary = run_stage(stage, store, logger, env)
            distributed.barrier()
            if env.is_main:
                store.mark_done(stage.key, outputs, mlflow_run_id=run_id, summary=summary)
                if tracker is not None and run_id:
                    final = {f"final.{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
                    final.update(column_metrics(summary, ctx.eval_columns.get(stage.key, {})))
                    tracker.metrics(run_id, final, step=0)
                    tracker.artifact(run_id, store.path(stage.key, "log.txt"))
                    tracker.end(run_id, "FINISHED")
            return {"key": stage.key, "state": "done", "run_id": run_id}
        except preempt.Preempted as exc:
            if env.is_main:
                requeue = slurm_job_id() is not None and exc.signum is not None and exc.signum == _sigusr2()
                state = "requeued" if requeue else "interrupted"
                store.mark_failed(stage.key, f"{exc} ({'requeued by SLURM' if requeue else 'resumes on the next run'})", state=state)
                logger.text(f"{state}: {exc}")
                if tracker is not None and run_id:
                    tracker.end(run_id, "KILLED")
            raise
        except KeyboardInterrupt as exc:
            if env.is_main:
                store.mark_failed(stage.key, f"interrupted ({exc or 'KeyboardInterrupt'})", state="interrupted")
                if tracker is not None and run_id:
                    tracker.end(run_id, "KILLED")
            raise
        except BaseException as exc:
            if env.is_main:
                logger.text("FAILED\n" + traceback.format_exc())
                store.mark_failed(stage.key, f"{type(exc).__name__}: {exc}")
                if tracker is not None and run_id:
                    tracker.end(run_id, "FAILED")
            raise
    finally:
        if claim is not None:
            claim.release()
        distributed.teardown()


def column_metrics(summary: dict[str, Any], columns: dict[str, list[str]]) -> dict[str, float]:
    """Mean AUC of each report column's classes (what Table 2 shows), from per-class AUCs."""
    import math

    out: dict[str, float] = {}
    for column, classes in columns.items():
        vals = [float(summary[f"auc.{c}"]) for c in classes if isinstance(summary.get(f"auc.{c}"), (int, float)) and not math.isnan(summary[f"auc.{c}"])]
        if vals:
            out[f"mean_auc.{column}"] = sum(vals) / len(vals)
    return out


def _sigusr2() -> int | None:
    import signal

    return getattr(signal, "SIGUSR2", None)


def _start_run(tracker: Any, stage: Stage, ctx: JobContext, attempt: int, previous_run: str | None) -> str:
    """A stage is one MLflow run across attempts: a resumed attempt continues the earlier run."""
    tags = {
        "stage_key": stage.key,
        "stage_kind": stage.kind,
        "attempt": str(attempt),
        **ctx.run_tags,
        **ctx.stage_tags.get(stage.key, {}),
    }
    if previous_run and attempt > 1 and tracker.resume(previous_run):
        tracker.set_tags(previous_run, {"attempt": str(attempt)})
        return previous_run
    run_id = tracker.start(_run_name(stage, ctx), tags=tags, parent=ctx.parent_run_id)
    tracker.params(run_id, {"stage_key": stage.key, **stage.config, **{f"axis.{k}": v for k, v in ctx.stage_tags.get(stage.key, {}).items()}})
    tracker.artifact(run_id, _config_path(ctx, stage))
    return run_id


def _run_name(stage: Stage, ctx: JobContext) -> str:
    return ctx.stage_tags.get(stage.key, {}).get("run_name") or f"{stage.kind}:{stage.label}"


def _config_path(ctx: JobContext, stage: Stage):  # -> Path
    return Store(ctx.store_root).path(stage.key, "config.json")


def execute_chain(stage_jsons: list[dict[str, Any]], ctx: JobContext) -> list[dict[str, Any]]:
    """Run a stage and its cheap dependants (its evaluations) in one job, in order.

    Why: an evaluation is seconds of work but a fresh subprocess pays seconds of imports;
    chaining keeps each stage its own store entry and MLflow run while sharing one process.
    A failed stage blocks the later stages of the chain that depend on it.
    """
    out: list[dict[str, Any]] = []
    failed: set[str] = set()
    for sj in stage_jsons:
        if any(u in failed for u in sj["upstream"]):
            failed.add(sj["key"])
            out.append({"key": sj["key"], "state": "blocked"})
            continue
        try:
            out.append(execute_stage(sj, ctx))
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            failed.add(sj["key"])
            out.append({"key": sj["key"], "state": "failed", "error": f"{type(exc).__name__}: {exc}"})
    return out

