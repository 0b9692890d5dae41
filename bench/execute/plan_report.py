"""`bench plan MATRIX --executor slurm`: the jobs, arrays, dependencies, resources and GPU-hours.

Built from the same grouping the SLURM executor submits with, so what is shown is
what `bench run --executor slurm` would do; warns about missing data roots and
initialisation weights before anything is submitted.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.execute.estimate import DEFAULT_MFU, GPU_PEAK_TFLOPS, estimate
from bench.execute.resources import resolve
from bench.plan import KINDS, Plan


def _peak(gpu: str) -> tuple[str, float]:
    try:
        return f"{float(gpu):.0f} TFLOP/s", float(gpu)
    except ValueError:
        pass
    if gpu.lower() not in GPU_PEAK_TFLOPS:
        raise ValueError(f"--gpu {gpu!r}: not one of {', '.join(GPU_PEAK_TFLOPS)} (or give a peak in TFLOP/s)")
    return gpu.lower(), GPU_PEAK_TFLOPS[gpu.lower()]


def missing_inputs(plan: Plan, done: set[str]) -> list[str]:
    """Data roots and weight files pending stages need but that do not exist here."""
    warnings: list[str] = []
    roots: dict[str, str] = {}
    for s in plan.ordered():
        if s.key in done:
            continue
        for site, root in s.paths.items():
            if not Path(root).exists():
                roots[site] = root
        init = s.config.get("init", "random")
        # a demo twin's stand-in weights are written by `bench run` itself
        standin = plan.matrix.data.standin_weights
        if s.kind in ("pretrain", "finetune") and init not in ("random",) and not init.startswith("stage:") and not standin:
            msg = _weights_problem(s.config.get("backbone", ""), init, plan.matrix.data.weights)
            if msg and msg not in warnings:
                warnings.append(msg)
    warnings = [f"data root for site {k!r} does not exist: {v}" for k, v in sorted(roots.items())] + warnings
    return warnings


def _weights_problem(backbone: str, init: str, weights_dir: str | None = None) -> str | None:
    if init.startswith("file:"):
        p = Path(init[5:]).expanduser()
        return None if p.exists() else f"init weights file does not exist: {p}"
    import backbones
    from backbones.weights import resolve_pretrained_file

    try:
        resolve_pretrained_file(backbones.get_spec(backbone), init, weights_dir)
    except Exception as exc:  # the loader's own message says how to point at a local file
        return f"{backbone} init {init!r}: {str(exc).splitlines()[0]}"
    return None


def describe_cluster_plan(plan: Plan, done: set[str], layers: tuple[dict[str, Any], ...], gpu: str = "a100", mfu: float = DEFAULT_MFU) -> str:
    from bench.execute.slurm import SlurmExecutor

    gpu_name, peak = _peak(gpu)
    stages = plan.ordered()
    todo = {s.key for s in stages if s.key not in done}
    groups = SlurmExecutor.groups(None, stages, todo)  # type: ignore[arg-type]
    est = {e.key: e for e in estimate(stages, peak, mfu)}
    lines = ["", f"SLURM submission ({len(todo)} stages to submit, {len(done)} done):"]
    job_of: dict[str, str] = {}
    gpu_hours: dict[str, float] = defaultdict(float)
    per_exp: dict[str, float] = defaultdict(float)
    exp_of = _experiments_of(plan)
    for i, g in enumerate(groups, 1):
        kind = g[0].kind
        res = resolve(kind, *layers)
        name = f"J{i}"
        for s in g:
            job_of[s.key] = name if len(g) == 1 else f"{name}[{g.index(s)}]"
        deps = sorted({job_of[u].split("[")[0] for s in g for u in s.upstream if u in job_of})
        gpus = max(1, res.gpus_per_node * res.nodes)
        hours = sum(est[s.key].gpu_hours for s in g)
        for s in g:
            gh = est[s.key].gpu_hours
            gpu_hours[kind] += gh
            for e in exp_of.get(s.key, []):
                per_exp[e] += gh / len(exp_of[s.key])
        wall = hours / gpus / max(1, min(len(g), res.array_parallelism)) if len(g) > 1 else hours / gpus
        shape = f"array of {len(g)}" if len(g) > 1 else "job"
        lines.append(
            f"  {name:5s} {kind:9s} {shape:12s} {res.nodes}x{res.tasks_per_node} tasks, {res.gpus_per_node} GPU/node, "
            f"{res.cpus_per_task} CPU, {res.mem_gb:g} GB, {res.timeout_min} min"
            + (f", {res.partition}" if res.partition else "")
            + (f"  after {','.join(deps)}" if deps else "")
            + f"  ~{hours:.1f} GPU-h (~{wall:.1f} h wall)"
        )
        if any(est[s.key].gpu_hours / gpus * 60 > res.timeout_min for s in g) and kind != "evaluate":
            lines.append(f"        note: longer than the {res.timeout_min}-min limit; it will checkpoint and requeue itself")
    lines.append("")
    lines.append(f"estimated GPU-hours on {gpu_name} at {mfu:.0%} model FLOP utilisation (FLOP model of bench/compute.py):")
    for kind in KINDS:
        if gpu_hours.get(kind):
            lines.append(f"  {kind:9s} {gpu_hours[kind]:10.1f}")
    lines.append(f"  {'total':9s} {sum(gpu_hours.values()):10.1f}   in {len(groups)} submissions ({sum(1 for g in groups if len(g) > 1)} arrays)")
    if per_exp:
        lines.append("per experiment (shared stages split evenly): " + ", ".join(f"{e} {h:.1f}" for e, h in per_exp.items()))
    warns = missing_inputs(plan, done)
    for w in warns:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


def _experiments_of(plan: Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c in plan.cells:
        for k in (c.pretrain_key, c.finetune_key, c.evaluate_key):
            if k and c.experiment not in out[k]:
                out[k].append(c.experiment)
    return out
