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
from abc import ABC, abstractmethod
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


def execute_chain(stage_jsons: list[dict[str, Any]], ctx: RunContext) -> list[dict[str, Any]]:
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


class Executor(ABC):
    name = "base"

    @abstractmethod
    def run(self, stages: list[Stage], ctx: RunContext) -> RunSummary:
        """Run the not-yet-done `stages` (topologically ordered) and say what happened to each."""


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

        executor = submitit.LocalExecutor(folder=str(self.folder))
        executor.update_parameters(timeout_min=self.timeout_min)
        summary = RunSummary()
        store = Store(ctx.store_root)
        all_keys = {s.key for s in stages}
        done = {s.key for s in stages if store.is_done(s.key)}
        done |= {u for s in stages for u in s.upstream if u not in all_keys and store.is_done(u)}
        summary.skipped = [s.key for s in stages if s.key in done]
        # critical path first: a pre-training blocks many fine-tunes, so start those before anything else
        rank = {"pretrain": 0, "finetune": 1, "evaluate": 2}
        pending = sorted((s for s in stages if s.key not in done), key=lambda s: rank.get(s.kind, 3))
        running: dict[str, tuple[Any, list[Stage]]] = {}
        bad: set[str] = set()
        total, finished = len(pending), 0
        started: dict[str, float] = {}
        try:
            while pending or running:
                for key, (job, chain) in list(running.items()):
                    if not job.done():
                        continue
                    del running[key]
                    try:
                        results = job.result()
                    except Exception as exc:  # the job itself died (submitit wraps the remote traceback)
                        results = [{"key": c.key, "state": "failed", "error": _short_error(exc)} for c in chain]
                    for c, r in zip(chain, results):
                        finished += 1
                        if r["state"] == "done":
                            summary.ran.append(c.key)
                            done.add(c.key)
                            log.info("[%d/%d] done %s (%s) after %.0fs", finished, total, c.label, c.key, time.time() - started[key])
                        elif r["state"] == "blocked":
                            summary.blocked.append(c.key)
                            bad.add(c.key)
                        else:
                            summary.failed[c.key] = r.get("error", "failed")
                            bad.add(c.key)
                            log.error("[%d/%d] FAILED %s (%s): %s", finished, total, c.label, c.key, summary.failed[c.key])
                for s in list(pending):
                    if s not in pending:
                        continue  # taken into an earlier chain in this pass
                    if any(u in bad for u in s.upstream):
                        pending.remove(s)
                        summary.blocked.append(s.key)
                        bad.add(s.key)
                    elif len(running) < self.max_parallel and _ready(s, done):
                        chain = [s] + [c for c in pending if c.kind == "evaluate" and c.upstream == [s.key]]
                        for c in chain:
                            pending.remove(c)
                        log.info("submit %s (%s)%s", s.label, s.key, f" + {len(chain) - 1} evaluations" if len(chain) > 1 else "")
                        started[s.key] = time.time()
                        running[s.key] = (executor.submit(execute_chain, [c.to_json() for c in chain], ctx), chain)
                if running:
                    time.sleep(self.poll_s)
                elif pending and not any(_ready(s, done) for s in pending):
                    # nothing runnable and nothing running: remaining stages depend on missing work
                    summary.blocked.extend(s.key for s in pending)
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            for key, (job, chain) in running.items():
                job.cancel(check=False)
                for c in chain:
                    if not store.is_done(c.key) and store.status(c.key).get("state") == "running":
                        store.mark_failed(c.key, "interrupted by the user", state="interrupted")
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
