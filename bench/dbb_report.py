"""`bench dbb SIZES.csv`: compare batching strategies for variable-size images.

Why: the DBB poster claims 119% processed tokens and "142% compute" against padding
each image to the patch size, and 807% "compute" for a fixed 1024² resize; its
compute is a squared token ratio. This command recomputes such a table from a real
list of image sizes with the per-sequence ViT FLOP model (`bench.compute`), for
every strategy that a pre-training run could use.

Input: a CSV with columns `height,width` (pixels) or PadChest's
`Rows_DICOM,Columns_DICOM`; `.csv.gz` is read directly. Sizes only, no pixels.

Strategies (each a planner in `STRATEGIES`, run on epochs 0 and 1):
- `pad_to_patch`: one image per sequence, padded to a multiple of the patch
  (gradient accumulation to the batch; the lower bound, = 100%).
- `fixed`: resize every image to S×S.
- `random_pad`: random batches, each padded to its largest member.
- `exact_buckets`: VariViT's sampler, batches of identical grids, incomplete
  batches dropped (drop_last).
- `dbb`: Dynamic Batch Binning (`bench.data.dbb`), swept over `min_batches`.
- `dbb_resize`: DBB bins, images resized to the bin shape (the pilot's smart binning).
- `dbb_fit`: DBB bins whose shape is the envelope shrunk by at most δ patches per
  dimension (`resize_bound`); larger images are downscaled by at most δ patches,
  then padded. Resized share and largest shrink are reported.
- `mixed`: mixed-shape steps (`bench.data.dbb.plan_mixed_epoch`): 64 images (or a
  token budget) per optimizer step drawn from a size-sorted pool of ~16 steps, run
  as exact-grid micro-batches with gradient accumulation; zero padding (with
  `pad_bound` δ: micro-batches of (δ+1)-patch cells, padded by at most δ per side).
- `ar_buckets`: aspect-ratio buckets of area ≈ S² with 64-px sides (kohya/SDXL),
  resize to cover then crop.

Token counts are patches after the shared resize policy (longer side capped at S);
FLOPs are forward encoder FLOPs summed per sequence, `L·(24nd² + 4n²d)` with
`n = processed patches + 1` (class token). "Real" tokens of resizing strategies are
their resampled patches (nothing is padding, but pixels changed).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from bench.compute import epoch_cost
from bench.data.dbb import BatchSizer, build_bins, grid_size, plan_epoch, plan_mixed_epoch, size_order
from bench.data.errors import DataError
from bench.registry import Registry

MODELS = ("vit_small", "vit_base", "vit_large")
SIZE_COLUMNS = (("height", "width"), ("Rows_DICOM", "Columns_DICOM"))

# DBB poster (Bühler & Hager), 639,877 radiographs; "compute" there is (token ratio)².
POSTER = {
    "pad_to_patch": ("9.22e8", 100, 100),
    "fixed": ("2.62e9", 284, 807),
    "dbb": ("1.10e9", 119, 142),
}


def read_sizes(path: str | Path) -> pd.DataFrame:
    """Read image sizes from a CSV into a frame with int64 `height`, `width` (pixels).

    Accepts `height,width` or `Rows_DICOM,Columns_DICOM` (PadChest), compressed or not.
    Raises `DataError` naming the file and the missing columns (and those found), or
    the first row with a missing, non-numeric or non-positive size.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: size list not found")
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    found = list(header.columns)
    for h_col, w_col in SIZE_COLUMNS:
        if h_col in found and w_col in found:
            break
    else:
        wanted = " or ".join(f"({h}, {w})" for h, w in SIZE_COLUMNS)
        missing = [c for c in SIZE_COLUMNS[0] if c not in found]
        raise DataError(f"{path}: missing size columns {missing} (need {wanted}); found columns {found}")
    raw = pd.read_csv(path, usecols=[h_col, w_col], low_memory=False)
    out = {}
    for col, name in ((h_col, "height"), (w_col, "width")):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() | (values <= 0) | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {col!r} has {int(bad.sum())} missing, non-integer or non-positive "
                f"values; first at data row {row + 1}: {raw[col].iloc[row]!r}"
            )
        out[name] = values.to_numpy().astype(np.int64)
    if not len(raw):
        raise DataError(f"{path}: no rows")
    return pd.DataFrame(out)


