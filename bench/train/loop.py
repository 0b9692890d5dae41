"""The one training loop shared by pre-training and fine-tuning.

It owns the optimiser (AdamW or SGD), the per-iteration warm-up + cosine schedule
(base lr -> floor), gradient clipping, NaN/inf detection and checkpoints. Methods
and heads only supply `step_fn(x, y) -> (loss, logs)`.

Resumability: every step re-seeds torch from (seed, epoch, step) and batches come
from a permutation of (seed, epoch), so a checkpoint needs only the model, optimiser,
position and caller state to make a resumed run bit-identical to an uninterrupted
one on CPU. Checkpoints are written at epoch ends, every `checkpoint_seconds`, and
when the run is interrupted (Ctrl-C / SIGTERM), always atomically.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from bench.tracking import StageLogger
from bench.data.batches import BinnedBatches, ImageBatches
from bench.train.mixed import MixedStep


class NonFiniteLoss(FloatingPointError):
    pass


@dataclass
class OptimCfg:
    epochs: int
    lr: float
    min_lr: float = 1e-6
    weight_decay: float = 0.04
    warmup_epochs: float = 0.0
    clip_grad: float | None = None
    clip_mode: str = "global"  # global norm (SimMIM, timm) or per_tensor (DINO/GMML/SiT references)
    weight_decay_end: float | None = None  # cosine weight-decay schedule to this value (DINO/GMML: 0.4)
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)

    @classmethod
    def of_section(cls, section: Mapping[str, Any]) -> OptimCfg:
        """The optimiser settings of a stage's matrix section (`pretrain` or `finetune`): each field
        the section has, the defaults above for the others (fine-tuning sets no clipping or betas,
        pre-training no optimizer)."""
        kw = {f.name: section[f.name] for f in fields(cls) if f.name in section}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return cls(**kw)


def lr_at(step: int, total: int, warmup: int, base: float, final: float) -> float:
    """Linear warm-up from 0 over `warmup` steps, then half-cosine from `base` to `final`."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


def clip_gradients(params: list[torch.Tensor], clip: float, mode: str) -> None:
    """Global-norm clipping, or the DINO/GMML/SiT rule: each tensor g *= min(1, clip / (||g|| + 1e-6))."""
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, clip)
        return
    if mode != "per_tensor":
        raise ValueError(f"clip_mode {mode!r} is not one of global, per_tensor")
    for p in params:
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on 1-D tensors (norms, biases): the rule the SSL methods use (`ssl_methods.base.decay_groups`)."""
    from ssl_methods.base import decay_groups

    return decay_groups(model.named_parameters(), weight_decay)


def _multi_tensor(groups: list[dict[str, Any]]) -> dict[str, bool]:
    """The fastest exact implementation torch has for these parameters: `fused` when every
    parameter is a float tensor on CPU or CUDA, else `foreach`.

    Why: on CPU torch's default is the per-tensor loop, which launches ~10 element-wise
    ops per parameter tensor; for ViT-B MAE that was 31% of a training step (issue 13.2).
    The fused kernel does the same AdamW/SGD update in one pass over each tensor (same
    formula; float results may differ only in rounding order).
    """
    params = [p for g in groups for p in g["params"]]
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        return {"fused": True}
    return {"foreach": True}


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimCfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **_multi_tensor(groups))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, **_multi_tensor(groups))
    raise ValueError(f"optimizer {cfg.optimizer!r} is not one of adamw, sgd")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast on GPUs that support it (`auto`/`bf16`), none on CPU or with `fp32`.

    bf16 needs no loss scaling (unlike fp16), so there is no GradScaler state to checkpoint.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r} is not one of auto, bf16, fp32")
    if precision == "fp32" or device.type != "cuda":
        return None
    if not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise ValueError("precision bf16 requested but this GPU does not support bfloat16")
        return None
    return torch.bfloat16


def step_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**63 - 1)


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _accumulate(
    model: nn.Module,
    batch: MixedStep,
    step_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], tuple[torch.Tensor, dict[str, float]]],
    seed: int,
    dev: torch.device,
    amp: torch.dtype | None,
    world: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward + backward of every micro-batch of a mixed-shape step; returns the rank's
    weighted loss (detached) and logs. The caller zeroes gradients first and steps after.

    Each micro-batch re-seeds torch with the step's seed and runs as its rows of the step
    (`shard.sample_rows`), so its random draws are the one big batch's. Its loss is
    scaled by `weight * world`: weights sum to 1 over all ranks and DDP averages the
    gradients over ranks, so the update is that of the weighted sum of micro-batch losses.
    Under DDP the gradient all-reduce runs once, after the last micro-batch (`no_sync`
    before), which is why every rank runs the same number of micro-batches.
    """
    from contextlib import nullcontext

    from ssl_methods import shard

    total = torch.zeros((), device=dev)
    sums: dict[str, float] = {}
    wsum = 0.0
    last = len(batch.micro) - 1
    for i, mb in enumerate(batch.micro):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        x = mb.x.to(dev, non_blocking=True)
        y = mb.valid.to(dev, non_blocking=True)
        sync = nullcontext() if world == 1 or i == last else model.no_sync()  # type: ignore[operator]
        with sync:
            with shard.sample_rows(mb.offset, int(x.shape[0]), mb.total):
                with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss, logs = step_fn(x, y, gen)
            loss = loss.float()
            (loss * (mb.weight * world)).backward()
        total = total + mb.weight * loss.detach()
        wsum += mb.weight
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + mb.weight * float(v)
    wsum = max(wsum, 1e-12)
    return total / wsum, {k: v / wsum for k, v in sums.items() if k != "loss"}


