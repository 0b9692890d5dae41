"""The plan: a DAG of content-keyed stages, pre-train -> fine-tune x seeds -> evaluate x sites.

A stage's key is a hash of its normalised configuration and its upstream keys, so
identical work is one stage wherever it appears: two experiments that need the same
pre-training share it, and an evaluation target used by two report columns (e.g.
"NIH 14 class avg." and "NIH 5 class avg." on the same test split) is one evaluate
stage. Keys do not depend on where data lives on disk (paths are resolved into
`Stage.paths`, outside the key) so results stay valid when a dataset moves.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.matrix import EvalTarget, Experiment, Matrix

KINDS = ("pretrain", "finetune", "evaluate")
KEY_VERSION = 1  # bump when the meaning of a stage config changes incompatibly


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(kind: str, config: dict[str, Any], upstream: list[str]) -> str:
    digest = hashlib.sha256(
        _canonical({"v": KEY_VERSION, "kind": kind, "config": config, "upstream": sorted(upstream)}).encode()
    ).hexdigest()
    return f"{kind}-{digest[:16]}"


@dataclass
class Stage:
    key: str
    kind: str
    config: dict[str, Any]
    upstream: list[str]
    paths: dict[str, str] = field(default_factory=dict)  # site name -> data root (not part of the key)
    label: str = ""  # human-readable, e.g. "3.4 seed 1 on chexpert/val"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "config": self.config,
            "upstream": self.upstream,
            "paths": self.paths,
            "label": self.label,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Stage":
        return cls(**d)


@dataclass
class ReportCell:
    """One (experiment, seed, report column) -> the evaluate stage that scores it."""

    experiment: str
    seed: int
    target: EvalTarget
    finetune_key: str
    evaluate_key: str
    pretrain_key: str | None


@dataclass
class Plan:
    matrix: Matrix
    stages: dict[str, Stage]  # insertion order is a topological order
    cells: list[ReportCell]

    def ordered(self) -> list[Stage]:
        return list(self.stages.values())

    def counts(self) -> Counter[str]:
        return Counter(s.kind for s in self.stages.values())



def resolve_site_root(matrix: Matrix, site: str) -> str:
    """Data root of a site: matrix `data.sites[site]`, else `$BENCH_DATA_ROOT/<site>`, else `data.root/<site>`."""
    if site in matrix.data.sites:
        root = matrix.data.sites[site]
    elif os.environ.get("BENCH_DATA_ROOT"):
        root = str(Path(os.environ["BENCH_DATA_ROOT"]) / site)
    else:
        root = str(Path(matrix.data.root) / site)
    return str(Path(root).expanduser().resolve())


def _non_default(cfg: Any) -> dict[str, Any]:
    """The part of a config that differs from its schema defaults: a stage's identity.

    Keying on this (rather than on every field) keeps keys, and so finished results,
    valid when a later version adds an option with a default. A changed default is a
    change of meaning and bumps `KEY_VERSION` instead.
    """
    return cfg.model_dump(mode="json", exclude_defaults=True)


def _model_config(e: Experiment) -> dict[str, Any]:
    return {"backbone": e.backbone, "init": e.init, "image_size": e.image_size, "in_chans": e.in_chans}


def _data_identity(matrix: Matrix) -> dict[str, Any] | None:
    # Synthetic data is defined by its generator settings: different seeds are different data.
    return matrix.data.synthetic


def build_plan(matrix: Matrix) -> Plan:
    stages: dict[str, Stage] = {}
    cells: list[ReportCell] = []
    data_id = _data_identity(matrix)
    roots: dict[str, str] = {}  # site -> resolved root: resolving is a filesystem walk, done once per site

    def root_of(site: str) -> str:
        if site not in roots:
            roots[site] = resolve_site_root(matrix, site)
        return roots[site]

    def add(kind: str, config: dict[str, Any], upstream: list[str], sites: list[str], label: str, identity: dict[str, Any]) -> str:
        key = stage_key(kind, identity, upstream)
        if key not in stages:
            stages[key] = Stage(
                key=key,
                kind=kind,
                config=config,
                upstream=upstream,
                paths={s: root_of(s) for s in sites},
                label=label,
            )
        return key

    for e in matrix.experiments:
        model = _model_config(e)
        pre_key: str | None = None
        if e.pretrain.method != "none":
            pcfg = e.pretrain.model_dump(mode="json")
            assert e.pretrain.dataset is not None
            pre_key = add(
                "pretrain",
                {**model, "pretrain": pcfg, "data": data_id},
                [],
                [e.pretrain.dataset],
                f"{e.pretrain.method} on {e.pretrain.dataset}"
                + (f" (random {e.pretrain.subset})" if e.pretrain.subset else "")
                + (" with DBB" if e.pretrain.batching.mode == "dbb" else "")
                + f" ({e.backbone}, init {e.init})",
                {**model, "pretrain": _non_default(e.pretrain), "data": data_id},
            )
        fcfg = e.finetune.model_dump(mode="json")
        seeds = fcfg.pop("seeds")
        f_id = _non_default(e.finetune)
        f_id.pop("seeds", None)
        for seed in seeds:
            ft_key = add(
                "finetune",
                {**model, "finetune": fcfg, "seed": seed, "data": data_id},
                [pre_key] if pre_key else [],
                [e.finetune.dataset],
                f"{e.id} seed {seed}",
                {**model, "finetune": f_id, "seed": seed, "data": data_id},
            )
            for t in e.evaluate:
                ev_cfg = {
                    "site": t.site,
                    "split": t.split,
                    "site_options": t.site_options,
                    "image_size": e.image_size,
                    "in_chans": e.in_chans,
                    "data": data_id,
                }
                ev_key = add("evaluate", ev_cfg, [ft_key], [t.site], f"{e.id} seed {seed} on {t.site}/{t.split}", ev_cfg)
                cells.append(ReportCell(e.id, seed, t, ft_key, ev_key, pre_key))
    _disambiguate_labels(stages)
    return Plan(matrix=matrix, stages=stages, cells=cells)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _disambiguate_labels(stages: dict[str, Stage]) -> None:
    """Stages of one kind with the same label get the config values that tell them apart.

    e.g. four GMML pre-trainings of Krones Table 5 differ only in options; the CheXpert
    test and valid evaluations only in `site_options.split`. Keys shared by all are left out.
    """
    groups: dict[tuple[str, str], list[Stage]] = {}
    for s in stages.values():
        groups.setdefault((s.kind, s.label), []).append(s)
    for (_, label), group in groups.items():
        if len(group) < 2:
            continue
        flats = [_flat(s.config) for s in group]
        keys = sorted({k for f in flats for k in f})
        differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
        for s, f in zip(group, flats):
            extra = ", ".join(f"{k.split('.', 1)[-1] if k.startswith(('pretrain.', 'finetune.')) else k}={f.get(k)}" for k in differing[:4])
            s.label = f"{label} [{extra}]" if extra else label


def describe(plan: Plan, done: set[str] | None = None) -> str:
    """Human-readable plan: each stage with its dependencies, then counts per kind."""
    done = done or set()
    lines = [f"plan for {plan.matrix.path} ({plan.matrix.name}): {len(plan.matrix.experiments)} experiments"]
    for s in plan.ordered():
        state = "done" if s.key in done else "todo"
        deps = f" <- {', '.join(s.upstream)}" if s.upstream else ""
        lines.append(f"  [{state}] {s.key}  {s.label}{deps}")
    c = plan.counts()
    total = sum(c.values())
    summary = ", ".join(f"{c.get(k, 0)} {k}" for k in KINDS)
    lines.append(f"stages: {total} ({summary}); done: {len(done & set(plan.stages))}; report cells: {len(plan.cells)}")
    return "\n".join(lines)