# ----------------------------------------------------------------------- epochs


@dataclass
class EpochLayout:
    """One epoch of a strategy, one image per sequence.

    `batch_of[i]`: step of image i (-1: not used this epoch). Per used image:
    `real[i]` tokens holding pixels, `processed[i]` tokens run. `shapes`: distinct
    (h, w) grids of the tensors fed to the model.
    """

    batch_of: np.ndarray
    real: np.ndarray
    processed: np.ndarray
    shapes: set[tuple[int, int]]
    n_dropped: int = 0
    n_repeated: int = 0
    n_short: int = 0  # steps with fewer images than a full step of their shape
    n_steps: int = 0
    n_micro: int = 0  # single-shape tensors run (= n_steps unless steps mix shapes)
    n_resized: int = 0  # images downscaled to fit their batch's grid (fit mode)
    max_shrink: int = 0  # largest per-dimension grid reduction of a resized image (patches)


@dataclass(frozen=True)
class SizeSet:
    """Sizes after the shared resize policy. Pixel sizes native; grids in patches."""

    height: np.ndarray
    width: np.ndarray
    gh: np.ndarray
    gw: np.ndarray
    patch: int
    max_side: int

    @classmethod
    def build(cls, height: np.ndarray, width: np.ndarray, *, patch: int, max_side: int) -> "SizeSet":
        gh, gw = grid_size(height, width, patch=patch, max_side=max_side)
        return cls(np.asarray(height), np.asarray(width), gh, gw, patch, max_side)

    @property
    def n(self) -> int:
        return int(self.gh.size)


Planner = Callable[[int], EpochLayout]
STRATEGIES: Registry[Callable[..., Planner]] = Registry("batching strategy")


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 7])