def fit(
    *,
    model: nn.Module,
    groups: list[dict[str, Any]],
    batches: ImageBatches | BinnedBatches,
    step_fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], tuple[torch.Tensor, dict[str, float]]],
    cfg: OptimCfg,
    seed: int,
    checkpoint: Path,
    logger: StageLogger,
    state: dict[str, Any] | None = None,
    epoch_end: Callable[[int], dict[str, float]] | None = None,
    after_step: Callable[[float], None] | None = None,
    checkpoint_seconds: float = 300.0,
    progress: bool = False,
    desc: str = "train",
    stop_after_steps: int | None = None,
    device: str = "cpu",
    precision: str = "auto",
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train `model` for `cfg.epochs`; returns `state` (caller-owned, checkpointed with the model).

    `stop_after_steps` ends the call early after that many optimiser steps in *this*
    call (after checkpointing), which is how tests simulate a kill at an arbitrary step.

    Stop requests (`bench.preempt`: SIGTERM, SIGUSR2, a first Ctrl-C) are polled after
    every optimiser step: the checkpoint is written at that consistent point and
    `preempt.Preempted` is raised. An immediate `KeyboardInterrupt` (a second signal)
    writes nothing, since the model may be half-updated, and the log names the
    checkpoint that is on disk.

    Data parallel: under an active process group, `model` must be the
    `bench.distributed.wrap` of the trained module and `step_fn` must call it; `batches`
    must be this rank's shard (same step count and shapes on every rank). Every rank
    loads the checkpoint, only rank 0 writes it. One small all-reduce per step agrees on
    non-finite losses and stop requests across ranks, so all ranks raise at the same
    step: the stop request is then seen one forward pass later (before that step's
    backward), and the checkpoint still holds the state after the last completed step.
    """
    from bench import distributed, preempt

    state = state if state is not None else {}
    core = distributed.unwrap(model)
    world = distributed.world_size()
    main = distributed.rank() == 0
    if world > 1 and core is model and any(p.requires_grad for p in core.parameters()):
        raise ValueError(
            "fit: a process group is active but the model is not wrapped for data parallelism; "
            "pass bench.distributed.wrap(module, device) as `model` and call it in `step_fn`"
        )
    dev = torch.device(device)
    if core is model:
        model.to(dev)
    amp = autocast_dtype(dev, precision)
    opt = make_optimizer(groups, cfg)
    base_wd = [float(g.get("weight_decay", 0.0)) for g in opt.param_groups]
    steps_per_epoch = len(batches)
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    epoch, start_step, global_step = 0, 0, 0
    sums: dict[str, float] = {}
    count = 0
    on_disk: tuple[int, int, int] | None = None  # (epoch, step, global step) of the checkpoint file
    if distributed.broadcast_object(checkpoint.exists()):
        if not checkpoint.exists():
            raise FileNotFoundError(f"rank {distributed.rank()} cannot see the checkpoint rank 0 found: {checkpoint}")
        ck = torch.load(checkpoint, map_location=dev, weights_only=True)
        core.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        epoch, start_step, global_step = ck["epoch"], ck["step"], ck["global_step"]
        state.update(ck.get("state", {}))
        if start_step:
            sums, count = dict(ck.get("epoch_sums", {})), int(ck.get("epoch_count", 0))
        on_disk = (epoch, start_step, global_step)
        logger.text(f"resumed from checkpoint at epoch {epoch} step {start_step} (global step {global_step})")

    def save(ep: int, st: int) -> None:
        """Rank 0 writes atomically; `epoch_sums` keep a resumed epoch's logged means whole."""
        nonlocal on_disk
        if main:
            _atomic_save(
                {
                    "model": core.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": ep,
                    "step": st,
                    "global_step": global_step,
                    "state": state,
                    "epoch_sums": sums if st else {},
                    "epoch_count": count if st else 0,
                },
                checkpoint,
            )
        on_disk = (ep, st, global_step)

    def stop(ep: int, st: int, signum: int | None) -> preempt.Preempted:
        """Checkpoint at (ep, st), make sure it is complete before any rank leaves, and say so."""
        save(ep, st)
        distributed.barrier()
        name = signal.Signals(signum).name if signum else "a stop request"
        logger.text(
            f"stopped on {name} at epoch {ep} step {st} (global step {global_step}); "
            f"checkpoint written to {checkpoint}; the next attempt resumes from it"
        )
        return preempt.Preempted(signum)

    last_ckpt = time.time()
    steps_this_call = 0
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=global_step, desc=desc, leave=False, dynamic_ncols=True)
    try:
        while epoch < cfg.epochs:
            model.train()
            for step, _, x, y in batches.epoch_batches(epoch, start_step):
                s = step_seed(seed, epoch, step)
                torch.manual_seed(s)
                gen = torch.Generator().manual_seed(s)
                lr = lr_at(global_step, total, warmup, cfg.lr, cfg.min_lr)
                for g, base in zip(opt.param_groups, base_wd):
                    g["lr"] = lr
                    if cfg.weight_decay_end is not None and base > 0:
                        g["weight_decay"] = lr_at(global_step, total, 0, base, cfg.weight_decay_end)
                mixed = isinstance(x, MixedStep)
                if mixed:  # micro-batches: forward + backward each, gradients accumulate (bench.train.mixed)
                    opt.zero_grad(set_to_none=True)
                    loss, logs = _accumulate(model, x, step_fn, s, dev, amp, world)
                else:
                    x = x.to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True) if y is not None else None
                    with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                        loss, logs = step_fn(x, y, gen)
                    loss = loss.float()
                finite = bool(torch.isfinite(loss))
                nonfinite, signum = (not finite), None
                if world > 1:
                    nonfinite, signum = distributed.agree_step(not finite, preempt.signal_number())
                if nonfinite:
                    where = f"{loss.item()}" if not finite else f"non-finite on another rank (here {loss.item():.4g})"
                    raise NonFiniteLoss(
                        f"loss became {where} at epoch {epoch} step {step} (global step {global_step}); "
                        "lower the learning rate or check the input data"
                    )
                if signum is not None:  # agreed before this step's update: the model is as after the previous step
                    raise stop(epoch, step, signum)
                if not mixed:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if cfg.clip_grad:
                    clip_gradients([p for g in groups for p in g["params"]], cfg.clip_grad, cfg.clip_mode)
                opt.step()
                global_step += 1
                steps_this_call += 1
                if after_step is not None:
                    after_step(global_step / total)
                for k, v in {"loss": float(loss.detach()), **logs}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss):.4f}")
                if world == 1 and preempt.requested():
                    raise stop(epoch, step + 1, preempt.signal_number())
                if time.time() - last_ckpt > checkpoint_seconds:
                    save(epoch, step + 1)
                    last_ckpt = time.time()
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    save(epoch, step + 1)
                    distributed.barrier()
                    return state
            metrics = distributed.mean_over_ranks({f"train_{k}": v / max(1, count) for k, v in sums.items()})
            metrics["lr"] = lr_at(max(0, global_step - 1), total, warmup, cfg.lr, cfg.min_lr)
            if epoch_end is not None:
                metrics.update(epoch_end(epoch))
            logger.metrics(metrics, step=epoch)
            epoch, start_step = epoch + 1, 0
            sums, count = {}, 0
            # rank 0 decides, so that every rank ends (and runs the same number of steps) together
            if should_stop is not None and distributed.broadcast_object(should_stop()):
                logger.text(f"early stop after epoch {epoch - 1}")
                epoch = cfg.epochs  # a resumed run must not train further either
            save(epoch, 0)
            last_ckpt = time.time()
            if epoch < cfg.epochs and world > 1:
                _, signum = distributed.agree_step(False, preempt.signal_number())
                if signum is not None:
                    raise stop(epoch, 0, signum)
    except preempt.Preempted:
        raise
    except KeyboardInterrupt:
        if on_disk is None:
            kept = "no checkpoint is on disk, so the next attempt starts from the beginning"
        else:
            kept = f"the checkpoint on disk ({checkpoint}) is from epoch {on_disk[0]} step {on_disk[1]} (global step {on_disk[2]})"
        logger.text(
            f"interrupted at epoch {epoch} (global step {global_step}) without a graceful stop: the model may be "
            f"half-updated, so nothing was saved; {kept}"
        )
        raise
    finally:
        if bar is not None:
            bar.close()
    return state
