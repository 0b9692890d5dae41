"""Wall time of tiny-MAE training steps: fixed-size batches vs Dynamic Batch Binning.

Why: the batching benchmark (`bench dbb`) predicts compute from token counts with a
FLOP model. This script checks on real training steps (forward + backward + AdamW)
of the project's MAE (`ssl_methods.mae`, `vit_tiny_demo` backbone) how much time
DBB saves against resizing every image to S×S, and how well FLOPs predict it.

Data: a synthetic variable-size set (sizes only matter for timing): longer side
log-uniform in [min_side, S] px, log-normal aspect ratio. Pixels are random.
- fixed: each image resized to S×S, random batches of B.
- DBB: `DBBBatchSampler` (pad mode), padded batches with the `valid` token mask.
Steps of the two strategies are interleaved (fixed, DBB, fixed, ...) so CPU load
drift from other processes hits both alike; batch building is not timed.

Predictions per step (training = 3× forward):
- "MAE FLOPs": encoder on the visible tokens (K + cls, K = max over the batch of
  int(n_valid·(1 − mask_ratio))), decoder on all L + 1 tokens (padding included),
  patch embedding, decoder embedding and pixel head.
- "ViT per-sequence FLOPs": the report's model, the full encoder on L + 1 tokens.
A least-squares fit `time = a·FLOPs + c` over all steps gives the effective FLOP
rate and the fixed per-step overhead that a FLOP model cannot see.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dbb_mae_walltime.py --steps 150
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import ssl_methods
from bench.compute import ViTConfig, encoder_flops, patch_embed_flops
from bench.data.dbb import DBBBatchSampler, pad_to_grid, policy_size


@dataclass
class StepRecord:
    strategy: str
    seconds: float  # wall clock
    cpu_seconds: float  # process CPU time: less sensitive to other processes on a shared machine
    images: int
    grid: tuple[int, int]
    real_tokens: int
    mae_flops: float
    vit_flops: float


def synthetic_sizes(n: int, *, min_side: int, max_side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    longer = np.exp(rng.uniform(np.log(min_side), np.log(max_side), n))
    aspect = np.clip(rng.lognormal(0.0, 0.25, n), 0.5, 2.0)
    h = np.where(aspect >= 1, longer, longer * aspect)
    w = np.where(aspect >= 1, longer / aspect, longer)
    return np.maximum(8, h).astype(np.int64), np.maximum(8, w).astype(np.int64)


def mae_train_flops(
    n_valid: np.ndarray, grid: tuple[int, int], *, enc: ViTConfig, dec: ViTConfig, patch: int, in_chans: int, mask_ratio: float
) -> float:
    """Training FLOPs (3× forward) of one MAE step on a batch padded to `grid`."""
    L = grid[0] * grid[1]
    B = int(n_valid.size)
    k = max(max(1, int(n * (1 - mask_ratio))) for n in n_valid.tolist())
    fwd = B * (
        float(encoder_flops(k + 1, enc))
        + float(patch_embed_flops(L, width=enc.width, patch=patch, in_chans=in_chans))
        + 2.0 * (k + 1) * enc.width * dec.width  # decoder_embed
        + float(encoder_flops(L + 1, dec))
        + 2.0 * (L + 1) * dec.width * patch * patch * in_chans  # decoder_pred
    )
    return 3.0 * fwd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-side", type=int, default=128, help="S: fixed size and DBB cap, px")
    ap.add_argument("--min-side", type=int, default=40)
    ap.add_argument("--min-batches", type=float, default=2)
    ap.add_argument("--steps", type=int, default=150, help="timed steps per strategy")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    S, B = args.max_side, args.batch_size
    model = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=S, in_chans=1, augment=False)
    patch = int(model.patch)
    if S % patch:
        raise SystemExit(f"--max-side {S} must be a multiple of the patch size {patch}")
    enc_m = model.encoder
    enc = ViTConfig("enc", width=enc_m.embed_dim, depth=len(enc_m.blocks), heads=enc_m.blocks[0].attn.num_heads)
    dec = ViTConfig("dec", width=model.decoder_embed.out_features, depth=len(model.decoder_blocks), heads=1)
    ratio = model.cfg.mask_ratio
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    h, w = synthetic_sizes(args.n_images, min_side=args.min_side, max_side=S, seed=args.seed)
    ph, pw = policy_size(h, w, max_side=S)
    sampler = DBBBatchSampler.from_sizes(h, w, patch=patch, max_side=S, batch_size=B, min_batches=args.min_batches, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    gfix = (S // patch, S // patch)

    def dbb_batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            for b in sampler:
                imgs = [torch.rand(1, int(ph[i]), int(pw[i])) for i in b]
                x, valid = pad_to_grid(imgs, b.shape, patch=patch)
                yield x, valid, b.shape
            epoch += 1

    def fixed_batches():
        while True:
            for idx in np.array_split(rng.permutation(args.n_images), max(1, args.n_images // B)):
                imgs = [torch.rand(1, 1, int(ph[i]), int(pw[i])) for i in idx]
                x = torch.cat([F.interpolate(t, size=(S, S), mode="bilinear", align_corners=False) for t in imgs])
                yield x, None, gfix

    records: list[StepRecord] = []
    gens = {"fixed": fixed_batches(), "dbb": dbb_batches()}
    for step in range(args.warmup + args.steps):
        for name, gen in gens.items():
            x, valid, grid = next(gen)
            L = grid[0] * grid[1]
            n_valid = valid.sum(1).numpy() if valid is not None else np.full(x.shape[0], L)
            t0, c0 = time.perf_counter(), time.process_time()
            loss, _ = model(x, valid=valid)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if step >= args.warmup:
                records.append(
                    StepRecord(
                        name, dt, dc, int(x.shape[0]), tuple(grid), int(n_valid.sum()),
                        mae_train_flops(n_valid, grid, enc=enc, dec=dec, patch=patch, in_chans=1, mask_ratio=ratio),
                        3.0 * x.shape[0] * float(encoder_flops(L + 1, enc)),
                    )
                )

    def per_image(name: str, attr: str) -> float:
        rs = [r for r in records if r.strategy == name]
        return sum(getattr(r, attr) for r in rs) / sum(r.images for r in rs)

    t_ratio = per_image("dbb", "seconds") / per_image("fixed", "seconds")
    c_ratio = per_image("dbb", "cpu_seconds") / per_image("fixed", "cpu_seconds")
    mae_ratio = per_image("dbb", "mae_flops") / per_image("fixed", "mae_flops")
    vit_ratio = per_image("dbb", "vit_flops") / per_image("fixed", "vit_flops")
    # time = a * flops + c per step (pooled over both strategies), on CPU time
    X = np.array([[r.mae_flops, 1.0] for r in records])
    y = np.array([r.cpu_seconds for r in records])
    (a, c), *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ np.array([a, c])
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    by = {n: [i for i, r in enumerate(records) if r.strategy == n] for n in gens}
    per_image_pred = {n: pred[by[n]].sum() / sum(records[i].images for i in by[n]) for n in gens}
    fit_ratio = per_image_pred["dbb"] / per_image_pred["fixed"]
    n_dbb = [r for r in records if r.strategy == "dbb"]
    n_fix = [r for r in records if r.strategy == "fixed"]
    tok_ratio = (sum(r.real_tokens for r in n_dbb) / sum(r.images for r in n_dbb)) / (gfix[0] * gfix[1])
    proc_ratio = (sum(r.images * r.grid[0] * r.grid[1] for r in n_dbb) / sum(r.images for r in n_dbb)) / (gfix[0] * gfix[1])

    print(f"tiny MAE (vit_tiny_demo: patch {patch}, {enc.width}-d x {enc.depth}; decoder {dec.width}-d x {dec.depth}), "
          f"mask {ratio:.2f}, {args.n_images} synthetic images {args.min_side}-{S} px, batch {B}, S={S}, "
          f"DBB min_batches={args.min_batches:g} ({sampler.bins.n_bins} bins), {args.steps} timed steps each, 1 thread")
    for label, rs, key in (("fixed", n_fix, "fixed"), ("DBB  ", n_dbb, "dbb")):
        print(f"{label}: wall {sum(r.seconds for r in rs):.1f} s, CPU {sum(r.cpu_seconds for r in rs):.1f} s for "
              f"{sum(r.images for r in rs)} images ({1e3 * per_image(key, 'seconds'):.2f} / "
              f"{1e3 * per_image(key, 'cpu_seconds'):.2f} ms/image wall / CPU), {len({r.grid for r in rs})} distinct shapes")
    print("")
    print("| quantity (DBB / fixed, per image) | ratio |")
    print("|---|---|")
    print(f"| processed tokens | {proc_ratio:.3f} |")
    print(f"| real tokens after resize policy (vs fixed S×S) | {tok_ratio:.3f} |")
    print(f"| ViT per-sequence FLOPs (report model) | {vit_ratio:.3f} |")
    print(f"| MAE training FLOPs (encoder on visible, decoder on all) | {mae_ratio:.3f} |")
    print(f"| fit a·FLOPs + c per step (CPU time) | {fit_ratio:.3f} |")
    print(f"| **measured CPU time** | **{c_ratio:.3f}** |")
    print(f"| **measured wall time** | **{t_ratio:.3f}** |")
    print("")
    print(f"fit on CPU time: a = {1e9 * a:.3f} s/GFLOP ({1 / a / 1e9:.2f} GFLOP/s effective), c = {1e3 * c:.1f} ms per step overhead, R² = {r2:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
