"""The inline executor: every stage in the calling process, in topological order."""

from __future__ import annotations

import logging

from bench.execute import Executor, RunSummary, ready
from bench.job import JobContext, execute_stage
from bench.plan import Stage
from bench.store import Store

log = logging.getLogger(__name__)


class InlineExecutor(Executor):
    name = "inline"

    def run(self, stages: list[Stage], ctx: JobContext) -> RunSummary:
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
            if any(u in bad for u in s.upstream) or not ready(s, done):
                summary.blocked.append(s.key)
                bad.add(s.key)
                continue
            log.info("[%d/%d] %s %s", i + 1, len(stages), s.key, s.label)
            try:
                result = execute_stage(s.to_json(), ctx)
            except KeyboardInterrupt:
                summary.interrupted = True
                return summary
            except Exception as exc:
                summary.failed[s.key] = f"{type(exc).__name__}: {exc}"
                bad.add(s.key)
                continue
            if result.get("state") == "held":
                summary.blocked.append(s.key)  # another process holds it and we were told not to wait
                bad.add(s.key)
                continue
            (summary.skipped if result.get("skipped") else summary.ran).append(s.key)
            done.add(s.key)
        return summary
