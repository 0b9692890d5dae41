"""Stage runners: pre-train, fine-tune, evaluate. One function per stage kind.

Each runner receives its `Stage` (config + resolved data paths), the `Store` to write
its outputs into, a `StageLogger`, and the `StageEnv` (device, threads, image policy, caches); it returns the names of the
outputs it wrote (the store checks they exist before marking the stage done) and a
small summary dict that ends up in `status.json` and MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.env import StageEnv
    from bench.plan import Stage
    from bench.store import Store
    from bench.tracking import StageLogger


def run_stage(stage: "Stage", store: "Store", logger: "StageLogger", env: "StageEnv") -> tuple[list[str], dict[str, Any]]:
    if stage.kind == "pretrain":
        from bench.train.pretrain import run_pretrain as fn
    elif stage.kind == "finetune":
        from bench.train.finetune import run_finetune as fn
    elif stage.kind == "evaluate":
        from bench.train.evaluate import run_evaluate as fn
    else:
        raise ValueError(f"unknown stage kind {stage.kind!r}")
    return fn(stage, store, logger, env)
