"""Executors: run the pending stages of a plan in dependency order.

All executors share one interface, `Executor.run(stages, ctx) -> RunSummary`, and the
stage code (`execute_stage`) never knows which one runs it (submitit's lesson).

- `inline`: in this process, topological order. Simplest to debug.
- `local`: submitit's `LocalExecutor`; each stage is a subprocess. A stage is submitted
  once all its upstream stages are done, with at most `max_parallel` running at once.
- `slurm` slots in here (submitit `AutoExecutor`) with `afterok` dependencies.

A stage whose upstream failed is reported as *blocked* and not started. Ctrl-C stops
submitting, cancels running jobs, and leaves finished stages done and the interrupted
one re-runnable (it resumes from its last checkpoint).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plan import Stage
from bench.store import Store

log = logging.getLogger(__name__)

EXECUTORS = ("inline", "local")


@dataclass
class RunContext:
    """Everything a stage needs besides its own config; picklable for subprocess jobs."""

    store_root: str
    tracking_uri: str | None = None
    experiment: str = "medssl-bench"
    parent_run_id: str | None = None
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    image_policy: str = "skip"  # corrupt images: skip (counted, listed in the stage log) or fail
    cache_root: str | None = None  # `bench data prepare` caches; stages use one when it matches


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done before this run
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    blocked: list[str] = field(default_factory=list)  # upstream failed
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.interrupted


def execute_stage(stage_json: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Run one stage end to end: store bookkeeping, MLflow child run, the stage runner."""
    import torch

    from bench.tracking import StageLogger, Tracker
    from bench.train import run_stage

    stage = Stage.from_json(stage_json)
    store = Store(ctx.store_root)
    if store.is_done(stage.key):
        return {"key": stage.key, "state": "done", "skipped": True}
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    store.begin(stage.key, stage_json)
    tracker = Tracker(ctx.tracking_uri, ctx.experiment) if ctx.tracking_uri else None
    run_id = None
    if tracker:
        attempt = store.status(stage.key).get("attempts", 1)
        run_id = tracker.start(
            f"{stage.kind}:{stage.label}",
            tags={"stage_key": stage.key, "stage_kind": stage.kind, "attempt": str(attempt)},
            parent=ctx.parent_run_id,
        )
        tracker.params(run_id, {"stage_key": stage.key, **stage.config})
        tracker.artifact(run_id, store.path(stage.key, "config.json"))
    logger = StageLogger(tracker, run_id, store.path(stage.key, "log.txt"))
    try:
        outputs, summary = run_stage(stage, store, logger, ctx)
        store.mark_done(stage.key, outputs, mlflow_run_id=run_id, summary=summary)
        if tracker and run_id:
            final = {f"final.{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
            tracker.metrics(run_id, final, step=0)
            tracker.artifact(run_id, store.path(stage.key, "log.txt"))
            tracker.end(run_id, "FINISHED")
        return {"key": stage.key, "state": "done", "run_id": run_id}
    except KeyboardInterrupt:
        store.mark_failed(stage.key, "interrupted by the user", state="interrupted")
        if tracker and run_id:
            tracker.end(run_id, "KILLED")
        raise
    except BaseException as exc:
        err = f"{type(exc).__name__}: {exc}"
        logger.text("FAILED\n" + traceback.format_exc())
        store.mark_failed(stage.key, err)
        if tracker and run_id:
            tracker.end(run_id, "FAILED")
        raise


class Executor:
    name = "base"

    def run(self, stages: list[Stage], ctx: RunContext) -> RunSummary:
        raise NotImplementedError  # abstract


def _ready(stage: Stage, done: set[str]) -> bool:
    return all(u in done for u in stage.upstream)


class InlineExecutor(Executor):
    name = "inline"

    def run(self, stages: list[Stage], ctx: RunContext) -> RunSummary:
        summary = RunSummary()
        store = Store(ctx.store_root)
        done = {s.key for s in stages if store.is_done(s.key)}
        # upstream stages not in `stages` (already done earlier) count as done
        all_keys = {s.key for s in stages}
        done |= {u for s in stages for u in s.upstream if u not in all_keys and store.is_done(u)}
        bad: set[str] = set()
        for i, s in enumerate(stages):
            if s.key in done:
                summary.skipped.append(s.key)
                continue
            if any(u in bad for u in s.upstream) or not _ready(s, done):
                summary.blocked.append(s.key)
                bad.add(s.key)
                continue
            log.info("[%d/%d] %s %s", i + 1, len(stages), s.key, s.label)
            try:
                execute_stage(s.to_json(), ctx)
            except KeyboardInterrupt:
                summary.interrupted = True
                return summary
            except Exception as exc:
                summary.failed[s.key] = f"{type(exc).__name__}: {exc}"
                bad.add(s.key)
                continue
            summary.ran.append(s.key)
            done.add(s.key)
        return summary


class LocalExecutor(Executor):
    """submitit `LocalExecutor`: each stage a subprocess, dependency-aware, bounded parallelism."""

    name = "local"

    def __init__(self, folder: Path, max_parallel: int = 1, timeout_min: int = 24 * 60, poll_s: float = 0.5) -> None:
        self.folder = Path(folder)
        self.max_parallel = max(1, max_parallel)
        self.timeout_min = timeout_min
        self.poll_s = poll_s

    def run(self, stages: list[Stage], ctx: RunContext) -> RunSummary:
        import submitit

        executor = submitit.LocalExecutor(folder=str(self.folder / "%j"))
        executor.update_parameters(timeout_min=self.timeout_min)
        summary = RunSummary()
        store = Store(ctx.store_root)
        all_keys = {s.key for s in stages}
        done = {s.key for s in stages if store.is_done(s.key)}
        done |= {u for s in stages for u in s.upstream if u not in all_keys and store.is_done(u)}
        summary.skipped = [s.key for s in stages if s.key in done]
        pending = [s for s in stages if s.key not in done]
        running: dict[str, Any] = {}
        bad: set[str] = set()
        try:
            while pending or running:
                for key, job in list(running.items()):
                    if not job.done():
                        continue
                    del running[key]
                    try:
                        job.result()
                        summary.ran.append(key)
                        done.add(key)
                    except Exception as exc:  # submitit wraps the remote traceback
                        summary.failed[key] = _short_error(exc)
                        bad.add(key)
                for s in list(pending):
                    if any(u in bad for u in s.upstream):
                        pending.remove(s)
                        summary.blocked.append(s.key)
                        bad.add(s.key)
                    elif len(running) < self.max_parallel and _ready(s, done):
                        pending.remove(s)
                        log.info("submit %s %s", s.key, s.label)
                        running[s.key] = executor.submit(execute_stage, s.to_json(), ctx)
                if running:
                    time.sleep(self.poll_s)
                elif pending and not any(_ready(s, done) for s in pending):
                    # nothing runnable and nothing running: remaining stages depend on missing work
                    summary.blocked.extend(s.key for s in pending)
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            for key, job in running.items():
                job.cancel(check=False)
                store.mark_failed(key, "interrupted by the user", state="interrupted")
        return summary


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    last = [ln for ln in text if ln.strip()]
    return last[-1] if last else type(exc).__name__


def make_executor(name: str, results: Path, max_parallel: int = 1) -> Executor:
    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(results / "submitit", max_parallel=max_parallel)
    # (the CLI gives each parallel stage cpu_count // max_parallel torch threads)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
