"""The SLURM executor: submit the whole DAG at once through submitit and return.

- One job per stage; siblings that share their upstream stages and stage kind (the
  seeds of a fine-tune, the evaluations of a fine-tune) become one job array, with
  `afterok:` dependencies on the upstream jobs, so nothing waits in `bench run`.
- `results/slurm/<matrix>/manifest.jsonl` records stage -> job; a second `bench run`
  skips done stages and stages whose job is still queued or running, resubmits
  interrupted/requeued ones, and resubmits failed ones only with `--retry-failed`
  (their dependants come with them, depending on the new jobs).
- A failing job fails only its dependants (SLURM cancels them: `kill_invalid_depend`,
  or they stay `DependencyNeverSatisfied`, which `bench status` reports as blocked).
- Jobs import a content-addressed snapshot of the code (`snapshot.py`).
- Training stages follow submitit's checkpoint protocol (`StageJob.checkpoint`): on
  SIGUSR2 before the time limit (or on preemption) the loop writes a checkpoint at a
  consistent step and the job requeues itself; the restarted job resumes from the
  newest checkpoint in the store, never from state in the pickle.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import preempt
from bench.execute import Executor, RunSummary
from bench.execute.manifest import ACTIVE, JobRecord, Manifest
from bench.execute.resources import SlurmResources, resolve
from bench.job import JobContext, execute_stage
from bench.plan import Stage
from bench.store import Store

log = logging.getLogger(__name__)


class SlurmError(RuntimeError):
    pass


class StageJob:
    """The callable a SLURM job runs: one stage, checkpointable in submitit's protocol.

    (submitit checks `hasattr(fn, "checkpoint")`; we do not subclass
    `helpers.Checkpointable` because its `__new__` captures the call arguments, which we
    want to stay the plain stage description.)
    """

    def __call__(self, stage_json: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        try:
            result = execute_stage(stage_json, ctx)
        except preempt.Preempted as exc:
            if exc.signum == getattr(signal, "SIGUSR2", None):
                self._requeue(stage_json, ctx)
            raise
        if result.get("state") == "held":
            raise SlurmError(f"stage {stage_json['key']} is held by another process and ctx.wait_for_holder is off")
        return result

    def checkpoint(self, stage_json: dict[str, Any], ctx: JobContext) -> Any:
        """Requeue with the same arguments: the stage resumes from its checkpoint on disk."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, stage_json, ctx)

    def _requeue(self, stage_json: dict[str, Any], ctx: JobContext) -> None:
        """Run submitit's own requeue path now that the checkpoint is on disk (rank 0 requeues, all exit)."""
        import submitit
        from submitit.core.job_environment import SignalHandler
        from submitit.core.utils import DelayedSubmission

        env = submitit.JobEnvironment()
        delayed = DelayedSubmission.load(env.paths.submitted_pickle)
        SignalHandler(env, env.paths, delayed).checkpoint_and_try_requeue(signal.SIGUSR2)
        sys.exit(-1)  # non-zero ranks return from the handler: leave too (rank 0 requeued the job)


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Live SLURM states of jobs (array tasks as `<id>_<index>`); jobs SLURM forgot are absent.

    Uses `squeue` (works without accounting) and falls back to `scontrol show job` for
    recently finished jobs, which squeue no longer lists.
    """
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    res = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=60
    )
    for line in res.stdout.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            out[jid] = state
    missing = [j for j in job_ids if j not in out]
    for arr in sorted({j.split("_")[0] for j in missing}):
        res = subprocess.run(["scontrol", "-o", "show", "job", arr], capture_output=True, text=True, timeout=60)
        for line in res.stdout.splitlines():
            fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            jid = fields.get("JobId", "")
            if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
                jid = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            if jid:
                out.setdefault(jid, fields.get("JobState", "UNKNOWN"))
    return out


class SlurmExecutor(Executor):
    name = "slurm"
    waits = False

    def __init__(
        self,
        results: Path,
        matrix_name: str = "matrix",
        resource_layers: tuple[dict[str, dict[str, Any]], ...] = (),
        retry_failed: bool = False,
        snapshot_code: bool = True,
        python: str | None = None,
    ) -> None:
        self.results = Path(results)
        self.folder = self.results / "slurm" / matrix_name
        self.manifest = Manifest(self.folder)
        self.layers = resource_layers
        self.retry_failed = retry_failed
        self.snapshot_code = snapshot_code
        self.python = python or sys.executable

    def resources(self, kind: str) -> SlurmResources:
        return resolve(kind, *self.layers)

    # ------------------------------------------------------------------ planning
    def classify(self, stages: list[Stage], store: Store) -> tuple[dict[str, str], dict[str, str], dict[str, JobRecord]]:
        """(state per stage: done|queued|failed|todo, live SLURM state per queued stage, manifest records)."""
        records = self.manifest.latest()
        live = squeue_states([r.job_id for r in records.values() if r.state != "CANCELLED"]) if records else {}
        state: dict[str, str] = {}
        for s in stages:
            rec = records.get(s.key)
            if store.is_done(s.key):
                state[s.key] = "done"
            elif rec is not None and live.get(rec.job_id) in ACTIVE:
                state[s.key] = "queued"
            elif store.status(s.key).get("state") == "failed" and not self.retry_failed:
                state[s.key] = "failed"
            else:
                state[s.key] = "todo"
        return state, {k: live.get(r.job_id, "") for k, r in records.items()}, records

    def groups(self, stages: list[Stage], todo: set[str]) -> list[list[Stage]]:
        """Job arrays: stages to submit that share kind and upstream stages, in topological order."""
        out: OrderedDict[tuple[str, tuple[str, ...]], list[Stage]] = OrderedDict()
        for s in stages:
            if s.key in todo:
                out.setdefault((s.kind, tuple(sorted(s.upstream))), []).append(s)
        return list(out.values())

    # ------------------------------------------------------------------ submitting
    def run(self, stages: list[Stage], ctx: JobContext) -> RunSummary:
        import submitit

        summary = RunSummary()
        store = Store(ctx.store_root)
        state, live, records = self.classify(stages, store)
        by_key = {s.key: s for s in stages}
        job_of: dict[str, str] = {k: records[k].job_id for k, st in state.items() if st == "queued"}
        summary.queued = dict(job_of)
        summary.skipped = [k for k, st in state.items() if st == "done"]
        failed = {k for k, st in state.items() if st == "failed"}
        for k in failed:
            summary.failed[k] = store.status(k).get("error") or "failed"
        # dependants of a failed stage (not retried) are not submitted
        blocked: set[str] = set()
        for s in stages:
            if state[s.key] == "todo" and any(u in failed or u in blocked for u in s.upstream):
                blocked.add(s.key)
        summary.blocked = sorted(blocked)
        todo = {k for k, st in state.items() if st == "todo" and k not in blocked}
        if not todo:
            return summary
        code = None
        if self.snapshot_code:
            from bench.execute.snapshot import setup_lines, snapshot

            code = snapshot(self.results / "slurm" / "code")
            log.info("code snapshot: %s", code)
        job = StageJob()
        for group in self.groups(stages, todo):
            kind = group[0].kind
            res = self.resources(kind)
            deps = sorted({job_of[u] for s in group for u in s.upstream if u in job_of})
            missing = [u for s in group for u in s.upstream if u not in job_of and not store.is_done(u) and u in by_key]
            if missing:
                raise SlurmError(f"internal: upstream {missing[0]} of {group[0].key} has no job")
            ex = submitit.SlurmExecutor(folder=str(self.folder / "jobs" / "%j"), max_num_timeout=res.max_requeues, python=self.python)
            params: dict[str, Any] = {
                "job_name": f"bench-{kind}",
                "nodes": res.nodes,
                "ntasks_per_node": res.tasks_per_node,
                "cpus_per_task": res.cpus_per_task,
                "mem": f"{int(res.mem_gb * 1024)}MB",
                "time": res.timeout_min,
                "signal_delay_s": res.signal_delay_s,
                "array_parallelism": res.array_parallelism,
                "setup": [*(setup_lines(code) if code else []), *res.setup],
                "additional_parameters": {"requeue": True, **res.additional},
            }
            if res.gpus_per_node:
                params["gpus_per_node"] = res.gpus_per_node
            for opt in ("partition", "account", "qos", "constraint"):
                if getattr(res, opt):
                    params[opt] = getattr(res, opt)
            if deps:
                params["dependency"] = "afterok:" + ":".join(deps)
            ex.update_parameters(**params)
            env = replace(ctx.env, device="cuda" if res.gpus_per_node else ctx.env.device, threads=res.cpus_per_task)
            jctx = replace(ctx, env=env)
            if len(group) == 1:
                jobs = [ex.submit(job, group[0].to_json(), jctx)]
            else:
                with ex.batch():
                    pending = [ex.submit(job, s.to_json(), jctx) for s in group]
                jobs = pending
            recs = []
            for s, j in zip(group, jobs):
                job_of[s.key] = str(j.job_id)
                summary.submitted[s.key] = str(j.job_id)
                prev = records.get(s.key)
                recs.append(
                    JobRecord(
                        key=s.key,
                        job_id=str(j.job_id),
                        kind=s.kind,
                        label=s.label,
                        attempt=(prev.attempt + 1) if prev else 1,
                        log=str(j.paths.stdout),
                        dependency=params.get("dependency", ""),
                    )
                )
            self.manifest.append(recs)
            log.info("submitted %d %s job(s) as %s%s", len(group), kind, jobs[0].job_id.split("_")[0], f" after {','.join(deps)}" if deps else "")
        return summary

    # ------------------------------------------------------------------ following / cancelling
    def wait(self, keys: list[str], store: Store, poll_s: float = 5.0, timeout_s: float | None = None, on_poll: Any = None) -> dict[str, str]:
        """Block until none of `keys` is queued or running; returns the final state per key."""
        t0 = time.time()
        while True:
            records = self.manifest.latest()
            live = squeue_states([records[k].job_id for k in keys if k in records])
            active = [k for k in keys if k in records and live.get(records[k].job_id) in ACTIVE and not store.is_done(k)]
            if on_poll is not None:
                on_poll()
            if not active:
                break
            if timeout_s is not None and time.time() - t0 > timeout_s:
                raise TimeoutError(f"{len(active)} stage(s) still queued or running after {timeout_s:.0f}s")
            time.sleep(poll_s)
        return {k: ("done" if store.is_done(k) else store.status(k).get("state", "pending")) for k in keys}

    def cancel(self, keys: list[str]) -> list[JobRecord]:
        """scancel the queued/running jobs of `keys` and record them as cancelled in the manifest."""
        records = self.manifest.latest()
        recs = [records[k] for k in keys if k in records]
        live = squeue_states([r.job_id for r in recs])
        todo = [r for r in recs if live.get(r.job_id) in ACTIVE]
        if todo:
            subprocess.run(["scancel", *[r.job_id for r in todo]], check=True, capture_output=True, text=True, timeout=120)
        out = []
        for r in todo:
            r.state = "CANCELLED"
            out.append(r)
        self.manifest.append(out)
        return out


def log_tail(path: str | os.PathLike[str], lines: int = 8) -> str:
    """Last lines of a stage log or a job's stderr, for `bench status`."""
    p = Path(path)
    if not p.exists():
        return ""
    with open(p, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 8192))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
