"""Utilisation of one MAE and one SimMIM pre-training step against the machine's matmul peak.

A step is what `bench.train.loop.fit` runs: forward (the method's own crop/flip
augmentation and masking included), backward, gradient clipping where the method's
recipe clips, and the loop's AdamW (`make_optimizer`) over `param_groups`. Its
FLOPs come from `bench.compute`'s per-sequence ViT model (`block_flops`,
`patch_embed_flops`) applied to each part of the method (`step_flops`); training
counts 3x the forward matmul FLOPs (backward: input and weight gradients), 2x for
the patch embedding (images need no gradient). Element-wise work (norms, GELU,
softmax, AdamW) is not counted: it is the overhead the ratio exposes.

The peak is a large square `torch.mm` in the same dtype and thread count, timed in
the same process *interleaved* with the steps (peak, MAE, peak, SimMIM, ... for
`--repeats` rounds): on a shared machine the load changes, and a ratio of two
numbers taken seconds apart is what survives it. Each step's utilisation uses the
mean of the peaks measured just before and after it; the medians over rounds are
printed with the load average. Both rates are also taken in process CPU time (per
thread): when other jobs take the cores, wall time counts the seconds this process
was descheduled, CPU time does not (it still counts threads spinning at a barrier,
which is this step's own overhead), so `util(cpu)` is the figure to trust on a
loaded machine and `util` the one to quote on an idle one.

    python benchmarks/train_step_utilisation.py                       # ViT-B/16, 224 px, batch 8, fp32, 2 threads
    python benchmarks/train_step_utilisation.py --profile             # + torch.profiler top ops per method
    python benchmarks/train_step_utilisation.py --backbone vit_tiny_demo --img-size 32 --batch 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ssl_methods  # noqa: E402
from bench.compute import block_flops, patch_embed_flops  # noqa: E402
from bench.train.loop import OptimCfg, clip_gradients, make_optimizer  # noqa: E402

METHODS = ("mae", "simmim")


def step_flops(model: torch.nn.Module, batch: int, img_size: int, in_chans: int) -> float:
    """Training-step matmul FLOPs of `model` (MAE or SimMIM on a plain ViT) for one batch.

    Forward per image, by `bench.compute`'s model: MAE runs the patch embedding on all
    L patches, the encoder on 1 + K kept tokens (K = int(L (1 - mask_ratio))), a
    linear D -> D' on them, the decoder on 1 + L tokens and the pixel head D' -> p²C
    on 1 + L; SimMIM runs the patch embedding and the encoder on 1 + L tokens and a
    1x1 conv D -> p²C on L. Backward doubles every matmul, except the patch embedding's
    input gradient, which nothing needs.
    """
    enc = model.encoder  # type: ignore[attr-defined]
    d = int(enc.embed_dim)
    p = int(enc.patch_embed.patch_size[0])
    mlp = float(enc.blocks[0].mlp.fc1.out_features) / d
    L = (img_size // p) ** 2
    embed = float(patch_embed_flops(L, width=d, patch=p, in_chans=in_chans))
    pix = p * p * in_chans
    if model.name == "mae":  # type: ignore[attr-defined]
        k = int(L * (1 - model.cfg.mask_ratio))  # type: ignore[attr-defined]
        dd = int(model.decoder_embed.out_features)  # type: ignore[attr-defined]
        dmlp = float(model.decoder_blocks[0].mlp.fc1.out_features) / dd  # type: ignore[attr-defined]
        body = (
            len(enc.blocks) * float(block_flops(1 + k, d, mlp))
            + 2.0 * (1 + k) * d * dd
            + len(model.decoder_blocks) * float(block_flops(1 + L, dd, dmlp))  # type: ignore[attr-defined]
            + 2.0 * (1 + L) * dd * pix
        )
    elif model.name == "simmim":  # type: ignore[attr-defined]
        body = len(enc.blocks) * float(block_flops(1 + L, d, mlp)) + 2.0 * L * d * pix
    else:
        raise ValueError(f"no FLOP model for {model.name!r}")  # type: ignore[attr-defined]
    return batch * (3.0 * body + 2.0 * embed)


def matmul_peak(n: int, dtype: torch.dtype, reps: int = 3) -> tuple[float, float]:
    """Dense matmul (wall FLOP/s, FLOP per process-CPU-second / threads): the best of `reps`
    (n x n) @ (n x n) products (2 n³ FLOPs each)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (allocations, thread pool)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2.0 * n**3 / best, 2.0 * n**3 / max(best_cpu, 1e-9) * torch.get_num_threads()


