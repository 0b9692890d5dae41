"""`bench status`: every stage of a matrix from the store, the cluster manifest and SLURM.

The store says what finished (done, failed, interrupted, requeued); the manifest and
`squeue` say what is queued or running now. A stage whose upstream failed and that
is not queued is *blocked*. Failed stages show the last lines of their log.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.execute.manifest import ACTIVE, Manifest
from bench.plan import KINDS, Plan
from bench.store import Store


@dataclass
class StageRow:
    key: str
    kind: str
    label: str
    state: str  # done, running, queued, requeued, failed, interrupted, blocked, pending
    job: str = ""
    attempts: int = 0
    error: str = ""
    log: str = ""
    seconds: float | None = None


def stage_states(plan: Plan, store: Store, results: Path) -> list[StageRow]:
    records = Manifest(results / "slurm" / plan.matrix.name).latest()
    live: dict[str, str] = {}
    if records:
        import shutil

        if shutil.which("squeue"):
            from bench.execute.slurm import squeue_states

            live = squeue_states([r.job_id for r in records.values()])
    rows: list[StageRow] = []
    state_of: dict[str, str] = {}
    for s in plan.ordered():
        st = store.status(s.key)
        rec = records.get(s.key)
        job_state = live.get(rec.job_id, "") if rec else ""
        if store.is_done(s.key):
            state = "done"
        elif job_state in ACTIVE:
            state = "running" if job_state in ("RUNNING", "COMPLETING") else ("requeued" if st.get("state") == "requeued" else "queued")
        elif st.get("state") == "running" and not rec:
            state = "running"  # a local/inline run in progress (its lock is live)
        elif st.get("state") in ("failed", "interrupted", "requeued"):
            state = st["state"]
        elif any(state_of.get(u) in ("failed", "blocked") for u in s.upstream):
            state = "blocked"
        elif rec and rec.state == "CANCELLED":
            state = "cancelled"
        else:
            state = "pending"
        state_of[s.key] = state
        seconds = None
        if st.get("started"):
            seconds = float(st.get("finished") or time.time()) - float(st["started"]) if state != "pending" else None
        rows.append(
            StageRow(
                s.key, s.kind, s.label, state, rec.job_id if rec else "", int(st.get("attempts", 0)), st.get("error") or "",
                str(store.path(s.key, "log.txt")), seconds,
            )
        )
    return rows


def format_status(plan: Plan, rows: list[StageRow], tail: int = 5) -> str:
    from bench.execute.slurm import log_tail

    lines = []
    for r in rows:
        job = f" job {r.job}" if r.job else ""
        extra = f"  {r.error}" if r.error and r.state != "done" else ""
        lines.append(f"{r.state:12s} {r.key}  {r.label}{job}{extra}")
        if r.state == "failed" and tail:
            t = log_tail(r.log, tail)
            if t:
                lines.extend("      | " + ln for ln in t.splitlines())
    lines.append("")
    lines.append(f"{'kind':10s} " + " ".join(f"{s:>11s}" for s in ("done", "running", "queued", "failed", "blocked", "other", "total")))
    for kind in KINDS:
        c = Counter(r.state for r in rows if r.kind == kind)
        total = sum(c.values())
        if not total:
            continue
        other = total - sum(c[s] for s in ("done", "running", "queued", "failed", "blocked"))
        lines.append(f"{kind:10s} " + " ".join(f"{v:>11d}" for v in (c["done"], c["running"], c["queued"] + c["requeued"], c["failed"], c["blocked"], other, total)))
    counts = Counter(r.state for r in rows)
    lines.append("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    done = [r for r in rows if r.state == "done" and r.seconds]
    left = [r for r in rows if r.state in ("running", "queued", "requeued", "pending", "interrupted")]
    if done and left:
        per_kind = {k: sum(r.seconds or 0 for r in done if r.kind == k) / max(1, sum(1 for r in done if r.kind == k)) for k in KINDS}
        eta = sum(per_kind.get(r.kind, 0.0) for r in left)
        lines.append(f"remaining work: ~{eta / 3600:.1f} stage-hours at the mean duration of finished stages of each kind")
    return "\n".join(lines)
