"""Process groups for data-parallel pre-training: set up from SLURM/submitit or torchrun variables.

One process per rank (submitit/srun start them; never torchrun inside submitit). NCCL on
GPUs, gloo on CPU. Everything here is a no-op with one process, so stage code calls it
unconditionally.

The data-parallel contract (see `bench.train.loop.fit` and `bench.data.batches`):

* the matrix's `batch_size` is the *global* batch; each of the `world_size` ranks
  processes `batch_size / world_size` images per step, and every rank runs the same
  number of steps with the same tensor shapes (collectives would hang otherwise);
* the learning rate is the matrix's `lr` for that global batch, whatever the world size
  (no automatic linear scaling: the study fixes the global batch, not the per-GPU one);
* gradients are averaged by `DistributedDataParallel` (`wrap`); checkpoints and outputs
  are written by rank 0 only and read by every rank;
* per-sample randomness is drawn for the global batch on every rank and sliced
  (`ssl_methods.shard`), so a 2-process run reproduces a 1-process run to float
  rounding (tests/bench/train/test_distributed.py) for MAE and SimMIM, stochastic depth
  included (`ssl_methods.shard.split_invariant_drop_path`). Not covered, so equal only
  in distribution: the photometric augmentations of DINO/MoCo v3/SiT/GMML, draws over
  concatenated views (DINO's multi-crop student pass), GMML's partner images (chosen
  within a rank's share), MAE's loss under DBB (normalised by each rank's count of
  masked real tokens), and BatchNorm statistics on CPU (per rank; GPUs use
  SyncBatchNorm, see `wrap`).
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import TYPE_CHECKING, Any

from bench.env import StageEnv

if TYPE_CHECKING:
    from torch import nn


def _world_from_environment() -> tuple[int, int, int, str | None, int | None]:
    """(rank, local_rank, world_size, master_addr, master_port) of this process, or world 1."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit

        env = submitit.JobEnvironment()
        master = env.hostnames[0]
        # one port per job: concurrent jobs on one node must not collide
        port = 20000 + int(str(env.job_id).split("_")[0]) % 20000
        return env.global_rank, env.local_rank, env.num_tasks, master, port
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return (
            int(os.environ["RANK"]),
            int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
            int(os.environ["WORLD_SIZE"]),
            os.environ.get("MASTER_ADDR"),
            int(os.environ["MASTER_PORT"]) if "MASTER_PORT" in os.environ else None,
        )
    return 0, 0, 1, None, None


def setup(env: StageEnv) -> StageEnv:
    """Join the process group this process belongs to (if any) and return `env` with its ranks.

    On GPUs each rank is pinned to `cuda:<local_rank>` before NCCL starts, so that NCCL's
    communicators and `any_rank`'s tensors live on the rank's own device.
    """
    import torch
    import torch.distributed as dist

    rank, local_rank, world, addr, port = _world_from_environment()
    if world <= 1:
        return env
    if not dist.is_initialized():
        cuda = env.device.startswith("cuda")
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(local_rank)
        if addr:
            os.environ.setdefault("MASTER_ADDR", addr)
        if port:
            os.environ.setdefault("MASTER_PORT", str(port))
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30))
    return env.with_ranks(rank, local_rank, world)


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the active group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Ranks in the active group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_active() else 1


def free_port() -> int:
    """An unused TCP port on the loopback interface (for tests and single-node launches)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (decisions such as "this stage is already held")."""
    if not is_active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if is_active():
        import torch.distributed as dist

        dist.barrier()


def _reduce(values: list[float], op: str) -> list[float]:
    """All-reduce a short list of floats (SUM or MAX) in one collective; identity without a group."""
    if not is_active():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a stop signal seen by one rank)."""
    return _reduce([1.0 if flag else 0.0], "max")[0] > 0


def agree_step(nonfinite: bool, signum: int | None) -> tuple[bool, int | None]:
    """One collective per training step: (loss not finite on some rank, stop signal seen by some rank).

    Why both at once: a rank that raised alone on a NaN loss, or stopped alone on its
    own SIGTERM, would leave the others blocked in the next gradient all-reduce. The
    signal number travels too (largest wins), so every rank raises the same `Preempted`
    and the job body can tell a SLURM time-limit signal from a cancel on any rank.
    Measured cost: ~0.9 ms per step for gloo on a loaded 2-core machine (one 2-float
    all-reduce), tens of microseconds with NCCL; negligible next to a pre-training step.
    """
    flag, sig = _reduce([1.0 if nonfinite else 0.0, -1.0 if signum is None else float(signum)], "max")
    return flag > 0, (None if sig < 0 else int(sig))


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (once per epoch, so that rank 0 logs the global mean).

    Every rank must pass the same keys (they come from the same method and loop).
    """
    if not is_active() or not values:
        return values
    keys = sorted(values)
    sums = _reduce([float(values[k]) for k in keys], "sum")
    n = world_size()
    return {k: s / n for k, s in zip(keys, sums)}


def wrap(module: "nn.Module", device: str, find_unused_parameters: bool | None = None) -> "nn.Module":
    """`module` in DistributedDataParallel when a process group is active, else `module` itself.

    Call the returned object in the forward pass (DDP hooks gradient averaging into
    backward), but save, load, export and EMA-update the unwrapped module (`unwrap`): its
    parameters are the same tensors, so optimiser groups built on it stay valid and
    state-dict keys carry no `module.` prefix. The module must already be on `device`.

    `find_unused_parameters` defaults to the module's `ddp_find_unused_parameters`
    attribute (False if absent): set it on methods whose forward skips trainable
    parameters in some steps (e.g. DINO's frozen last layer early in training); DDP
    then pays a graph traversal per step. BatchNorm layers become SyncBatchNorm on GPUs
    (global-batch statistics, as the references train); on CPU (gloo) torch has no
    SyncBatchNorm, so BN statistics stay per rank there.
    """
    if not is_active():
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if find_unused_parameters is None:
        find_unused_parameters = bool(getattr(module, "ddp_find_unused_parameters", False))
    dev = torch.device(device)
    if dev.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(
            module, device_ids=[dev.index if dev.index is not None else torch.cuda.current_device()],
            find_unused_parameters=find_unused_parameters,
        )
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters)


def unwrap(module: "nn.Module") -> "nn.Module":
    """The module inside a DistributedDataParallel wrapper (or `module` itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module