class Step:
    """One method with the loop's optimiser, timing whole training steps."""

    def __init__(self, method: str, args: argparse.Namespace) -> None:
        torch.manual_seed(0)
        self.model = ssl_methods.create(method, backbone=args.backbone, img_size=args.img_size, in_chans=args.in_chans)
        self.model.to(dtype=args.dtype).train()
        rec = type(self.model).recipes.get("vit")  # the reference recipe's clipping and betas, as a stage uses
        self.clip = rec.clip_grad if rec is not None else None
        self.clip_mode = rec.clip_mode if rec is not None else "global"
        self.groups = self.model.param_groups(0.05)
        betas = tuple(rec.betas) if rec is not None else (0.9, 0.999)
        self.opt = make_optimizer(self.groups, OptimCfg(epochs=1, lr=1e-4, betas=betas))  # type: ignore[arg-type]
        self.params = [p for g in self.groups for p in g["params"]]
        self.images = torch.randn(args.batch, args.in_chans, args.img_size, args.img_size, dtype=args.dtype)
        self.flops = step_flops(self.model, args.batch, args.img_size, args.in_chans)

    def run(self) -> tuple[float, float]:
        """One training step as the loop runs it; returns (wall seconds, process CPU seconds / threads)."""
        c0, t0 = time.process_time(), time.perf_counter()
        loss, _ = self.model(self.images)
        self.opt.zero_grad(set_to_none=True)
        loss.float().backward()
        if self.clip:
            clip_gradients(self.params, self.clip, self.clip_mode)
        self.opt.step()
        return time.perf_counter() - t0, (time.process_time() - c0) / torch.get_num_threads()


@dataclass
class Row:
    method: str
    gflop_per_step: float
    s_per_step: float  # wall
    cpu_s_per_step: float  # process CPU seconds / threads
    achieved_gflops: float  # wall
    peak_gflops: float  # wall
    utilisation: float  # wall FLOP/s over the wall matmul peak
    utilisation_cpu: float  # FLOP per CPU-second over the matmul's (robust to descheduling on a loaded machine)


def profile(step: Step, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile as prof

    step.run()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        step.run()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="vit_base")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (peak, MAE, peak, SimMIM, peak)")
    ap.add_argument("--mm-size", type=int, default=2048, help="side of the square matmul that measures the peak")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of one step per method")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    args.dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)

    steps = {m: Step(m, args) for m in args.methods}
    for s in steps.values():  # warm-up: first-call allocations, optimiser state
        s.run()
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {m: [] for m in steps}
    cpus: dict[str, list[float]] = {m: [] for m in steps}
    utils: dict[str, list[float]] = {m: [] for m in steps}
    utils_cpu: dict[str, list[float]] = {m: [] for m in steps}
    cpu0 = time.process_time()
    peak, peak_cpu = matmul_peak(args.mm_size, args.dtype)
    peaks, peaks_cpu = [peak], [peak_cpu]
    for _ in range(args.repeats):
        for m, s in steps.items():
            t, c = s.run()
            after, after_cpu = matmul_peak(args.mm_size, args.dtype)
            peaks.append(after)
            peaks_cpu.append(after_cpu)
            times[m].append(t)
            cpus[m].append(c)
            utils[m].append(s.flops / t / ((peak + after) / 2))
            utils_cpu[m].append(s.flops / c / ((peak_cpu + after_cpu) / 2))
            peak, peak_cpu = after, after_cpu
    cpu = time.process_time() - cpu0
    load1 = os.getloadavg()
    rows = []
    for m, s in steps.items():
        t = statistics.median(times[m])
        rows.append(Row(m, s.flops / 1e9, t, statistics.median(cpus[m]), s.flops / t / 1e9, statistics.median(peaks) / 1e9,
                        statistics.median(utils[m]), statistics.median(utils_cpu[m])))
    result: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, (torch.dtype, Path)) else v) for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
        "peak_gflops_all": [p / 1e9 for p in peaks],
        "peak_gflops_cpu_all": [p / 1e9 for p in peaks_cpu],
        "loadavg_before": load0,
        "loadavg_after": load1,
        "cpu_s": cpu,
    }
    print(f"{args.backbone} {args.img_size}px batch {args.batch} {args.dtype} {args.threads} threads; "
          f"matmul {args.mm_size}^2 peak median {statistics.median(peaks) / 1e9:.1f} GFLOP/s wall "
          f"(min {min(peaks) / 1e9:.1f}, max {max(peaks) / 1e9:.1f}), {statistics.median(peaks_cpu) / 1e9:.1f} per CPU-second "
          f"x threads; load average {load0[0]:.2f} -> {load1[0]:.2f}; {cpu:.0f} CPU s")
    print(f"{'method':8s} {'GFLOP/step':>10s} {'s/step':>8s} {'cpu s':>8s} {'GFLOP/s':>8s} {'util':>6s} {'util(cpu)':>9s}")
    for r in rows:
        print(f"{r.method:8s} {r.gflop_per_step:10.1f} {r.s_per_step:8.3f} {r.cpu_s_per_step:8.3f} {r.achieved_gflops:8.1f} "
              f"{r.utilisation:6.1%} {r.utilisation_cpu:9.1%}")
    if "mae" in steps and "simmim" in steps:
        model = steps["mae"].flops / steps["simmim"].flops
        measured = statistics.median(times["mae"]) / statistics.median(times["simmim"])
        measured_cpu = statistics.median(cpus["mae"]) / statistics.median(cpus["simmim"])
        result["time_ratio_mae_simmim"] = measured
        result["cpu_time_ratio_mae_simmim"] = measured_cpu
        result["flop_ratio_mae_simmim"] = model
        print(f"MAE/SimMIM time ratio {measured:.3f} wall, {measured_cpu:.3f} CPU vs FLOP-model ratio {model:.3f} "
              f"({measured / model - 1:+.1%} wall, {measured_cpu / model - 1:+.1%} CPU)")
    if args.profile:
        for m, s in steps.items():
            table = profile(s, args.top)
            result[f"profile_{m}"] = table
            print(f"\n--- {m}: top ops by self CPU time (one step)\n{table}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
