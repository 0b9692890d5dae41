"""Training throughput of each SSL method: images/s for one optimiser step.

A step is what the generic pre-training loop does: forward (views, masks and
augmentations included), backward, AdamW step over `param_groups`, `after_step`.
Inputs are random (B, C, S, S) tensors in [0, 1]; timing excludes `--warmup`
steps, synchronises CUDA, runs the methods round-robin and reports the median step. Prints one row per (method, device) and the MAE /
SimMIM throughput ratio (MAE's encoder sees 25% of the tokens, so >= 2.5x is
expected for ViT-S/16 at 224 px).

    OMP_NUM_THREADS=1 python benchmarks/ssl_throughput.py                  # ViT-S/16, 224 px, batch 8, CPU
    python benchmarks/ssl_throughput.py --device cuda --batch 64 --amp     # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import yaml

import ssl_methods

ALL = ("mae", "simmim", "gmml", "sit", "dino", "mocov3")


@dataclass
class Result:
    method: str
    device: str
    images_per_s: float
    s_per_step: float
    trainable_m: float


class Bench:
    """One method on one device, ready to time single optimiser steps."""

    def __init__(self, method: str, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(0)
        self.method = method
        self.device = device
        self.model = ssl_methods.create(
            method, backbone=args.backbone, img_size=args.img_size, in_chans=args.in_chans, **args.cfg.get(method, {})
        )
        self.model.to(device).train()
        self.opt = torch.optim.AdamW(self.model.param_groups(0.05), lr=1e-4)
        self.images = torch.rand(args.batch, args.in_chans, args.img_size, args.img_size, device=device)
        self.amp = args.amp and device.type == "cuda"
        self.total = args.warmup + args.steps
        self.done = 0
        self.times: list[float] = []

    def step(self, timed: bool) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = self.model(self.images)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.done += 1
        self.model.after_step(self.done / self.total)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.times.append(time.perf_counter() - start)

    def result(self, batch: int) -> Result:
        med = statistics.median(self.times)
        trainable = sum(p.numel() for g in self.model.param_groups(0.05) for p in g["params"]) / 1e6
        return Result(self.method, str(self.device), batch / med, med, trainable)


def run_device(args: argparse.Namespace, device: torch.device) -> list[Result]:
    """Times the methods round-robin (one step of each per round) and reports the median
    step time, so that load changes on a shared machine hit every method alike."""
    benches = [Bench(m, args, device) for m in args.methods]
    for b in benches:
        for _ in range(args.warmup):
            b.step(timed=False)
    for _ in range(args.steps):
        for b in benches:
            b.step(timed=True)
    return [b.result(args.batch) for b in benches]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['mae.decoder_depth=2'] -> {'mae': {'decoder_depth': 2}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects METHOD.KEY=VALUE, got {item!r}")
        out.setdefault(method, {})[name] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(ALL), choices=ssl_methods.list_methods())
    p.add_argument("--backbone", default="vit_small")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CPU, plus CUDA if present)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="method config override, e.g. mae.decoder_depth=2 (value parsed as YAML)")
    args = p.parse_args(argv)
    args.cfg = parse_overrides(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(args.device)]
    print(
        f"backbone={args.backbone} img={args.img_size} in_chans={args.in_chans} batch={args.batch} "
        f"steps={args.steps} (+{args.warmup} warm-up) threads={torch.get_num_threads()} amp={args.amp} "
        f"overrides={args.cfg or 'none'}"
    )
    print(f"{'method':<8} {'device':<7} {'img/s':>9} {'s/step':>8} {'trainable M':>12}")
    results: list[Result] = []
    for dev in devices:
        for r in run_device(args, dev):
            results.append(r)
            print(f"{r.method:<8} {r.device:<7} {r.images_per_s:>9.2f} {r.s_per_step:>8.3f} {r.trainable_m:>12.2f}",
                  flush=True)
    for dev in devices:
        by = {r.method: r for r in results if r.device == str(dev)}
        if "mae" in by and "simmim" in by:
            print(f"MAE / SimMIM throughput on {dev}: {by['mae'].images_per_s / by['simmim'].images_per_s:.2f}x")


if __name__ == "__main__":
    main()
