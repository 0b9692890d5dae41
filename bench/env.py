"""What a stage may know about where it runs: a small, frozen, picklable record.

Stage runners (`bench.train`) receive a `StageEnv` and nothing from the executor that
launched them: the same stage code runs inline, in a local subprocess or in a SLURM
task, and cannot tell which (submitit's lesson: the job body never names its launcher).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StageEnv:
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    image_policy: str = "skip"  # unreadable images: skip (counted, listed in the log) or fail
    cache_root: str | None = None  # `bench data prepare` caches; stages use one when it matches
    progress: bool = True  # tqdm bars (only on a terminal)
    checkpoint_seconds: float = 300.0  # a training stage checkpoints at least this often
    # distributed data parallel (one process per rank); filled in by the job body
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes outputs, checkpoints and MLflow records; the other ranks only compute."""
        return self.rank == 0

    def with_ranks(self, rank: int, local_rank: int, world_size: int) -> "StageEnv":
        return replace(self, rank=rank, local_rank=local_rank, world_size=world_size)

    def resolved_device(self) -> str:
        """`cuda` becomes `cuda:<local_rank>` under DDP so that each rank owns one GPU."""
        if self.device == "cuda" and self.world_size > 1:
            return f"cuda:{self.local_rank}"
        return self.device


def checkpoint_seconds_default() -> float:
    """`BENCH_CHECKPOINT_SECONDS` lets a cluster user (or a test) trade I/O for lost work on preemption."""
    try:
        return float(os.environ.get("BENCH_CHECKPOINT_SECONDS", "300"))
    except ValueError:
        return 300.0
