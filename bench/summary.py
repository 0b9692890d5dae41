"""Per-experiment summary tables for `bench plan` and `bench status`.

A study of hundreds of stages is read by experiment, not by stage: how many of each
experiment's stages are done, to do or failed, what they are estimated to cost
(GPU-hours on a reference device, `bench.execute.estimate`) and how long the finished
ones took. Shared stages (one pre-training feeding several experiments) count for
every experiment they serve.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.plan import Plan


def experiment_stages(plan: Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c in plan.cells:
        for key in (c.pretrain_key, c.finetune_key, c.evaluate_key):
            if key and key in plan.stages and key not in out[c.experiment]:
                out[c.experiment].append(key)
    return out


def summary_table(plan: Plan, states: dict[str, str], elapsed: dict[str, float] | None = None, gpu: str = "a100") -> str:
    """Markdown-ish table: experiment, stages, done, todo, failed, est. GPU-h, elapsed."""
    from bench.execute.estimate import GPU_PEAK_TFLOPS, estimate

    est = {e.key: e.gpu_hours for e in estimate(plan.ordered(), GPU_PEAK_TFLOPS[gpu])}
    elapsed = elapsed or {}
    rows: list[tuple[Any, ...]] = []
    for exp, keys in experiment_stages(plan).items():
        st = [states.get(k, "pending") for k in keys]
        done = sum(s == "done" for s in st)
        failed = sum(s in ("failed", "blocked") for s in st)
        rows.append((exp, len(keys), done, len(keys) - done - failed, failed, sum(est.get(k, 0.0) for k in keys), sum(elapsed.get(k, 0.0) for k in keys)))
    head = f"{'experiment':14s} {'stages':>6s} {'done':>6s} {'todo':>6s} {'failed':>6s} {'est. GPU-h':>11s} {'elapsed':>9s}"
    lines = [head, "-" * len(head)]
    for exp, n, d, t, f, gh, el in rows:
        lines.append(f"{exp:14s} {n:6d} {d:6d} {t:6d} {f:6d} {gh:11.1f} {_hms(el):>9s}")
    tot_keys = list(plan.stages)
    lines.append(
        f"{'all (unique)':14s} {len(tot_keys):6d} {sum(states.get(k) == 'done' for k in tot_keys):6d} "
        f"{sum(states.get(k, 'pending') not in ('done', 'failed', 'blocked') for k in tot_keys):6d} "
        f"{sum(states.get(k) in ('failed', 'blocked') for k in tot_keys):6d} {sum(est.get(k, 0.0) for k in tot_keys):11.1f} "
        f"{_hms(sum(elapsed.get(k, 0.0) for k in tot_keys)):>9s}"
    )
    lines.append(f"(est. GPU-h: FLOP model on {gpu} at 35% utilisation; elapsed: wall time of finished and running stages)")
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    if not seconds:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
