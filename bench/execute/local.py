"""The local executor: submitit `LocalExecutor` subprocesses, dependency-aware, bounded parallelism.

A stage chain (a fine-tune and its evaluations) is submitted once all its upstream
stages are done, at most `max_parallel` at once, pre-trainings first (critical path).

Stopping: Ctrl-C or SIGTERM to `bench` reaches every worker. Each worker gets SIGTERM
(its training loop checkpoints at the next step and exits), then, after `grace_s`,
SIGKILL for it and its children; the coordinator waits for all of them, so no
process outlives `bench`. A worker that dies from outside (OOM killer, `kill -9`) is
reported with its exit status and its stage marked interrupted, never left `running`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.execute import Executor, RunSummary, ready
from bench.job import JobContext, execute_chain
from bench.plan import Stage
from bench.store import Store, pid_alive

log = logging.getLogger(__name__)


def descendants(pid: int) -> list[int]:
    """All live descendant pids of `pid` (from /proc; no psutil dependency)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def stop_process_tree(pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM the job's tasks (graceful checkpoint), wait up to `grace_s`, then SIGKILL what is left.

    Only the submitit controller's direct children (the tasks) get SIGTERM, exactly once:
    a second signal means "stop now" to the job body, and a task's own helpers (data
    loader workers) must not die before it has written its checkpoint.
    """
    tree = [pid, *descendants(pid)]
    tasks = [c for c in tree if c != pid and _ppid(c) == pid] or [pid]
    for p in tasks:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline and any(pid_alive(p) for p in tree):
        time.sleep(0.1)
    for p in [*tree, *descendants(pid)]:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, folder: Path, max_parallel: int = 1, timeout_min: int = 24 * 60, poll_s: float = 0.5, grace_s: float = 60.0) -> None:
        self.folder = Path(folder)
        self.max_parallel = max(1, max_parallel)
        self.timeout_min = timeout_min
        self.poll_s = poll_s
        self.grace_s = grace_s

    def run(self, stages: list[Stage], ctx: JobContext) -> RunSummary:
        executor = _executor_class()(folder=str(self.folder))
        executor.update_parameters(timeout_min=self.timeout_min)
        summary = RunSummary()
        store = Store(ctx.store_root)
        all_keys = {s.key for s in stages}
        done = {s.key for s in stages if store.is_done(s.key)}
        done |= {u for s in stages for u in s.upstream if u not in all_keys and store.is_done(u)}
        summary.skipped = [s.key for s in stages if s.key in done]
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
                    except Exception as exc:  # the job died (killed, OOM) or raised outside the job body
                        results = [self._died(store, c, job, exc) for c in chain]
                    for c, r in zip(chain, results):
                        finished += 1
                        if r["state"] == "done":
                            (summary.skipped if r.get("skipped") else summary.ran).append(c.key)
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
                    elif len(running) < self.max_parallel and ready(s, done):
                        chain = [s] + [c for c in pending if c.kind == "evaluate" and c.upstream == [s.key]]
                        for c in chain:
                            pending.remove(c)
                        log.info("submit %s (%s)%s", s.label, s.key, f" + {len(chain) - 1} evaluations" if len(chain) > 1 else "")
                        started[s.key] = time.time()
                        running[s.key] = (executor.submit(execute_chain, [c.to_json() for c in chain], ctx), chain)
                if running:
                    time.sleep(self.poll_s)
                elif pending and not any(ready(s, done) for s in pending):
                    summary.blocked.extend(s.key for s in pending)
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("stopping %d running job(s): SIGTERM, then SIGKILL after %.0f s", len(running), self.grace_s)
            procs = [p for p in (getattr(job, "_process", None) for job, _ in running.values()) if p is not None]
            try:
                for proc in procs:
                    if proc.poll() is None:
                        stop_process_tree(proc.pid, self.grace_s)
                        proc.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: no more grace (the jobs run in their own sessions)
                for proc in procs:
                    if proc.poll() is None:
                        stop_process_tree(proc.pid, 0.0)
                        proc.wait()
            for job, chain in running.values():
                for c in chain:
                    if store.status(c.key).get("state") == "running":
                        store.mark_failed(c.key, "interrupted: bench was stopped", state="interrupted")
        return summary

    @staticmethod
    def _died(store: Store, stage: Stage, job: Any, exc: BaseException) -> dict[str, Any]:
        """A job without a result: name the exit status; a stage it left `running` becomes interrupted."""
        proc = getattr(job, "_process", None)
        code = proc.returncode if proc is not None else None
        if code is not None and code < 0:
            how = f"the job process was killed by signal {signal.Signals(-code).name}"
        elif code is not None:
            how = f"the job process exited with status {code} without a result"
        else:
            how = "the job ended without a result"
        last = _short_error(exc)
        if store.status(stage.key).get("state") == "running":
            store.mark_failed(stage.key, f"{how} (stage interrupted; it resumes on the next run)", state="interrupted")
            return {"key": stage.key, "state": "failed", "error": how}
        if store.is_done(stage.key):
            return {"key": stage.key, "state": "done"}
        err = store.status(stage.key).get("error") or last
        return {"key": stage.key, "state": "failed", "error": f"{how}: {err}"}


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    last = [ln for ln in text if ln.strip() and "submitit INFO" not in ln]
    return last[-1] if last else type(exc).__name__


def _executor_class():  # -> type[submitit.LocalExecutor]
    """submitit's local executor, launching `_controller_main` instead of submitit's controller.

    Why: (1) submitit's controller exits 0 when its task is killed, so a worker killed from
    outside (OOM killer, `kill -9`) could not be told from one that ended without a
    result; ours ends with the task's fate (the same signal, or its exit status).
    (2) Each job gets its own session, so a Ctrl-C in the terminal reaches only `bench`,
    which then stops the workers in order (SIGTERM -> checkpoint at a step -> SIGKILL after
    the grace period); before, the worker also got the terminal's SIGINT and the
    controller forwarded another, and the second signal skipped the graceful checkpoint.
    (3) The parent's CUDA_VISIBLE_DEVICES is kept (submitit sets it to the job's
    `gpus_per_node`, i.e. empty: no GPU for `bench run --device cuda`).
    """
    import submitit
    from submitit.local.local import LocalJob

    class _LocalExecutor(submitit.LocalExecutor):
        def _submit_command(self, command: str) -> LocalJob:
            env = {
                **os.environ,
                "SUBMITIT_LOCAL_NTASKS": "1",
                "SUBMITIT_LOCAL_COMMAND": command,
                "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * self.parameters.get("timeout_min", 2.0))),
                "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(int(self.parameters.get("signal_delay_s", 30))),
                "SUBMITIT_LOCAL_NODEID": "0",
                "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                "SUBMITIT_STDERR_TO_STDOUT": "",
                "SUBMITIT_EXECUTOR": "local",
                "SUBMITIT_LOCAL_WITH_SHELL": "",
            }
            proc = subprocess.Popen([sys.executable, "-m", "bench.execute.local", str(self.folder)], env=env, start_new_session=True)
            return LocalJob(folder=self.folder, job_id=str(proc.pid), process=proc, tasks=[0])

    return _LocalExecutor


def _controller_main(folder: str) -> int:
    """Run submitit's job controller; end like its task did (killed by a signal: the same signal)."""
    from submitit.local.local import Controller

    class _Controller(Controller):
        codes: list[int | None] = []

        def wait(self, freq: int = 24) -> list[int | None]:
            self.codes = list(super().wait(freq))
            return self.codes

    controller = _Controller(Path(folder))
    controller.run()
    code = next((c for c in controller.codes if c), 0) or 0
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot have (or need) a handler reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(_controller_main(sys.argv[1]))