def _random_batches(n: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    out[rng.permutation(n)] = np.arange(n) // batch
    return out


def _grouped_batches(key: np.ndarray, batch: int, rng: np.random.Generator, *, drop_last: bool) -> np.ndarray:
    """Shuffle within equal keys, cut chunks of `batch`, shuffle chunk order; -1 = dropped."""
    perm = rng.permutation(key.size)
    order = perm[np.argsort(key[perm], kind="stable")]
    k = key[order]
    start = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    sizes = np.diff(np.r_[start, k.size])
    pos = np.arange(k.size) - np.repeat(start, sizes)
    chunk_in_group = pos // batch
    full = (chunk_in_group + 1) * batch <= np.repeat(sizes, sizes)
    keep = full if drop_last else np.ones(k.size, dtype=bool)
    # global chunk id = running count of chunk starts
    is_start = keep & (pos % batch == 0)
    chunk = np.cumsum(is_start) - 1
    n_chunks = int(is_start.sum())
    remap = rng.permutation(n_chunks)
    out = np.full(key.size, -1, dtype=np.int64)
    out[order[keep]] = remap[chunk[keep]]
    return out


@STRATEGIES.register("pad_to_patch")
def _pad_to_patch(s: SizeSet, *, batch_size: int, seed: int, **_: object) -> Planner:
    tokens = s.gh * s.gw

    def plan(epoch: int) -> EpochLayout:
        shapes = set(zip(s.gh.tolist(), s.gw.tolist()))
        return EpochLayout(_random_batches(s.n, batch_size, _rng(seed, epoch)), tokens, tokens, shapes)

    return plan


@STRATEGIES.register("fixed")
def _fixed(s: SizeSet, *, batch_size: int, seed: int, **_: object) -> Planner:
    g = -(-s.max_side // s.patch)
    tokens = np.full(s.n, g * g, dtype=np.int64)

    def plan(epoch: int) -> EpochLayout:
        return EpochLayout(_random_batches(s.n, batch_size, _rng(seed, epoch)), tokens, tokens, {(g, g)})

    return plan


@STRATEGIES.register("random_pad")
def _random_pad(s: SizeSet, *, batch_size: int, seed: int, **_: object) -> Planner:
    def plan(epoch: int) -> EpochLayout:
        b = _random_batches(s.n, batch_size, _rng(seed, epoch))
        nb = int(b.max()) + 1
        H = np.zeros(nb, dtype=np.int64)
        W = np.zeros(nb, dtype=np.int64)
        np.maximum.at(H, b, s.gh)
        np.maximum.at(W, b, s.gw)
        return EpochLayout(b, s.gh * s.gw, (H * W)[b], set(zip(H.tolist(), W.tolist())))

    return plan


@STRATEGIES.register("exact_buckets")
def _exact_buckets(s: SizeSet, *, batch_size: int, seed: int, **_: object) -> Planner:
    key = s.gh * (int(s.gw.max()) + 1) + s.gw
    tokens = s.gh * s.gw

    def plan(epoch: int) -> EpochLayout:
        b = _grouped_batches(key, batch_size, _rng(seed, epoch), drop_last=True)
        used = b >= 0
        shapes = set(zip(s.gh[used].tolist(), s.gw[used].tolist()))
        return EpochLayout(b, np.where(used, tokens, 0), np.where(used, tokens, 0), shapes, n_dropped=int((~used).sum()))

    return plan


def _dbb(
    s: SizeSet,
    *,
    batch_size: int,
    seed: int,
    min_batches: float = 4.0,
    mode: str = "pad",
    resize_bound: int = 1,
    token_budget: int | None = None,
    **_: object,
) -> Planner:
    sizer = BatchSizer(token_budget=token_budget) if token_budget else BatchSizer(batch_size=batch_size)
    bins = build_bins(s.gh, s.gw, sizer=sizer, min_batches=min_batches, mode=mode, resize_bound=resize_bound)

    def plan(epoch: int) -> EpochLayout:
        p = plan_epoch(bins, seed=seed, epoch=epoch, remainder="partial")
        sizes = np.fromiter((len(x) for x in p.steps), dtype=np.int64, count=len(p.steps))
        idx = np.concatenate(p.steps)
        step = np.repeat(np.arange(len(p.steps)), sizes)
        H, W = p.shape[step, 0], p.shape[step, 1]
        b = np.full(s.n, -1, dtype=np.int64)
        b[idx] = step
        proc = np.zeros(s.n, dtype=np.int64)
        proc[idx] = H * W
        real = proc.copy()
        n_resized = max_shrink = 0
        if mode == "pad":
            real = np.minimum(s.gh * s.gw, proc)
        elif mode == "fit":
            # after the bounded downscale the image keeps min(own, bin) patches per side
            real[idx] = np.minimum(s.gh[idx], H) * np.minimum(s.gw[idx], W)
            shrink = np.maximum(s.gh[idx] - H, s.gw[idx] - W)
            n_resized = int((shrink > 0).sum())
            max_shrink = int(max(0, shrink.max()))
        full = np.where(p.bin >= 0, bins.batch[np.maximum(p.bin, 0)], bins.overflow_batch) * bins.world_size
        shapes = {tuple(x) for x in p.shape.tolist()}
        return EpochLayout(
            b, real, proc, shapes, n_dropped=p.n_dropped, n_repeated=p.n_repeated,
            n_short=int((sizes < full).sum()), n_steps=len(p.steps), n_micro=len(p.steps),
            n_resized=n_resized, max_shrink=max_shrink,
        )

    return plan


STRATEGIES.register("dbb")(_dbb)


@STRATEGIES.register("dbb_resize")
def _dbb_resize(s: SizeSet, **kw: object) -> Planner:
    kw = {**kw, "mode": "resize"}
    return _dbb(s, **kw)  # type: ignore[arg-type]


@STRATEGIES.register("dbb_fit")
def _dbb_fit(s: SizeSet, **kw: object) -> Planner:
    kw = {**kw, "mode": "fit"}
    return _dbb(s, **kw)  # type: ignore[arg-type]


@STRATEGIES.register("mixed")
def _mixed(
    s: SizeSet,
    *,
    batch_size: int,
    seed: int,
    pool_batches: float = 16.0,
    token_budget: int | None = None,
    pad_bound: int = 0,
    **_: object,
) -> Planner:
    by_size = size_order(s.gh, s.gw, pad_bound=pad_bound)
    tokens = s.gh * s.gw
    sizing = {"token_budget": token_budget} if token_budget else {"batch_size": batch_size}

    def plan(epoch: int) -> EpochLayout:
        p = plan_mixed_epoch(
            s.gh, s.gw, seed=seed, epoch=epoch, pool_batches=pool_batches, pad_bound=pad_bound, by_size=by_size, **sizing
        )
        proc = np.empty(s.n, dtype=np.int64)
        proc[p.order] = np.repeat(p.micro_shape[:, 0] * p.micro_shape[:, 1], np.diff(p.micro_bounds))
        b = np.empty(s.n, dtype=np.int64)
        b[p.order] = np.repeat(np.arange(len(p)), np.diff(p.step_bounds))
        n_steps = len(p)
        sizes = np.diff(p.step_bounds)
        if token_budget:
            # steps are cut greedily, so all but the last are full; it is short if any image still fits
            last = int((tokens[p.order[p.step_bounds[-2] :]] + 1).sum())
            n_short = int(last + int(tokens.min()) + 1 <= token_budget)
        else:
            n_short = int((sizes < batch_size).sum())
        shapes = {tuple(x) for x in p.micro_shape.tolist()}
        return EpochLayout(b, tokens, proc, shapes, n_short=n_short, n_steps=n_steps, n_micro=int(p.micro_shape.shape[0]))

    return plan


def ar_buckets(max_side: int, *, step: int = 64, min_side: int | None = None) -> np.ndarray:
    """kohya-style bucket sizes (h, w) in pixels with area <= max_side², sides multiples of `step`."""
    lo = min_side or max(step, max_side // 4)
    out = set()
    for w in range(lo, max_side + 1, step):
        h = min(max_side, (max_side * max_side // w) // step * step)
        if h >= lo:
            out.add((h, w))
            out.add((w, h))
    return np.array(sorted(out), dtype=np.int64)


@STRATEGIES.register("ar_buckets")
def _ar_buckets(s: SizeSet, *, batch_size: int, seed: int, **_: object) -> Planner:
    buckets = ar_buckets(s.max_side, step=max(64, s.patch))
    log_ar = np.log(buckets[:, 0] / buckets[:, 1])
    img_ar = np.log(s.height / s.width)
    nearest = np.abs(img_ar[:, None] - log_ar[None, :]).argmin(axis=1)
    bh = buckets[nearest, 0] // s.patch
    bw = buckets[nearest, 1] // s.patch
    tokens = bh * bw

    def plan(epoch: int) -> EpochLayout:
        b = _grouped_batches(nearest, batch_size, _rng(seed, epoch), drop_last=False)
        return EpochLayout(b, tokens, tokens, set(zip(bh.tolist(), bw.tolist())))

    return plan


# ---------------------------------------------------------------------- metrics


def repeated_pair_fraction(batch_a: np.ndarray, batch_b: np.ndarray) -> float:
    """Share of same-batch image pairs of epoch a that share a batch again in epoch b.

    Batch ids per image; -1 (unused) images form no pairs. 0 when a has no pairs.
    """
    a = np.asarray(batch_a)
    b = np.asarray(batch_b)

    def pairs(key: np.ndarray) -> int:
        _, c = np.unique(key, return_counts=True)
        return int((c * (c - 1) // 2).sum())

    used_a = a >= 0
    total = pairs(a[used_a])
    if total == 0:
        return 0.0
    both = used_a & (b >= 0)
    joint = a[both] * (int(b.max()) + 1) + b[both]
    return pairs(joint) / total


@dataclass
class StrategyResult:
    strategy: str
    label: str
    n_images: int
    real: int
    processed: int
    flops: dict[str, float]
    n_shapes: int
    n_dropped: int
    n_repeated: int
    setup_s: float
    plan_s: float
    repeated_pairs: float
    n_short: int = 0
    n_steps: int = 0
    n_micro: int = 0
    n_resized: int = 0
    max_shrink: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def micro_per_step(self) -> float:
        return self.n_micro / self.n_steps if self.n_steps else float("nan")

    @property
    def padding(self) -> float:
        return 1.0 - self.real / self.processed if self.processed else 0.0


def run_strategy(name: str, sizes: SizeSet, *, label: str | None = None, **params: object) -> StrategyResult:
    """Set up strategy `name`, plan epochs 0 and 1, and account epoch 0."""
    t0 = time.perf_counter()
    planner = STRATEGIES.get(name)(sizes, **params)
    t1 = time.perf_counter()
    e0 = planner(0)
    t2 = time.perf_counter()
    e1 = planner(1)
    used = e0.batch_of >= 0
    cost = epoch_cost(e0.real[used], e0.processed[used], models=MODELS)
    return StrategyResult(
        strategy=name,
        label=label or name,
        n_images=sizes.n,
        real=cost.real,
        processed=cost.processed,
        flops=cost.flops,
        n_shapes=len(e0.shapes),
        n_dropped=e0.n_dropped,
        n_repeated=e0.n_repeated,
        setup_s=t1 - t0,
        plan_s=t2 - t1,
        repeated_pairs=repeated_pair_fraction(e0.batch_of, e1.batch_of),
        n_short=e0.n_short,
        n_steps=e0.n_steps,
        n_micro=e0.n_micro,
        n_resized=e0.n_resized,
        max_shrink=e0.max_shrink,
    )


def run_benchmark(
    height: np.ndarray,
    width: np.ndarray,
    *,
    patch: int = 16,
    max_side: int = 1024,
    batch_size: int = 64,
    min_batches: Sequence[float] = (1, 2, 4, 8),
    seed: int = 0,
) -> list[StrategyResult]:
    """All strategies for one resize cap; `pad_to_patch` first (the 100% reference)."""
    sizes = SizeSet.build(height, width, patch=patch, max_side=max_side)
    common = {"batch_size": batch_size, "seed": seed}
    out = [
        run_strategy("pad_to_patch", sizes, label="pad to patch, B=1 (GA)", **common),
        run_strategy("fixed", sizes, label=f"fixed {max_side}x{max_side} resize", **common),
        run_strategy("random_pad", sizes, label="random batch, pad to max", **common),
        run_strategy("exact_buckets", sizes, label="exact-grid buckets (VariViT)", **common),
    ]
    for m in min_batches:
        out.append(run_strategy("dbb", sizes, label=f"DBB min_batches={m:g}", min_batches=m, **common))
    out.append(run_strategy("dbb_resize", sizes, label=f"DBB resize min_batches={4:g}", min_batches=4, **common))
    out.append(run_strategy("dbb_fit", sizes, label="DBB fit δ=1 min_batches=4", min_batches=4, resize_bound=1, **common))
    out.append(run_strategy("mixed", sizes, label="mixed-shape steps, pool 16", pool_batches=16, **common))
    out.append(run_strategy("ar_buckets", sizes, label=f"AR buckets ~{max_side}^2 resize+crop", **common))
    return out


# ------------------------------------------------------------------ subset sweep

# (label, strategy, parameters); token_budget "auto" = batch_size × mean sequence length
SWEEP_STRATEGIES: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("DBB pad, min_batches=4", "dbb", {"min_batches": 4}),
    ("DBB pad, token budget, min_batches=4", "dbb", {"min_batches": 4, "token_budget": "auto"}),
    ("DBB fit δ=1, min_batches=4", "dbb_fit", {"min_batches": 4, "resize_bound": 1}),
    ("DBB fit δ=2, min_batches=1", "dbb_fit", {"min_batches": 1, "resize_bound": 2}),
    ("mixed steps, B=64, pool 16", "mixed", {"pool_batches": 16}),
    ("mixed steps, token budget, pool 16", "mixed", {"pool_batches": 16, "token_budget": "auto"}),
    ("mixed steps, B=64, pool 16, pad <= 1 patch", "mixed", {"pool_batches": 16, "pad_bound": 1}),
)
TARGETS = {"tokens": 1.02, "flops": 1.04, "repeated_pairs": 0.10, "short": 1}


@dataclass
class SweepRecord:
    n: int  # subset size (= list size for the full list)
    seed: int | None  # pandas random_state; None for the full list
    max_side: int
    label: str
    tokens: float  # processed tokens / pad-to-patch
    flops: float  # ViT-B forward FLOPs / pad-to-patch
    repeated_pairs: float
    n_short: int
    micro_per_step: float
    resized: float  # share of images downscaled (fit mode)
    max_shrink: int
    n_dropped: int
    plan_s: float

    @property
    def meets_targets(self) -> bool:
        return (
            self.tokens <= TARGETS["tokens"] and self.flops <= TARGETS["flops"]
            and self.repeated_pairs <= TARGETS["repeated_pairs"] and self.n_short <= TARGETS["short"]
            and self.n_dropped == 0
        )


def subset_sweep(
    sizes: pd.DataFrame,
    *,
    subsets: Sequence[int | None],
    repeats: int = 3,
    max_sides: Sequence[int] = (1024, 2048, 3072),
    patch: int = 16,
    batch_size: int = 64,
    strategies: Sequence[tuple[str, str, dict[str, object]]] = SWEEP_STRATEGIES,
    progress: Callable[[str], None] | None = None,
) -> list[SweepRecord]:
    """Every strategy on random subsets of a size list, relative to pad-to-patch.

    Subset `n` with seed `k` is `sizes.sample(n, random_state=k)` for k = 1..repeats
    (the issue's 7,500-image case is seed 1); `None` (or n >= the list) is the full
    list, once. Each record is one (subset, seed, cap, strategy).
    """
    out: list[SweepRecord] = []
    for n in subsets:
        full = n is None or n >= len(sizes)
        for seed in [None] if full else range(1, repeats + 1):
            df = sizes if full else sizes.sample(int(n), random_state=seed)  # type: ignore[arg-type]
            for S in max_sides:
                s = SizeSet.build(df["height"].to_numpy(), df["width"].to_numpy(), patch=patch, max_side=S)
                ref = run_strategy("pad_to_patch", s, batch_size=batch_size, seed=0)
                auto = int(batch_size * (float((s.gh * s.gw).mean()) + 1))
                for label, name, params in strategies:
                    kw = {k: (auto if v == "auto" else v) for k, v in params.items()}
                    r = run_strategy(name, s, label=label, batch_size=batch_size, seed=0, **kw)  # type: ignore[arg-type]
                    out.append(SweepRecord(
                        n=s.n, seed=None if full else seed, max_side=S, label=label,
                        tokens=r.processed / ref.processed, flops=r.flops["vit_base"] / ref.flops["vit_base"],
                        repeated_pairs=r.repeated_pairs, n_short=r.n_short, micro_per_step=r.micro_per_step,
                        resized=r.n_resized / s.n, max_shrink=r.max_shrink, n_dropped=r.n_dropped, plan_s=r.plan_s,
                    ))
                    if progress is not None:
                        progress(f"n={s.n} seed={seed} S={S} {label}: tokens {100 * out[-1].tokens:.2f}% "
                                 f"FLOPs {100 * out[-1].flops:.2f}% pairs again {100 * out[-1].repeated_pairs:.1f}%")
    return out


def _mmm(values: Sequence[float], fmt: str) -> str:
    v = sorted(values)
    if len(v) == 1:
        return fmt.format(v[0])
    return "/".join(fmt.format(x) for x in (v[0], float(np.median(v)), v[-1]))


def sweep_markdown(records: Sequence[SweepRecord]) -> str:
    """One row per (subset size, cap, strategy): min/median/max over seeds."""
    groups: dict[tuple[int, int, str], list[SweepRecord]] = {}
    for r in records:
        groups.setdefault((r.n, r.max_side, r.label), []).append(r)
    lines = [
        "| images | S | strategy | seeds | tokens % (min/med/max) | ViT-B FLOPs % | pairs again % | short steps (max) "
        "| tensors/step | resized % | max shrink (patches) | plan s | targets |",
        "|" + "---|" * 13,
    ]
    for (n, S, label), rs in groups.items():
        lines.append(
            f"| {n:,} | {S} | {label} | {len(rs)} | {_mmm([100 * r.tokens for r in rs], '{:.2f}')} "
            f"| {_mmm([100 * r.flops for r in rs], '{:.2f}')} | {_mmm([100 * r.repeated_pairs for r in rs], '{:.1f}')} "
            f"| {max(r.n_short for r in rs)} | {np.median([r.micro_per_step for r in rs]):.1f} "
            f"| {np.median([100 * r.resized for r in rs]):.1f} | {max(r.max_shrink for r in rs)} "
            f"| {max(r.plan_s for r in rs):.3f} | {'PASS' if all(r.meets_targets for r in rs) else 'FAIL'} |"
        )
    return "\n".join(lines)


SWEEP_NOTE = (
    "Targets (all seeds): tokens <= 102% and ViT-B FLOPs <= 104% of pad-to-patch, same-batch pairs meeting again "
    "next epoch <= 10%, at most one short step, nothing dropped. 'tensors/step' > 1 means the step mixes grids "
    "(gradient accumulation over micro-batches). 'DBB fit δ' downscales an image by at most δ patches per "
    "dimension (δ·16 px) to its bin's grid, then pads; 'resized %' is the share of images downscaled."
)


# ----------------------------------------------------------------------- tables


def _sci(x: float) -> str:
    e = int(np.floor(np.log10(x))) if x > 0 else 0
    return f"{x / 10**e:.2f}e{e}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(results: Sequence[StrategyResult]) -> str:
    """Full per-strategy table; percentages relative to the first row (pad to patch)."""
    ref = results[0]
    head = (
        "| strategy | real tok | processed tok | processed % | pad % | FLOPs S % | FLOPs B % | FLOPs L % "
        "| ViT-B PFLOP | (tok ratio)² | shapes | dropped | repeated | setup s | plan s | pairs again |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in results:
        ratio = r.processed / ref.processed
        lines.append(
            f"| {r.label} | {_sci(r.real)} | {_sci(r.processed)} | {_pct(ratio)} | {_pct(r.padding)} | "
            + " | ".join(_pct(r.flops[m] / ref.flops[m]) for m in MODELS)
            + f" | {r.flops['vit_base'] / 1e15:.1f} | {_pct(ratio**2)} | {r.n_shapes} | {r.n_dropped} | "
            f"{r.n_repeated} | {r.setup_s:.2f} | {r.plan_s:.3f} | {_pct(r.repeated_pairs)} |"
        )
    return "\n".join(lines)


def _poster_rows(results: Sequence[StrategyResult], dbb_label: str | None) -> list[tuple[str, str, StrategyResult]]:
    by_label = {r.label: r for r in results}
    pick = {r.strategy: r for r in reversed(results)}  # first of each strategy wins
    dbb = by_label.get(dbb_label) if dbb_label else pick.get("dbb")
    rows = [("Padded to patch size", "pad_to_patch", pick["pad_to_patch"]), ("Fixed image size", "fixed", pick["fixed"])]
    if dbb is not None:
        rows.append(("DBB", "dbb", dbb))
    return rows


def _row_name(name: str, r: StrategyResult) -> str:
    return name if name != "DBB" else f"DBB ({r.label.removeprefix('DBB ')})"


def poster_markdown(results: Sequence[StrategyResult], *, dbb_label: str | None = None) -> str:
    """The poster's three-row table recomputed, with the poster's own figures beside it."""
    ref = results[0]
    lines = [
        "| | Total input tokens | Processed tokens | Total compute (ViT-B FLOPs) | (token ratio)² | "
        "poster: tokens | poster: processed | poster: compute |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key, r in _poster_rows(results, dbb_label):
        ratio = r.processed / ref.processed
        pt, pp, pc = POSTER[key]
        lines.append(
            f"| {_row_name(name, r)} | {_sci(r.processed)} | {_pct(ratio)} | {_pct(r.flops['vit_base'] / ref.flops['vit_base'])} "
            f"| {_pct(ratio**2)} | {pt} | {pp}% | {pc}% |"
        )
    return "\n".join(lines)


def poster_latex(results: Sequence[StrategyResult], *, dbb_label: str | None = None, caption: str = "") -> str:
    """LaTeX (booktabs) version of `poster_markdown`."""

    def tex_sci(x: float) -> str:
        e = int(np.floor(np.log10(x)))
        return f"${x / 10**e:.2f} \\cdot 10^{{{e}}}$"

    ref = results[0]
    rows = []
    for name, key, r in _poster_rows(results, dbb_label):
        ratio = r.processed / ref.processed
        pt, pp, pc = POSTER[key]
        mant, exp = pt.split("e")
        rows.append(
            f"{_row_name(name, r).replace('_', chr(92) + '_')} & {tex_sci(r.processed)} & {100 * ratio:.1f}\\% & "
            f"{100 * r.flops['vit_base'] / ref.flops['vit_base']:.1f}\\% & {100 * ratio**2:.1f}\\% & "
            f"${mant} \\cdot 10^{{{exp}}}$ & {pp}\\% & {pc}\\% \\\\"
        )
    body = "\n".join(rows)
    return (
        "\\begin{table}[t]\n\\centering\n\\small\n"
        "\\begin{tabular}{lrrrr|rrr}\n\\toprule\n"
        " & \\multicolumn{4}{c|}{this benchmark} & \\multicolumn{3}{c}{poster} \\\\\n"
        " & Total input tokens & Processed & Compute (ViT-B) & (tok.\\ ratio)$^2$ & Tokens & Processed & Compute \\\\\n"
        "\\midrule\n"
        f"{body}\n"
        "\\bottomrule\n\\end{tabular}\n"
        f"\\caption{{{caption}}}\n\\end{{table}}\n"
    )


def render(results: Sequence[StrategyResult], *, title: str, dbb_label: str | None = None) -> tuple[str, str]:
    """Markdown section (poster table + full table + notes) and the LaTeX table."""
    ref = results[0]
    md = "\n".join(
        [
            f"### {title}",
            "",
            poster_markdown(results, dbb_label=dbb_label),
            "",
            f"Reference (100%): pad-to-patch, {ref.n_images:,} images, {_sci(ref.processed)} tokens, "
            f"ViT-B {ref.flops['vit_base'] / 1e15:.1f} PFLOP forward per epoch. The poster's 'compute' equals "
            "(token ratio)²; the 'Total compute' column here sums L·(24nd² + 4n²d) per sequence.",
            "",
            markdown_table(results),
            "",
        ]
    )
    tex = poster_latex(results, dbb_label=dbb_label, caption=title.replace("_", "\\_").replace("%", "\\%"))
    return md, tex


# -------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench dbb",
        description="Compare batching strategies (pad-to-patch, fixed resize, random padded batches, "
        "VariViT exact buckets, Dynamic Batch Binning, aspect-ratio buckets) on a CSV of image sizes.",
    )
    p.add_argument("sizes", type=Path, help="CSV with height,width or Rows_DICOM,Columns_DICOM (may be .gz)")
    p.add_argument("--patch", type=int, default=16, help="ViT patch size in pixels (default 16)")
    p.add_argument("--max-side", type=int, nargs="+", default=[1024], help="resize caps S to report (default 1024)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--min-batches", type=float, nargs="+", default=[1, 2, 4, 8], help="DBB sweep (default 1 2 4 8)")
    p.add_argument("--poster-dbb", type=float, default=4, help="DBB min_batches shown in the poster-shaped table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for dbb_report.md and dbb_report.tex")
    p.add_argument(
        "--subsample", nargs="+", default=None, metavar="N",
        help="subset sweep instead of the full table: random subsets of N images ('all' = the whole list), "
        "every cap of --max-side, DBB variants and mixed-shape steps; min/median/max over --repeats seeds",
    )
    p.add_argument("--repeats", type=int, default=3, help="seeds (pandas random_state 1..K) per subset size (default 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `bench dbb`; prints Markdown, optionally writes .md/.tex under --out."""
    args = build_parser().parse_args(argv)
    try:
        df = read_sizes(args.sizes)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.subsample is not None:
        try:
            subsets = [None if v == "all" else int(v) for v in args.subsample]
        except ValueError:
            print(f"error: --subsample takes image counts or 'all', got {args.subsample}", file=sys.stderr)
            return 2
        if any(n is not None and n < 1 for n in subsets) or args.repeats < 1:
            print("error: --subsample sizes and --repeats must be positive", file=sys.stderr)
            return 2
        records = subset_sweep(df, subsets=subsets, repeats=args.repeats, max_sides=args.max_side,
                               patch=args.patch, batch_size=args.batch_size)
        text = f"### {args.sizes.name}: subset sweep, patch {args.patch}, batch {args.batch_size}\n\n" + \
            sweep_markdown(records) + "\n\n" + SWEEP_NOTE + "\n"
        print(text)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "dbb_subsets.md").write_text(text)
        return 0
    mds, texs = [], []
    sweep = sorted(set(args.min_batches) | {args.poster_dbb})
    for S in args.max_side:
        res = run_benchmark(
            df["height"].to_numpy(), df["width"].to_numpy(), patch=args.patch, max_side=S,
            batch_size=args.batch_size, min_batches=sweep, seed=args.seed,
        )
        title = f"{args.sizes.name}: S={S}, patch {args.patch}, batch {args.batch_size}"
        md, tex = render(res, title=title, dbb_label=f"DBB min_batches={args.poster_dbb:g}")
        mds.append(md)
        texs.append(tex)
    text = "\n".join(mds)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dbb_report.md").write_text(text)
        (args.out / "dbb_report.tex").write_text("\n".join(texs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
