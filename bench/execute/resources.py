"""Cluster resources per stage kind: defaults < user/site file < matrix `resources:` < command line.

A matrix says what its stages need (`resources: {pretrain: {nodes: 1, gpus_per_node: 4, ...}}`),
a user's `~/.config/medssl-bench/slurm.yaml` (or `$BENCH_SLURM_CONFIG`) says what their
cluster calls things (partition, account, qos, setup lines such as `module load cuda`),
and `--resources pretrain.timeout_min=600` overrides either for one run. Every layer is
validated against the same model, so a typo names the key and the allowed ones.

Resources are not part of a stage's key: where a stage runs does not change what it
computes, except that results are bit-identical only for the same device, thread count
and world size (recorded per attempt in the stage's `provenance`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

KINDS = ("pretrain", "finetune", "evaluate")


class SlurmResources(BaseModel):
    """What one job of a stage kind asks SLURM for (submitit `SlurmExecutor` parameters)."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1)  # DDP ranks per node (one per GPU); world size = nodes x tasks_per_node
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: float = Field(8, gt=0)
    timeout_min: int = Field(60, ge=1)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list)  # shell lines before the job starts (module load ...)
    array_parallelism: int = Field(64, ge=1)  # at most this many tasks of one array run at once
    signal_delay_s: int = Field(120, ge=10)  # SIGUSR2 this long before the time limit: checkpoint + requeue
    max_requeues: int = Field(20, ge=0)  # time-outs a stage may requeue after (preemptions do not count)
    additional: dict[str, Any] = Field(default_factory=dict)  # extra sbatch options, e.g. {reservation: x}

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 24 * 60},
    "finetune": {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 8 * 60},
    "evaluate": {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 60},
}


class ResourceError(ValueError):
    pass


def allowed_keys() -> list[str]:
    return list(SlurmResources.model_fields)


def validate_layer(layer: Any, where: str) -> dict[str, dict[str, Any]]:
    """Check one layer ({kind: {key: value}} plus an optional `all` kind); errors name the place."""
    if layer is None:
        return {}
    if not isinstance(layer, dict):
        raise ResourceError(f"{where}: resources must be a mapping of stage kind -> options, got {type(layer).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for kind, opts in layer.items():
        if kind not in (*KINDS, "all"):
            raise ResourceError(f"{where}: resources.{kind}: unknown stage kind; allowed: {', '.join((*KINDS, 'all'))}")
        if not isinstance(opts, dict):
            raise ResourceError(f"{where}: resources.{kind} must be a mapping of options")
        for k in opts:
            if k not in SlurmResources.model_fields:
                raise ResourceError(f"{where}: resources.{kind}.{k}: unknown option; allowed: {', '.join(allowed_keys())}")
        try:
            SlurmResources(**opts)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ResourceError(f"{where}: resources.{kind}.{key}: {err['msg']}") from None
        out[kind] = dict(opts)
    return out


def user_config_path() -> Path:
    env = os.environ.get("BENCH_SLURM_CONFIG")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "medssl-bench" / "slurm.yaml"


def load_user_config(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or user_config_path()
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and "resources" in data:
        data = data["resources"]
    return validate_layer(data, str(path))


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`--resources pretrain.gpus_per_node=4 --resources all.partition=gpu` -> a validated layer."""
    layer: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ResourceError(f"--resources {item!r}: expected KIND.KEY=VALUE, e.g. pretrain.gpus_per_node=4")
        lhs, value = item.split("=", 1)
        kind, key = lhs.split(".", 1)
        layer.setdefault(kind, {})[key] = yaml.safe_load(value)
    return validate_layer(layer, "--resources")


def resolve(kind: str, *layers: dict[str, dict[str, Any]]) -> SlurmResources:
    """Merge DEFAULTS and the layers (later wins; `all` applies before the kind's own keys)."""
    merged: dict[str, Any] = dict(DEFAULTS.get(kind, {}))
    for layer in layers:
        merged.update(layer.get("all", {}))
        merged.update(layer.get(kind, {}))
    return SlurmResources(**merged)
