"""Executors: where and when the stages of a plan run. One module per executor.

All share one interface, `Executor.run(stages, ctx) -> RunSummary`; the job body
(`bench.job`) is the same for all of them, so stage code never knows its launcher.

- `inline`: in this process, topological order. Simplest to debug.
- `local`: submitit's `LocalExecutor`; each stage chain is a subprocess, dependency-aware,
  bounded parallelism; the command waits for the end.
- `slurm`: submitit's `SlurmExecutor`; the whole DAG is submitted at once with
  `afterok` dependencies and job arrays, recorded in a manifest; the command returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.job import JobContext
from bench.plan import Stage

EXECUTORS = ("inline", "local", "slurm")


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done before this run
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    blocked: list[str] = field(default_factory=list)  # upstream failed
    interrupted: bool = False
    submitted: dict[str, str] = field(default_factory=dict)  # key -> job id (cluster executors)
    queued: dict[str, str] = field(default_factory=dict)  # key -> job id already queued/running before this run

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.interrupted


class Executor(ABC):
    name = "base"
    waits = True  # False: `run` returns after submitting (cluster executors)

    @abstractmethod
    def run(self, stages: list[Stage], ctx: JobContext) -> RunSummary:
        """Run the not-yet-done `stages` (topologically ordered) and say what happened to each."""


def ready(stage: Stage, done: set[str]) -> bool:
    return all(u in done for u in stage.upstream)


def make_executor(name: str, results: Path, max_parallel: int = 1, **options: Any) -> Executor:
    if name == "inline":
        from bench.execute.inline import InlineExecutor

        return InlineExecutor()
    if name == "local":
        from bench.execute.local import LocalExecutor

        return LocalExecutor(results / "submitit", max_parallel=max_parallel)
    if name == "slurm":
        from bench.execute.slurm import SlurmExecutor

        return SlurmExecutor(results, **options)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
