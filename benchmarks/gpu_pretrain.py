"""Pre-training throughput on a GPU (issue 13, section 3): images/s, tokens/s, model FLOP
utilisation (MFU) and peak memory of MAE ViT-B/16 through the project's own training path.

What runs is what `bench run` runs for a pre-training stage: the method built by
`ssl_methods.create`, its `param_groups`, the step function of `bench.train.pretrain`
(`engine(x)` / `engine(x, valid=...)` inside `shard.sample_rows`), and
`bench.train.loop.fit`, i.e. the loop's bf16 autocast on CUDA (`precision`), AdamW,
gradient clipping, NaN check and per-step logging. Steps are timed from the loop's
`after_step` hook (after `opt.step()`, CUDA synchronised); the first `--warmup` steps
(allocator, cuDNN/SDPA autotuning, `torch.compile`) are left out. The run stops
after the last timed step, before the loop would write a checkpoint.

Two workloads (`--mode`):
- `fixed`: 224² images, batch 256 (synthetic pixels or a `bench data prepare` cache).
- `dbb`: Dynamic Batch Binning at native radiograph resolution: PadChest's 160,861
  DICOM sizes (the label CSV shipped with torchxrayvision; a log-uniform synthetic
  list when it is not installed) capped at `--max-side`, planned by
  `bench.data.dbb.DBBBatchSampler` with a per-step `--token-budget`, collated by the
  project's `resize_to_policy` + `pad_to_grid` (as `BinnedBatches` does) into padded
  batches + valid-token masks. The timed steps are
  the plan's first steps (bin shapes in the plan's shuffled order).

FLOPs: MAE from `bench.compute`'s per-sequence ViT model applied to each part of the
step as executed (patch embedding on all patches, encoder on 1 + K kept tokens, the
decoder on 1 + L), x3 for forward + backward (x2 for the patch embedding); other
methods/backbones from `torch.utils.flop_counter.FlopCounterMode` on one step. MFU is
against (a) the device's dense bf16 peak from a table of known devices and (b) a
large `torch.mm` measured in the same run and dtype.

Input options: `--source synthetic` (a pool of batches made once, pinned, cycled: only
the host-to-device copy is paid), `--source loader` (a DataLoader making random pixels
per image, `--workers`, `--pin-memory`, `--prefetch`), `--source cache:DIR` (a
`bench data prepare` cache folder: its fixed-size array for `fixed`, its native buffer
for `dbb`, read through a DataLoader with the same options).

    python benchmarks/gpu_pretrain.py                                  # MAE ViT-B/16, both workloads, on cuda
    python benchmarks/gpu_pretrain.py --mode fixed --compile --attention flash
    python benchmarks/gpu_pretrain.py --method mocov3 --backbone resnet50 --channels-last --mode fixed --batch 128
    python benchmarks/gpu_pretrain.py --source cache:results/cache/nih/size224 --workers 8 --pin-memory
    OMP_NUM_THREADS=1 python benchmarks/gpu_pretrain.py --tiny         # CPU, seconds (what the test runs)

The last line printed is one JSON object with every figure (paste it next to the README table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ssl_methods  # noqa: E402
from bench.compute import block_flops, patch_embed_flops  # noqa: E402
from bench.execute.estimate import GPU_PEAK_TFLOPS  # noqa: E402
from bench.tracking import StageLogger  # noqa: E402
from bench.train.loop import OptimCfg, fit  # noqa: E402

# device name fragment -> key of `bench.execute.estimate.GPU_PEAK_TFLOPS` (dense bf16, no sparsity);
# checked in order, so the PCIe H100 (756 TFLOP/s) is told from the SXM part
DEVICE_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", GPU_PEAK_TFLOPS["h200"]),
    ("H100", GPU_PEAK_TFLOPS["h100"]),
    ("B200", GPU_PEAK_TFLOPS["b200"]),
    ("A100", GPU_PEAK_TFLOPS["a100"]),
    ("A40", GPU_PEAK_TFLOPS["a40"]),
    ("L40S", GPU_PEAK_TFLOPS["l40s"]),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", GPU_PEAK_TFLOPS["v100"]),
)


class _Done(Exception):
    """Raised from `after_step` after the last timed step: ends `fit` before it checkpoints."""


def table_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s from the table, or None for an unknown device / CPU)."""
    if device.type != "cuda":
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    upper = name.upper()
    for frag, tflops in DEVICE_PEAKS:
        if frag in upper:
            return name, tflops * 1e12
    return name, None


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Achieved FLOP/s of a square `n`-sized `torch.mm` in `dtype` (best of `reps`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- FLOPs


def mae_step_flops(method: torch.nn.Module, x: torch.Tensor, valid: torch.Tensor | None) -> float:
    """Matmul FLOPs of one MAE training step on batch `x` (and its valid-token mask), as executed.

    Per image: patch embedding on all L patches; encoder on 1 + K tokens, K the batch's
    largest kept count (images keeping fewer run filler slots); `decoder_embed` on 1 + K;
    decoder blocks and `decoder_pred` on 1 + L. Training: 3x forward (input and weight
    gradients), 2x for the patch embedding (the images need no gradient).
    """
    enc = method.encoder  # type: ignore[attr-defined]
    d = int(enc.embed_dim)
    p = int(enc.patch_embed.patch_size[0])
    c = int(x.shape[1])
    mlp = float(enc.blocks[0].mlp.fc1.out_features) / d
    b, length = int(x.shape[0]), (int(x.shape[2]) // p) * (int(x.shape[3]) // p)
    ratio = float(method.cfg.mask_ratio)  # type: ignore[attr-defined]
    n_valid = valid.sum(dim=1).tolist() if valid is not None else [length] * b
    k = max(max(1, int(n * (1 - ratio))) for n in n_valid)
    dd = int(method.decoder_embed.out_features)  # type: ignore[attr-defined]
    dmlp = float(method.decoder_blocks[0].mlp.fc1.out_features) / dd  # type: ignore[attr-defined]
    embed = float(patch_embed_flops(length, width=d, patch=p, in_chans=c))
    body = (
        len(enc.blocks) * float(block_flops(1 + k, d, mlp))
        + 2.0 * (1 + k) * d * dd
        + len(method.decoder_blocks) * float(block_flops(1 + length, dd, dmlp))  # type: ignore[attr-defined]
        + 2.0 * (1 + length) * dd * p * p * c
    )
    return b * (2.0 * embed + 3.0 * body)


def counted_step_flops(step_fn: Any, x: torch.Tensor, y: torch.Tensor | None, device: torch.device, amp: torch.dtype | None) -> float:
    """FLOPs of one forward + backward as `FlopCounterMode` counts them (any method/backbone)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = step_fn(x.to(device), y.to(device) if y is not None else None, torch.Generator().manual_seed(0))
        loss.float().backward()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- data


def padchest_sizes() -> tuple[np.ndarray, np.ndarray, str]:
    """(height, width, source) of PadChest's 160,861 images, or a log-uniform stand-in list."""
    try:
        import pandas as pd
        import torchxrayvision

        hits = sorted((Path(torchxrayvision.__file__).parent / "data").glob("PADCHEST*.csv*"))
        df = pd.read_csv(hits[0], usecols=["Rows_DICOM", "Columns_DICOM"]).dropna()
        return df["Rows_DICOM"].to_numpy(int), df["Columns_DICOM"].to_numpy(int), f"PadChest ({hits[0].name})"
    except Exception:  # noqa: BLE001 - torchxrayvision is a test extra; the stand-in keeps the benchmark running
        rng = np.random.default_rng(0)
        n = 160_861
        longer = np.exp(rng.uniform(np.log(612), np.log(4280), n)).astype(np.int64)
        aspect = np.clip(rng.lognormal(0.0, 0.15, n), 0.6, 1.7)
        h = np.where(aspect >= 1, longer, longer * aspect).astype(np.int64)
        w = np.where(aspect >= 1, longer / aspect, longer).astype(np.int64)
        return h, w, "log-uniform stand-in for PadChest (torchxrayvision not installed)"


class _RandomImages(torch.utils.data.Dataset):
    """Random [0, 1] pixels of given sizes: the `loader` source (decoding cost not included)."""

    def __init__(self, heights: np.ndarray, widths: np.ndarray, in_chans: int, fixed: int | None) -> None:
        self.h, self.w, self.c, self.fixed = heights, widths, in_chans, fixed

    def __len__(self) -> int:
        return len(self.h)

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(i))
        if self.fixed:
            return torch.rand(self.c, self.fixed, self.fixed, generator=g)
        return torch.rand(self.c, int(self.h[i]), int(self.w[i]), generator=g)


class _CacheImages(torch.utils.data.Dataset):
    """Images of a `bench data prepare` cache (fixed-size array, or the native buffer)."""

    def __init__(self, cache_dir: str, in_chans: int, native: bool) -> None:
        from bench.data.cache import CacheReader

        self.reader = CacheReader(cache_dir)
        self.c, self.native = in_chans, native

    def __len__(self) -> int:
        return len(self.reader)

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.reader.native_sizes()
        return s["height"].to_numpy(int), s["width"].to_numpy(int)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = torch.from_numpy(self.reader.native(i) if self.native else self.reader[i])
        return img.unsqueeze(0).expand(self.c, -1, -1).contiguous()


@dataclass
class StepBatches:
    """The `fit` batches contract (`len`, `epoch_batches`) over a stream of (x, valid-or-None).

    Pinned host tensors when the device is CUDA (the loop copies with `non_blocking=True`).
    `flops`/`tokens` are filled per yielded step by the caller's accounting function.
    """

    stream: Any  # callable() -> iterator of (x, y)
    steps: int
    account: Any  # callable(x, y) -> (flops, processed_tokens, real_tokens)
    per_step: list[tuple[float, int, int, int]] = field(default_factory=list)  # flops, processed, real, images

    def __len__(self) -> int:
        return self.steps

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, None, torch.Tensor, torch.Tensor | None]]:
        it = self.stream()
        for step in range(start_step, self.steps):
            x, y = next(it)
            fl, proc, real = self.account(x, y)
            self.per_step.append((fl, proc, real, int(x.shape[0])))
            yield step, None, x, y


class _Binned(torch.utils.data.Dataset):
    """Wraps an image dataset for a `DBBBatchSampler`: each sample travels with its step's bin shape."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return self.base[i]

    def __getitems__(self, indices: Any) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        return [(self.base[i], tuple(indices.shape)) for i in indices]


class _PadCollate:
    """A DBB step as `bench.data.batches.BinnedBatches` makes it: each image capped at `max_side`
    (`resize_to_policy`), padded to the step's bin grid (`pad_to_grid`) -> (images, valid mask)."""

    def __init__(self, patch: int, max_side: int) -> None:
        self.patch, self.max_side = patch, max_side

    def __call__(self, samples: list[tuple[torch.Tensor, tuple[int, int]]]) -> dict[str, torch.Tensor]:
        from bench.data.dbb import pad_to_grid, resize_to_policy

        imgs = [resize_to_policy(im, max_side=self.max_side) for im, _ in samples]
        x, valid = pad_to_grid(imgs, samples[0][1], patch=self.patch)
        return {"image": x, "valid": valid}


def _cycle(pool: list[tuple[torch.Tensor, torch.Tensor | None]]) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    while True:
        yield from pool


def _loader_stream(loader: torch.utils.data.DataLoader, dbb: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    while True:
        for batch in loader:
            yield (batch["image"], batch["valid"]) if dbb else (batch, None)


# ----------------------------------------------------------------------------- one run


@dataclass
class Result:
    workload: str
    method: str
    backbone: str
    device: str
    precision: str
    source: str
    batch: str
    steps: int
    s_per_step: float
    images_per_s: float
    tokens_per_s: float  # processed patch tokens of the input images (padding included)
    real_tokens_per_s: float  # patches holding pixels (= tokens_per_s without padding)
    tflops_per_s: float
    flops_source: str
    mfu_table: float | None
    mfu_measured: float | None
    peak_table_tflops: float | None
    peak_measured_tflops: float | None
    peak_memory_gib: float
    options: dict[str, Any]
    notes: list[str]


def run_workload(args: argparse.Namespace, workload: str, device: torch.device, peaks: tuple[float | None, float | None]) -> Result:
    from bench.train.loop import autocast_dtype
    from ssl_methods import shard

    dbb = workload == "dbb"
    torch.manual_seed(0)
    method = ssl_methods.create(args.method, backbone=args.backbone, img_size=args.image_size, in_chans=args.in_chans,
                                init="random", epochs=100, **json.loads(args.options))
    if dbb and not ssl_methods.supports_valid_mask(args.method):
        raise SystemExit(f"--mode dbb needs a method that takes a valid-token mask; {args.method!r} does not")
    notes: list[str] = []
    has_tokens = bool(getattr(method, "patch", None))  # a ViT/Swin method; a CNN has no patch tokens
    patch = int(getattr(method, "patch", 0) or 16)
    groups = method.param_groups(0.05)
    method.to(device)
    if args.channels_last:
        method.to(memory_format=torch.channels_last)
    amp = autocast_dtype(device, args.precision)
    if args.attention == "math":  # timm's unfused attention (explicit softmax(QK^T)V)
        for m in method.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    engine: Any = torch.compile(method, dynamic=dbb or None) if args.compile else method

    def step_fn(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        # bench.train.pretrain's step function for one rank (world size 1)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        b = x.shape[0]
        with shard.sample_rows(0, b, b):
            return engine(x, valid=y) if dbb else engine(x)

    # ---- the batches
    pin = device.type == "cuda" and (args.pin_memory or args.source == "synthetic")
    cache_dir = args.source.split(":", 1)[1] if args.source.startswith("cache:") else None
    if dbb:
        from bench.data.dbb import DBBBatchSampler

        if cache_dir:
            dataset: Any = _CacheImages(cache_dir, args.in_chans, native=True)
            heights, widths = dataset.sizes()
            size_source = f"native cache {cache_dir}"
        elif args.tiny:
            rng = np.random.default_rng(0)
            heights, widths = rng.integers(40, 140, 400), rng.integers(40, 140, 400)
            size_source = "tiny random sizes 40-139 px"
        else:
            heights, widths, size_source = padchest_sizes()
        sampler = DBBBatchSampler.from_sizes(heights, widths, patch=patch, max_side=args.max_side,
                                             token_budget=args.token_budget, seed=0)
        collate = _PadCollate(patch, args.max_side)
        if cache_dir is None and args.source == "synthetic":
            # the plan's first steps, collated once like BinnedBatches does (random pixels)
            plan = list(sampler)[: args.pool]
            pool = []
            for bb in plan:
                rng_t = torch.Generator().manual_seed(len(pool))
                imgs = [torch.rand(args.in_chans, int(heights[i]), int(widths[i]), generator=rng_t) for i in bb]
                out = collate([(im, tuple(bb.shape)) for im in imgs])
                pool.append((out["image"].pin_memory() if pin else out["image"], out["valid"].pin_memory() if pin else out["valid"]))
            stream: Any = lambda: _cycle(pool)  # noqa: E731
        else:
            if cache_dir is None:
                dataset = _RandomImages(heights, widths, args.in_chans, fixed=None)
            loader = torch.utils.data.DataLoader(
                _Binned(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=args.workers,
                pin_memory=pin, **({"prefetch_factor": args.prefetch, "persistent_workers": True} if args.workers else {}),
            )
            stream = lambda: _loader_stream(loader, True)  # noqa: E731
        batch_desc = f"token budget {args.token_budget} per step, max side {args.max_side} px, sizes: {size_source}"
        notes.append(f"DBB plan: {len(sampler)} steps per epoch, {sampler.bins.n_bins} bins")
    else:
        size = args.image_size
        if cache_dir:
            dataset = _CacheImages(cache_dir, args.in_chans, native=False)
            if dataset.reader.size != size:
                raise SystemExit(f"cache {cache_dir} holds {dataset.reader.size} px images; pass --image-size {dataset.reader.size}")
        if cache_dir is None and args.source == "synthetic":
            g = torch.Generator().manual_seed(0)
            pool = [(torch.rand(args.batch, args.in_chans, size, size, generator=g), None) for _ in range(min(args.pool, 2))]
            pool = [((x.pin_memory() if pin else x), None) for x, _ in pool]
            stream = lambda: _cycle(pool)  # noqa: E731
        else:
            if cache_dir is None:
                n = args.batch * (args.warmup + args.steps)
                dataset = _RandomImages(np.full(n, size), np.full(n, size), args.in_chans, fixed=size)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers, pin_memory=pin,
                generator=torch.Generator().manual_seed(0),
                **({"prefetch_factor": args.prefetch, "persistent_workers": True} if args.workers else {}),
            )
            if len(loader) == 0:
                raise SystemExit(f"the source has fewer than --batch {args.batch} images")
            stream = lambda: _loader_stream(loader, False)  # noqa: E731
        batch_desc = f"{args.batch} x {size}²"

    # ---- FLOP accounting
    is_mae = args.method == "mae" and hasattr(method, "decoder_blocks")
    counted: dict[tuple[int, ...], float] = {}

    def account(x: torch.Tensor, y: torch.Tensor | None) -> tuple[float, int, int]:
        length = (x.shape[2] // patch) * (x.shape[3] // patch) if has_tokens else 0
        proc = int(x.shape[0]) * length
        real = int(y.sum()) if y is not None else proc
        if is_mae:
            return mae_step_flops(method, x, y), proc, real
        key = tuple(x.shape)
        if key not in counted:  # one counted step per input shape (gradients of it are discarded)
            counted[key] = counted_step_flops(step_fn, x, y, device, amp)
            method.zero_grad(set_to_none=True)
        return counted[key], proc, real

    total = args.warmup + args.steps
    batches = StepBatches(stream=stream, steps=total, account=account)
    times: list[float] = []

    def after_step(progress: float) -> None:
        method.after_step(progress)
        _sync(device)
        times.append(time.perf_counter())
        if len(times) == total + 1:  # the start mark plus one per step
            raise _Done

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sdpa = contextlib.nullcontext()
    if args.attention in ("flash", "efficient", "cudnn", "sdpa-math"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa-math": SDPBackend.MATH}[args.attention]
        sdpa = sdpa_kernel([backend])
    with tempfile.TemporaryDirectory(prefix="gpu_pretrain.") as tmp, sdpa:
        _sync(device)
        times.append(time.perf_counter())
        try:
            fit(model=method, groups=groups, batches=batches, step_fn=step_fn,
                cfg=OptimCfg(epochs=1, lr=1.5e-4, min_lr=1e-6, weight_decay=0.05, clip_grad=args.clip, betas=(0.9, 0.95)),
                seed=0, checkpoint=Path(tmp) / "checkpoint.pt", logger=StageLogger(None, None, None),
                after_step=after_step, checkpoint_seconds=1e9, device=str(device), precision=args.precision)
            raise RuntimeError("fit ended before the last timed step")
        except _Done:
            pass
    step_times = np.diff(times)[args.warmup:]
    timed = batches.per_step[args.warmup : args.warmup + args.steps]
    seconds = float(step_times.sum())
    flops = sum(t[0] for t in timed)
    images = sum(t[3] for t in timed)
    achieved = flops / seconds
    table, measured = peaks
    if device.type == "cuda":
        mem = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (process peak RSS)
        notes.append("peak memory on CPU is the process's peak resident set size")
    if amp is None and device.type == "cuda":
        notes.append(f"precision {args.precision}: no bf16 autocast (the table peak is bf16)")
    return Result(
        workload=workload,
        method=args.method,
        backbone=args.backbone,
        device=str(device),
        precision="bf16 autocast" if amp == torch.bfloat16 else "fp32",
        source=args.source,
        batch=batch_desc,
        steps=args.steps,
        s_per_step=seconds / len(step_times),
        images_per_s=images / seconds,
        tokens_per_s=sum(t[1] for t in timed) / seconds,
        real_tokens_per_s=sum(t[2] for t in timed) / seconds,
        tflops_per_s=achieved / 1e12,
        flops_source="bench.compute ViT model (MAE parts as executed)" if is_mae else "torch FlopCounterMode",
        mfu_table=achieved / table if table else None,
        mfu_measured=achieved / measured if measured else None,
        peak_table_tflops=table / 1e12 if table else None,
        peak_measured_tflops=measured / 1e12 if measured else None,
        peak_memory_gib=mem,
        options={k: getattr(args, k) for k in ("compile", "attention", "channels_last", "workers", "pin_memory", "prefetch", "clip", "token_budget", "max_side", "image_size", "in_chans")},
        notes=notes,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--mode", choices=["fixed", "dbb", "both"], default="both")
    ap.add_argument("--method", default="mae", help="any registered SSL method; default %(default)s")
    ap.add_argument("--backbone", default="vit_base")
    ap.add_argument("--options", default="{}", help="method options as JSON, e.g. '{\"mask_ratio\": 0.75}'")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--in-chans", type=int, default=1, help="1 (radiographs, the studies' setting) or 3")
    ap.add_argument("--batch", type=int, default=256, help="images per step of the fixed workload")
    ap.add_argument("--token-budget", type=int, default=256 * 197, help="DBB: tokens per step, class token included (default: what 256 x 224² holds)")
    ap.add_argument("--max-side", type=int, default=1024, help="DBB: cap of the longer side in px")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, autotuning, compile)")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="the loop's precision (auto: bf16 autocast on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the method")
    ap.add_argument("--attention", choices=["sdpa", "flash", "efficient", "cudnn", "sdpa-math", "math"], default="sdpa",
                    help="sdpa: timm's fused scaled_dot_product_attention, backend chosen by torch (default); flash/efficient/cudnn/sdpa-math: "
                         "that SDPA backend only (flash takes no attention mask: fixed workload only, DBB batches carry a key mask); "
                         "math: timm's unfused attention")
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format (helps ResNet backbones)")
    ap.add_argument("--source", default="synthetic", help="synthetic (a pinned pool, cycled), loader (DataLoader, random pixels) or cache:DIR (a `bench data prepare` cache folder)")
    ap.add_argument("--pool", type=int, default=8, help="synthetic source: batches made up front (DBB: the plan's first steps)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (loader and cache sources)")
    ap.add_argument("--pin-memory", action="store_true", help="DataLoader pinned memory (CUDA)")
    ap.add_argument("--prefetch", type=int, default=4, help="DataLoader prefetch factor per worker")
    ap.add_argument("--clip", type=float, default=None, help="gradient clipping norm (MAE's recipe: none)")
    ap.add_argument("--peak-n", type=int, default=None, help="side of the measured matmul (default 8192 on CUDA, 1024 on CPU)")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized settings: vit_tiny_demo at 64 px, batch 4, 2+1 steps, small DBB plan")
    args = ap.parse_args(argv)
    if args.tiny:
        if args.backbone == "vit_base":  # a backbone given on the command line is kept (e.g. resnet_tiny_demo)
            args.backbone = "vit_tiny_demo"
        args.image_size, args.batch, args.steps, args.warmup = 64, 4, 2, 1
        args.token_budget, args.max_side, args.pool = 4 * 257, 128, 3
        args.peak_n = args.peak_n or 256
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name, table = table_peak(device)
    dtype = torch.bfloat16 if device.type == "cuda" and args.precision != "fp32" else torch.float32
    measured = matmul_peak(device, dtype, args.peak_n or (8192 if device.type == "cuda" else 1024))
    print(f"device: {name}; dense {str(dtype).split('.')[-1]} peak: table {table / 1e12 if table else float('nan'):.0f} TFLOP/s, "
          f"measured torch.mm {measured / 1e12:.3g} TFLOP/s; torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for workload in (["fixed", "dbb"] if args.mode == "both" else [args.mode]):
        r = run_workload(args, workload, device, (table, measured))
        results.append(r)
        mfu = lambda v: f"{v:.1%}" if v is not None else "n/a"  # noqa: E731
        print(f"{workload:5s} {r.method} {r.backbone} [{r.batch}] {r.precision}: {r.s_per_step * 1e3:.1f} ms/step, "
              f"{r.images_per_s:.1f} images/s, {r.tokens_per_s:.3g} tokens/s ({r.real_tokens_per_s:.3g} real), "
              f"{r.tflops_per_s:.3g} TFLOP/s, MFU {mfu(r.mfu_table)} of the table peak / {mfu(r.mfu_measured)} of torch.mm, "
              f"peak memory {r.peak_memory_gib:.2f} GiB", flush=True)
        for n in r.notes:
            print(f"      {n}")
    out = {"device": name, "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
           "results": [asdict(r) for r in results]}
    print(json.dumps(out))
    return out["results"]


if __name__ == "__main__":
    main()
