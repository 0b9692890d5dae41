"""Dynamic Batch Binning (DBB): batches of variable-size radiographs with little padding.

Why: a ViT can run on any grid of patches, but a batch needs one tensor shape.
Resizing everything to S×S wastes compute on small images and destroys detail on
large ones; padding random batches to their largest member wastes most of the batch.
DBB groups images whose patch grids are close into *bins*, pads every image of a bin
to the bin's shape, and draws every batch from a single bin.

Pipeline (all sizes come from index metadata, never from decoding pixels):

1. Resize policy (`policy_size`, `grid_size`): keep the native resolution, cap the
   longer side at `max_side` pixels keeping the aspect ratio, then count patches with
   ceil (the last row/column of patches is partly real, partly padding).
2. Bin construction (`build_bins`, once per dataset): start from one bin per distinct
   grid (h, w), then repeatedly merge the sparsest bin (fewest images relative to
   `min_batches` full global batches) into the neighbour that adds the fewest padding
   tokens; a merged bin's shape is the element-wise max of its members. Sparse bins
   are merged, never dropped.
3. Remainders: a bin rarely holds an exact multiple of the global batch. Its
   leftover images (a fixed count per epoch, different images each epoch) are
   *promoted* to the smallest bin whose shape covers it, where they are padded a bit
   more. Leftovers of bins with no cover end in one overflow pool padded to the
   element-wise max of those bins. Only the overflow pool's last step can be short;
   `remainder=` says what happens to it ("partial", "drop", "fill"), and the counts
   of dropped/repeated images are reported in `EpochPlan`.
4. Per epoch (`DBBBatchSampler.plan`): shuffle images within bins, pick leftovers,
   cut global steps of `world_size × B_k` images, shuffle the order of steps across
   bins. Deterministic in (seed, epoch); every rank computes the same plan and takes
   its slice, so all ranks run the same number of steps and the same shape per step.

Shapes are `(h, w)` in patches ("grid") unless named `*_px`. Batch sizes are per
rank. `mode="resize"` (the pilot study's "smart binning") resizes each image to its
bin's representative shape (rounded mean grid of the bin's members) instead of padding.
`mode="fit"` bounds the resize: a bin's shape is its envelope shrunk by at most
`resize_bound` δ patches per dimension; images larger than the shape are downscaled
by at most δ patches (δ·p pixels) per side, then everything is padded.

Single-shape steps need a full batch of (nearly) equal grids, which small or diverse
size lists do not have: on random 5,000-7,500-image PadChest subsets at S = 3072 the
bins above cost 110-116% of pad-to-patch tokens (benchmarks/dbb_subsets.py), and no
bound of one or two patches fixes it. `plan_mixed_epoch` / `MixedStepSampler` plan
*mixed-shape steps* instead: a step of B images (or a token budget) drawn from a
size-sorted pool, run as exact-grid micro-batches with gradient accumulation (zero
padding, same-step pairs rarely meet again). Pre-training runs them with
`batching.options: {steps: mixed}` (`bench.train.mixed`, gradient accumulation in
`bench.train.loop.fit`); `DBBBatchSampler` keeps one shape per step (`steps: single`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from bench.compute import ViTConfig, encoder_flops, get_vit_config

MODES = ("pad", "resize", "fit")
REMAINDER_POLICIES = ("partial", "drop", "fill")


# --------------------------------------------------------------------------- policy


def policy_size(height: np.ndarray, width: np.ndarray, *, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel size after the resize policy: downscale so the longer side is <= `max_side`.

    Aspect ratio is kept; images already within the cap are untouched (never
    upsampled). Sides are rounded half-up and at least 1 px. `max_side=None` keeps
    native sizes. Returns int64 arrays (height, width).
    """
    h = np.asarray(height, dtype=np.int64)
    w = np.asarray(width, dtype=np.int64)
    if h.shape != w.shape:
        raise ValueError(f"height shape {h.shape} != width shape {w.shape}")
    if h.size and (h.min() < 1 or w.min() < 1):
        raise ValueError("image sizes must be positive")
    if max_side is None:
        return h.copy(), w.copy()
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    longer = np.maximum(h, w)
    scale = np.minimum(1.0, max_side / longer)
    hh = np.maximum(1, np.floor(h * scale + 0.5).astype(np.int64))
    ww = np.maximum(1, np.floor(w * scale + 0.5).astype(np.int64))
    # the longer side lands exactly on the cap (guards against float rounding)
    capped = longer > max_side
    hh = np.where(capped & (h >= w), max_side, hh)
    ww = np.where(capped & (w > h), max_side, ww)
    return hh, ww


def grid_size(
    height: np.ndarray, width: np.ndarray, *, patch: int, max_side: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Patch grid (rows, cols) after the resize policy: `ceil(policy_size / patch)`."""
    if patch < 1:
        raise ValueError(f"patch must be positive, got {patch}")
    hh, ww = policy_size(height, width, max_side=max_side)
    return -(-hh // patch), -(-ww // patch)


# --------------------------------------------------------------------- batch sizing


@dataclass(frozen=True)
class BatchSizer:
    """Per-rank batch size of a bin as a function of its grid shape.

    Exactly one of `batch_size` (fixed), `token_budget` (max processed tokens per rank
    per step, counting `num_prefix_tokens` per sequence) or `flop_budget` (max encoder
    forward FLOPs per rank per step for `model`, per-sequence formula) must be set.
    Budgets give big images small batches, bounding activation memory.
    """

    batch_size: int | None = None
    token_budget: int | None = None
    flop_budget: float | None = None
    model: str | ViTConfig = "vit_base"
    num_prefix_tokens: int = 1

    def __post_init__(self) -> None:
        given = [k for k in ("batch_size", "token_budget", "flop_budget") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of batch_size, token_budget, flop_budget; got {given or 'none'}")
        value = getattr(self, given[0])
        if value <= 0:
            raise ValueError(f"{given[0]} must be positive, got {value}")

    def sequence_cost(self, grid_h: np.ndarray, grid_w: np.ndarray) -> np.ndarray:
        """Cost of one sequence in the unit of the active budget (tokens or FLOPs)."""
        n = np.asarray(grid_h, dtype=np.int64) * np.asarray(grid_w, dtype=np.int64) + self.num_prefix_tokens
        if self.flop_budget is not None:
            return np.asarray(encoder_flops(n, get_vit_config(self.model)), dtype=np.float64)
        return n.astype(np.float64)

    def __call__(self, grid_h: np.ndarray, grid_w: np.ndarray) -> np.ndarray:
        gh = np.atleast_1d(np.asarray(grid_h, dtype=np.int64))
        gw = np.atleast_1d(np.asarray(grid_w, dtype=np.int64))
        if self.batch_size is not None:
            return np.full(gh.shape, int(self.batch_size), dtype=np.int64)
        budget = float(self.token_budget if self.token_budget is not None else self.flop_budget)
        cost = self.sequence_cost(gh, gw)
        too_big = cost > budget
        if np.any(too_big):
            i = int(np.argmax(too_big))
            unit = "tokens" if self.token_budget is not None else "FLOPs"
            raise ValueError(
                f"budget of {budget:.4g} {unit} per step is smaller than one sequence of grid "
                f"({gh[i]}, {gw[i]}) = {cost[i]:.4g} {unit}; raise the budget or lower max_side"
            )
        return np.floor(budget / cost).astype(np.int64)


# ------------------------------------------------------------------------------ bins


@dataclass(frozen=True)
class Bins:
    """Static bin structure of a dataset (independent of seed and epoch).

    K bins, N images. `envelope[k]` is the element-wise max grid of bin k's members;
    `shape[k]` is what images of bin k become (= envelope in pad mode, the rounded
    mean member grid in resize mode). `parent[k]` is the bin receiving k's leftover
    images (-1: the overflow pool). `order` lists bins children-first. Per-epoch image
    counts are fixed: `full_steps[k]` global steps of `batch[k] × world_size` images.
    """

    grid: np.ndarray  # (N, 2) int64 grid of every image
    assign: np.ndarray  # (N,) int64 bin of every image
    envelope: np.ndarray  # (K, 2) int64
    shape: np.ndarray  # (K, 2) int64
    batch: np.ndarray  # (K,) int64 per-rank batch size
    parent: np.ndarray  # (K,) int64, -1 = overflow
    order: np.ndarray  # (K,) int64 processing order, children before parents
    counts: np.ndarray  # (K,) own images
    incoming: np.ndarray  # (K,) leftovers promoted into the bin per epoch
    full_steps: np.ndarray  # (K,) global steps per epoch
    overflow_shape: tuple[int, int]
    overflow_batch: int
    overflow_count: int  # images in the overflow pool per epoch
    world_size: int
    mode: str
    resize_bound: int = 0  # fit mode: most patches an image's grid shrinks per dimension


    @property
    def n_bins(self) -> int:
        return int(self.envelope.shape[0])


def _merge_sparse(
    gh: np.ndarray,
    gw: np.ndarray,
    n: np.ndarray,
    sizer: BatchSizer,
    world_size: int,
    min_batches: float,
    resize_bound: int = 0,
) -> np.ndarray:
    """Greedy agglomeration of distinct grids; returns the final owner of each grid.

    While some bin holds fewer than `min_batches` global batches, the sparsest one
    is merged into the bin for which the merge adds the fewest processed tokens:
    `(n_a + n_b)·area(shape of union) − n_a·area_a − n_b·area_b`. A bin's shape is
    its envelope, or with `resize_bound` δ > 0 the envelope shrunk by up to δ per
    dimension but never below the smallest member (`fit_shape`).
    """
    d = int(resize_bound)
    H = gh.astype(np.int64).copy()
    W = gw.astype(np.int64).copy()
    Hmin, Wmin = H.copy(), W.copy()
    cnt = n.astype(np.float64).copy()
    ids = np.arange(H.size)  # position -> original grid id (compacted now and then)
    owner = np.arange(H.size)
    need = min_batches * sizer(H, W).astype(np.float64) * world_size
    ratio = cnt / need
    area = H * W  # area of each bin's shape (members of one grid: no resize)
    dead = np.zeros(H.size, dtype=bool)
    alive = H.size
    while alive > 1:
        a = int(np.argmin(ratio))
        if ratio[a] >= 1.0:
            break
        Hn = np.maximum(H, H[a])
        Wn = np.maximum(W, W[a])
        if d:
            Hs = np.maximum(Hn - d, np.minimum(Hmin, Hmin[a]))
            Ws = np.maximum(Wn - d, np.minimum(Wmin, Wmin[a]))
            cost = (cnt + cnt[a]) * (Hs * Ws) - cnt * area - cnt[a] * area[a]
        else:
            Hs, Ws = Hn, Wn
            cost = (cnt + cnt[a]) * (Hn * Wn) - cnt * area - cnt[a] * area[a]
        cost[dead] = np.inf
        cost[a] = np.inf
        b = int(np.argmin(cost))
        H[b], W[b] = Hn[b], Wn[b]
        Hmin[b], Wmin[b] = min(Hmin[b], Hmin[a]), min(Wmin[b], Wmin[a])
        area[b] = Hs[b] * Ws[b]
        cnt[b] += cnt[a]
        need[b] = min_batches * float(sizer(Hs[b : b + 1], Ws[b : b + 1])[0]) * world_size
        ratio[b] = cnt[b] / need[b]
        owner[ids[a]] = ids[b]
        dead[a] = True
        ratio[a] = np.inf
        alive -= 1
        if alive < H.size // 2 and H.size > 256:
            keep = ~dead
            H, W, cnt, need, ratio, ids = H[keep], W[keep], cnt[keep], need[keep], ratio[keep], ids[keep]
            Hmin, Wmin, area = Hmin[keep], Wmin[keep], area[keep]
            dead = dead[keep]
    # path-compress owner chains to their final bin
    while True:
        nxt = owner[owner]
        if np.array_equal(nxt, owner):
            return owner
        owner = nxt


def build_bins(
    grid_h: np.ndarray,
    grid_w: np.ndarray,
    *,
    sizer: BatchSizer,
    world_size: int = 1,
    min_batches: float = 4.0,
    mode: str = "pad",
    resize_bound: int = 1,
) -> Bins:
    """Form bins over patch grids; see the module docstring for the algorithm.

    `min_batches` is DBB's main knob: each bin must hold at least that many global
    batches of its own images. Larger values give fewer, coarser bins (more padding,
    fewer shapes, more varied batch compositions); smaller values give tighter bins
    but more leftovers to promote.

    `resize_bound` (δ, patches; fit mode only) bounds the resize: an image whose grid
    exceeds its batch's shape is downscaled by at most δ patches per dimension, then
    padded. A bin's shape is `max(envelope − δ, smallest member)` per dimension, so a
    bin of one grid is never resized, and leftovers are promoted only to bins they
    reach within δ.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if resize_bound < 0:
        raise ValueError(f"resize_bound must be >= 0 patches, got {resize_bound}")
    delta = int(resize_bound) if mode == "fit" else 0
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if min_batches <= 0:
        raise ValueError(f"min_batches must be positive, got {min_batches}")
    gh = np.asarray(grid_h, dtype=np.int64).ravel()
    gw = np.asarray(grid_w, dtype=np.int64).ravel()
    if gh.shape != gw.shape:
        raise ValueError(f"grid_h has {gh.size} entries, grid_w {gw.size}")
    if gh.size == 0:
        raise ValueError("cannot bin an empty dataset")
    if gh.min() < 1 or gw.min() < 1:
        raise ValueError("grid sizes must be >= 1 patch")

    key = gh * (int(gw.max()) + 1) + gw
    uniq, inv, ucount = np.unique(key, return_inverse=True, return_counts=True)
    ugh, ugw = uniq // (int(gw.max()) + 1), uniq % (int(gw.max()) + 1)
    owner = _merge_sparse(ugh, ugw, ucount, sizer, world_size, min_batches, delta)
    roots, grid_bin = np.unique(owner, return_inverse=True)
    assign = grid_bin[inv]
    K = roots.size
    counts = np.bincount(assign, minlength=K).astype(np.int64)
    env_h = np.zeros(K, dtype=np.int64)
    env_w = np.zeros(K, dtype=np.int64)
    np.maximum.at(env_h, assign, gh)
    np.maximum.at(env_w, assign, gw)
    envelope = np.stack([env_h, env_w], axis=1)
    if mode == "pad":
        shape = envelope.copy()
    elif mode == "fit":
        min_h = np.full(K, np.iinfo(np.int64).max, dtype=np.int64)
        min_w = min_h.copy()
        np.minimum.at(min_h, assign, gh)
        np.minimum.at(min_w, assign, gw)
        shape = np.stack([np.maximum(env_h - delta, min_h), np.maximum(env_w - delta, min_w)], axis=1)
    else:
        mean_h = np.bincount(assign, weights=gh, minlength=K) / counts
        mean_w = np.bincount(assign, weights=gw, minlength=K) / counts
        shape = np.stack([np.floor(mean_h + 0.5), np.floor(mean_w + 0.5)], axis=1).astype(np.int64)
    batch = sizer(shape[:, 0], shape[:, 1])

    # children before parents: (area, index) strictly increases along parent links
    area = env_h * env_w
    order = np.lexsort((np.arange(K), area))
    rank_of = np.empty(K, dtype=np.int64)
    rank_of[order] = np.arange(K)
    parent = np.full(K, -1, dtype=np.int64)
    # reach: element-wise max grid of any image that can end in bin k (own + promoted)
    reach = envelope.copy()
    if delta:
        # a parent's shape must take every image that can reach the child within δ;
        # reach grows along parent links, so parents are chosen children-first
        for k in order:
            ok = (shape[:, 0] >= reach[k, 0] - delta) & (shape[:, 1] >= reach[k, 1] - delta)
            ok &= rank_of > rank_of[k]
            if ok.any():
                cand = np.flatnonzero(ok)
                p = int(cand[np.argmin(shape[cand, 0] * shape[cand, 1])])
                parent[k] = p
                reach[p] = np.maximum(reach[p], reach[k])
        chunk = K + 1  # skip the cover search below
    else:
        chunk = max(1, (1 << 22) // K)  # rows per block: bounds the K×K comparison to ~4M cells
    for lo in range(0, K if not delta else 0, chunk):
        rows = slice(lo, min(K, lo + chunk))
        covers = (env_h[None, :] >= env_h[rows, None]) & (env_w[None, :] >= env_w[rows, None])
        covers &= rank_of[None, :] > rank_of[rows, None]
        cand_area = np.where(covers, area[None, :], np.iinfo(np.int64).max)
        best = np.argmin(cand_area, axis=1)
        parent[rows] = np.where(covers.any(axis=1), best, -1)

    G = batch * world_size
    incoming = np.zeros(K, dtype=np.int64)
    full_steps = np.zeros(K, dtype=np.int64)
    overflow = 0
    ov_h = ov_w = 0
    for k in order:
        total = counts[k] + incoming[k]
        full_steps[k] = total // G[k]
        rem = int(total % G[k])
        if rem:
            if parent[k] >= 0:
                incoming[parent[k]] += rem
            else:
                overflow += rem
                ov_h, ov_w = max(ov_h, int(shape[k, 0])), max(ov_w, int(shape[k, 1]))
                if mode != "resize":
                    ov_h = max(ov_h, int(reach[k, 0]) - delta)
                    ov_w = max(ov_w, int(reach[k, 1]) - delta)
    ov_batch = int(sizer(np.array([max(ov_h, 1)]), np.array([max(ov_w, 1)]))[0]) if overflow else 0
    return Bins(
        grid=np.stack([gh, gw], axis=1),
        assign=assign.astype(np.int64),
        envelope=envelope,
        shape=shape,
        batch=batch,
        parent=parent,
        order=order.astype(np.int64),
        counts=counts,
        incoming=incoming,
        full_steps=full_steps,
        overflow_shape=(ov_h, ov_w),
        overflow_batch=ov_batch,
        overflow_count=overflow,
        world_size=world_size,
        mode=mode,
        resize_bound=delta,
    )


# ----------------------------------------------------------------------- epoch plan


@dataclass
class EpochPlan:
    """All global steps of one epoch, identical on every rank.

    `steps[s]` holds the dataset indices of global step s for all ranks together
    (rank r takes `rank_slice(s, r)`); `shape[s]` is its grid (h, w); `bin[s]` its
    bin (-1: overflow pool). `n_dropped` images are missing from this epoch and
    `n_repeated` extra copies were added, both only through the remainder policy.
    """

    steps: list[np.ndarray]
    shape: np.ndarray  # (S, 2)
    bin: np.ndarray  # (S,)
    batch: np.ndarray  # (S,) per-rank batch size of the step (partial step: ceil)
    world_size: int
    n_images: int
    n_dropped: int = 0
    n_repeated: int = 0
    repeated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.steps)

    def rank_slice(self, step: int, rank: int) -> np.ndarray:
        """Indices of `step` that rank `rank` processes (contiguous chunks, near-equal sizes)."""
        idx = self.steps[step]
        b = int(self.batch[step])
        if idx.size == b * self.world_size:
            return idx[rank * b : (rank + 1) * b]
        return np.array_split(idx, self.world_size)[rank]

    def batches(self, rank: int = 0) -> list[np.ndarray]:
        return [self.rank_slice(s, rank) for s in range(len(self.steps))]


def plan_epoch(bins: Bins, *, seed: int, epoch: int, remainder: str = "partial") -> EpochPlan:
    """Plan one epoch: shuffle within bins, promote leftovers, cut steps, shuffle steps.

    Deterministic in (seed, epoch). Vectorised over images; the Python loop runs over
    bins only. The overflow pool's short last step (if any) is placed last.
    """
    if remainder not in REMAINDER_POLICIES:
        raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    N = bins.assign.size
    K = bins.n_bins
    perm = rng.permutation(N)
    grouped = perm[np.argsort(bins.assign[perm], kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(bins.counts)])
    carry: list[list[np.ndarray]] = [[] for _ in range(K)]
    overflow: list[np.ndarray] = []
    blocks: list[np.ndarray] = []  # (steps_k, G_k) arrays
    block_bin: list[int] = []
    W = bins.world_size
    for k in bins.order:
        pool = grouped[bounds[k] : bounds[k + 1]]
        if carry[k]:
            pool = rng.permutation(np.concatenate([pool, *carry[k]]))
        G = int(bins.batch[k]) * W
        n_full = int(bins.full_steps[k])
        if n_full:
            blocks.append(pool[: n_full * G].reshape(n_full, G))
            block_bin.append(int(k))
        rest = pool[n_full * G :]
        if rest.size:
            (carry[bins.parent[k]] if bins.parent[k] >= 0 else overflow).append(rest)

    steps: list[np.ndarray] = []
    step_bin: list[int] = []
    for blk, k in zip(blocks, block_bin):
        steps.extend(blk)
        step_bin.extend([k] * blk.shape[0])
    shapes = [tuple(bins.shape[k]) for k in step_bin]
    batch = [int(bins.batch[k]) for k in step_bin]

    n_dropped = n_repeated = 0
    repeated = np.zeros(0, dtype=np.int64)
    tail: np.ndarray | None = None
    if overflow:
        pool = rng.permutation(np.concatenate(overflow))
        G = bins.overflow_batch * W
        n_full = pool.size // G
        for s in range(n_full):
            steps.append(pool[s * G : (s + 1) * G])
            step_bin.append(-1)
            shapes.append(bins.overflow_shape)
            batch.append(bins.overflow_batch)
        tail = pool[n_full * G :]
    order = rng.permutation(len(steps))
    steps = [steps[i] for i in order]
    step_bin = [step_bin[i] for i in order]
    shapes = [shapes[i] for i in order]
    batch = [batch[i] for i in order]

    if tail is not None and tail.size:
        G = bins.overflow_batch * W
        if remainder == "drop":
            n_dropped = int(tail.size)
        else:
            target = G if remainder == "fill" else max(tail.size, W)
            if target > tail.size:
                repeated = np.resize(tail, target - tail.size)
                n_repeated = int(repeated.size)
                tail = np.concatenate([tail, repeated])
            steps.append(tail)
            step_bin.append(-1)
            shapes.append(bins.overflow_shape)
            batch.append(-(-tail.size // W))
    return EpochPlan(
        steps=steps,
        shape=np.asarray(shapes, dtype=np.int64).reshape(-1, 2),
        bin=np.asarray(step_bin, dtype=np.int64),
        batch=np.asarray(batch, dtype=np.int64),
        world_size=W,
        n_images=N,
        n_dropped=n_dropped,
        n_repeated=n_repeated,
        repeated=repeated,
    )


# ------------------------------------------------------------- mixed-shape steps


@dataclass
class MixedPlan:
    """One epoch of mixed-shape steps: each step is a few single-shape micro-batches.

    Why: a step of one tensor shape needs a full batch of (nearly) equal grids. On a
    small or very diverse size list (5,000 PadChest images at S=3072: 60% of images
    have fewer than 64 others within ±1 patch per side) that forces either padding or
    the same batch-mates every epoch. With gradient accumulation over micro-batches
    an optimizer step can mix shapes: every image runs at its own grid (zero padding,
    exactly pad-to-patch tokens and FLOPs), and step composition is as random as the
    `pool_batches` knob allows.

    `order` lists every used image, grouped by step, then by micro-batch;
    `step_bounds[s]:step_bounds[s+1]` are step s's positions in `order`,
    `micro_bounds[m]:micro_bounds[m+1]` micro-batch m's; `micro_shape[m]` its grid,
    `micro_step[m]` its step. Deterministic in (seed, epoch).
    """

    order: np.ndarray
    step_bounds: np.ndarray  # (S + 1,)
    micro_bounds: np.ndarray  # (M + 1,)
    micro_shape: np.ndarray  # (M, 2)
    micro_step: np.ndarray  # (M,)
    world_size: int
    n_images: int
    tokens: np.ndarray  # (N,) per-image sequence length incl. prefix (for rank splits)
    grid_h: np.ndarray | None = None  # (N,) per-image grid, for `aligned_micro_batches`
    grid_w: np.ndarray | None = None
    pad_bound: int = 0

    def __len__(self) -> int:
        return int(self.step_bounds.size - 1)

    @property
    def steps(self) -> list[np.ndarray]:
        return [self.order[a:b] for a, b in zip(self.step_bounds[:-1], self.step_bounds[1:])]

    def micro_batches(self, step: int, rank: int = 0) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """(indices, grid) of the micro-batches rank `rank` runs in `step`.

        The step's images (sorted by grid) are split into `world_size` contiguous
        chunks of near-equal tokens, so each rank gets whole or cut micro-batches.
        """
        a, b = int(self.step_bounds[step]), int(self.step_bounds[step + 1])
        lo, hi = a, b
        if self.world_size > 1:
            cum = np.cumsum(self.tokens[self.order[a:b]])
            cuts = np.searchsorted(cum, cum[-1] * np.arange(1, self.world_size) / self.world_size, side="left")
            edges = np.concatenate([[0], cuts + 1, [b - a]]).clip(0, b - a)
            edges = np.maximum.accumulate(edges)
            lo, hi = a + int(edges[rank]), a + int(edges[rank + 1])
        m0 = int(np.searchsorted(self.micro_bounds, lo, side="right")) - 1
        out = []
        for m in range(max(m0, 0), self.micro_bounds.size - 1):
            s, e = max(int(self.micro_bounds[m]), lo), min(int(self.micro_bounds[m + 1]), hi)
            if s >= hi:
                break
            if e > s:
                out.append((self.order[s:e], (int(self.micro_shape[m, 0]), int(self.micro_shape[m, 1]))))
        return out

    def aligned_micro_batches(self, step: int, rank: int = 0) -> list[AlignedMicroBatch]:
        """Rank `rank`'s micro-batches of `step`, with the same count and shapes on every rank.

        Why: under DistributedDataParallel every rank should run the same sequence of
        forward/backward passes (same shapes, balanced work; the gradient all-reduce
        happens once, after the last micro-batch). The step's images, in size order,
        are dealt in *rows* of `world_size` consecutive images (one per rank); a row's
        shape is the element-wise max grid of its images, and consecutive rows in the
        same `pad_bound + 1` cell form one micro-batch padded to its largest member.
        Padding is thus limited to rows that straddle two grids (none with one rank,
        where this equals `micro_batches(step)`). A step whose image count is not a
        multiple of `world_size` repeats its own first images to fill the last row
        (only the epoch's short last step with a fixed batch size; any step with a
        token budget), as `DistributedSampler` pads an epoch.

        Each micro-batch also says where its rows sit in the step as one global batch
        (`offset`, `total`, see `ssl_methods.shard.sample_rows`): micro-batch m holds
        global rows [first_row_m * W, last_row_m * W), rank-major, so per-sample random
        draws do not depend on the world size or the split into micro-batches. `tokens`
        is the micro-batch's real (unpadded) patch tokens on this rank, `step_tokens`
        the step's over all ranks (with repeats): the loss weight of a micro-batch.
        """
        if self.grid_h is None or self.grid_w is None:
            raise ValueError("this plan has no per-image grids (plan it with plan_mixed_epoch)")
        a, b = int(self.step_bounds[step]), int(self.step_bounds[step + 1])
        W = self.world_size
        idx = self.order[a:b]
        rows = -(-idx.size // W)
        grid = np.resize(idx, rows * W).reshape(rows, W)  # repeats the step's first images if short
        gh, gw = self.grid_h[grid], self.grid_w[grid]
        rh, rw = gh.max(axis=1), gw.max(axis=1)
        q = self.pad_bound + 1
        if q == 1:
            change = (rh[1:] != rh[:-1]) | (rw[1:] != rw[:-1])
        else:
            change = (rh[1:] // q != rh[:-1] // q) | (rw[1:] // q != rw[:-1] // q)
        starts = np.concatenate([[0], np.flatnonzero(change) + 1, [rows]])
        step_tokens = int((gh * gw).sum())
        out = []
        for r0, r1 in zip(starts[:-1].tolist(), starts[1:].tolist()):
            n = r1 - r0
            mine = grid[r0:r1, rank]
            out.append(
                AlignedMicroBatch(
                    indices=mine,
                    shape=(int(rh[r0:r1].max()), int(rw[r0:r1].max())),
                    offset=r0 * W + rank * n,
                    total=rows * W,
                    tokens=int((self.grid_h[mine] * self.grid_w[mine]).sum()),
                    step_tokens=step_tokens,
                    group=grid[r0:r1].ravel(),
                )
            )
        return out


@dataclass(frozen=True)
class AlignedMicroBatch:
    """One rank's micro-batch of a mixed-shape step (see `MixedPlan.aligned_micro_batches`).

    `group` holds the same micro-batch's images on every rank (stand-ins for an
    unreadable image must come from it: they fit `shape`).
    """

    indices: np.ndarray
    shape: tuple[int, int]
    offset: int
    total: int
    tokens: int
    step_tokens: int
    group: np.ndarray


def size_order(grid_h: np.ndarray, grid_w: np.ndarray, *, pad_bound: int = 0) -> np.ndarray:
    """Image indices sorted by cell, grid and index: the static part of mixed planning.

    A cell is `pad_bound + 1` patches square; images of one cell are adjacent, so a
    step's micro-batches can be cut per cell (see `plan_mixed_epoch`).
    """
    gh = np.asarray(grid_h, dtype=np.int64)
    gw = np.asarray(grid_w, dtype=np.int64)
    if gh.size and (gh.max() >= 1 << 15 or gw.max() >= 1 << 15):
        raise ValueError("grids must be < 32768 patches per side")
    if pad_bound < 0:
        raise ValueError(f"pad_bound must be >= 0 patches, got {pad_bound}")
    q = pad_bound + 1
    return np.argsort(((gh // q) << 45) | ((gw // q) << 30) | (gh << 15) | gw, kind="stable")


def plan_mixed_epoch(
    grid_h: np.ndarray,
    grid_w: np.ndarray,
    *,
    seed: int,
    epoch: int,
    batch_size: int | None = None,
    token_budget: int | None = None,
    pool_batches: float = 16.0,
    world_size: int = 1,
    num_prefix_tokens: int = 1,
    pad_bound: int = 0,
    by_size: np.ndarray | None = None,
) -> MixedPlan:
    """Plan an epoch of mixed-shape steps (see `MixedPlan`), vectorised over images.

    1. Sort images by grid (h, then w, random tie-break) and cut the order into
       pools of about `pool_batches` steps, at a random offset each epoch.
    2. Shuffle within pools; concatenate pools in size order.
    3. Cut steps of `batch_size × world_size` images, or greedily of at most
       `token_budget × world_size` tokens (incl. prefix); only the epoch's last step
       can be short, and it is placed last.
    4. Shuffle the step order; inside a step, images of one grid form a micro-batch,
       or with `pad_bound` δ > 0 images of one (δ+1)-patch square cell, padded to the
       cell's largest member: at most δ patches of padding per side, fewer tensors.

    `by_size` (from `size_order` with the same `pad_bound`, cached by callers) saves
    one sort per epoch.
    A step's images come from one or two neighbouring pools, so micro-batches stay
    large where sizes are dense; a same-step pair meets again next epoch with
    probability about 1 / `pool_batches`.
    """
    if (batch_size is None) == (token_budget is None):
        raise ValueError("set exactly one of batch_size and token_budget")
    if pool_batches < 1:
        raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
    gh = np.asarray(grid_h, dtype=np.int64).ravel()
    gw = np.asarray(grid_w, dtype=np.int64).ravel()
    n = gh.size
    if n == 0:
        raise ValueError("cannot plan an empty dataset")
    rng = np.random.default_rng([int(seed), int(epoch), 2])
    tokens = gh * gw + num_prefix_tokens
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_step = float(batch_size * world_size)
    else:
        budget = int(token_budget) * world_size  # type: ignore[arg-type]
        if tokens.max() > int(token_budget):  # type: ignore[arg-type]
            raise ValueError(f"token_budget {token_budget} is smaller than the largest sequence ({int(tokens.max())} tokens)")
        per_step = budget / float(tokens.mean())
    pool = max(1, int(round(pool_batches * per_step)))
    if by_size is None:
        by_size = size_order(gh, gw, pad_bound=pad_bound)
    # positions p of the size order: shuffle within pools (random offset), cut steps
    pool_id = (np.arange(n, dtype=np.int64) + int(rng.integers(pool))) // pool
    perm = np.argsort(pool_id + rng.random(n))  # shuffled pools, pools in size order
    if batch_size is not None:
        G = batch_size * world_size
        step_seq = np.arange(n, dtype=np.int64) // G
    else:
        cum = np.concatenate([[0], np.cumsum(tokens[by_size[perm]])])
        starts = [0]
        while True:
            end = int(np.searchsorted(cum, cum[starts[-1]] + budget, side="right")) - 1
            if end >= n:
                break
            starts.append(max(end, starts[-1] + 1))
        step_seq = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
    n_steps = int(step_seq[-1]) + 1
    # shuffle full steps; the last step (the only one that can be short) stays last
    new_id = np.append(rng.permutation(n_steps - 1), n_steps - 1)
    sid_at = np.empty(n, dtype=np.int64)
    sid_at[perm] = new_id[step_seq]
    # a stable sort by step keeps the size order inside each step: equal grids are adjacent
    pos = np.argsort(sid_at.astype(np.uint16) if n_steps <= 1 << 16 else sid_at, kind="stable")
    order = by_size[pos]
    sid = sid_at[pos]
    h, w = gh[order], gw[order]
    q = pad_bound + 1
    ch, cw = h // q, w // q
    change = np.flatnonzero((sid[1:] != sid[:-1]) | (ch[1:] != ch[:-1]) | (cw[1:] != cw[:-1])) + 1
    micro_bounds = np.concatenate([[0], change, [n]]).astype(np.int64)
    starts_m = micro_bounds[:-1]
    step_bounds = np.searchsorted(sid, np.arange(n_steps + 1), side="left").astype(np.int64)
    micro_shape = np.stack([np.maximum.reduceat(h, starts_m), np.maximum.reduceat(w, starts_m)], axis=1)
    return MixedPlan(
        order=order,
        step_bounds=step_bounds,
        micro_bounds=micro_bounds,
        micro_shape=micro_shape,
        micro_step=sid[starts_m],
        world_size=world_size,
        n_images=n,
        tokens=tokens,
        grid_h=gh,
        grid_w=gw,
        pad_bound=pad_bound,
    )


class MixedStepSampler:
    """Per-rank mixed-shape steps: `iter()` yields one list of `BinBatch` per step.

    The training loop runs every micro-batch of a step (forward + backward, loss
    weighted by its share of the step's images) and then one optimizer step. Same
    batch sizing and (seed, epoch, rank, world_size) contract as `DBBBatchSampler`.
    """

    def __init__(
        self,
        grid_h: Sequence[int] | np.ndarray,
        grid_w: Sequence[int] | np.ndarray,
        *,
        batch_size: int | None = None,
        token_budget: int | None = None,
        pool_batches: float = 16.0,
        pad_bound: int = 0,
        num_prefix_tokens: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.gh = np.asarray(grid_h, dtype=np.int64)
        self.gw = np.asarray(grid_w, dtype=np.int64)
        self.kw = dict(batch_size=batch_size, token_budget=token_budget, pool_batches=pool_batches,
                       world_size=world_size, num_prefix_tokens=num_prefix_tokens, pad_bound=pad_bound)
        self.seed, self.rank, self.world_size, self.epoch = int(seed), int(rank), int(world_size), 0
        self._by_size = size_order(self.gh, self.gw, pad_bound=pad_bound)
        self._plan: MixedPlan | None = None
        self._plan_epoch: int | None = None
        self._len = len(self.plan(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> MixedPlan:
        e = self.epoch if epoch is None else int(epoch)
        if self._plan is None or self._plan_epoch != e:
            self._plan = plan_mixed_epoch(
                self.gh, self.gw, seed=self.seed, epoch=e, by_size=self._by_size, **self.kw  # type: ignore[arg-type]
            )
            self._plan_epoch = e
        return self._plan

    def __iter__(self) -> Iterator[list[BinBatch]]:
        plan = self.plan()
        for s in range(len(plan)):
            yield [BinBatch(idx.tolist(), shape) for idx, shape in plan.micro_batches(s, self.rank)]

    def __len__(self) -> int:
        """Steps per epoch; fixed for a fixed batch size, may vary by one with a token budget."""
        return len(self.plan())


# ------------------------------------------------------------- batching options

STEPS = ("single", "mixed")
# options that only one kind of step uses: setting one for the other kind is an error, not a silent no-op
SINGLE_STEP_OPTIONS = ("flop_budget", "model", "min_batches", "mode", "resize_bound", "remainder")
MIXED_STEP_OPTIONS = ("pool_batches", "pad_bound")


def batching_options(
    *,
    steps: Literal["single", "mixed"] = "single",
    flop_budget: float | None = None,
    model: str = "vit_base",
    num_prefix_tokens: int = 1,
    min_batches: float = 4.0,
    mode: Literal["pad", "resize", "fit"] = "pad",
    resize_bound: int = 1,
    remainder: Literal["partial", "drop", "fill"] = "partial",
    pool_batches: float = 16.0,
    pad_bound: int = 0,
) -> dict[str, Any]:
    """The keywords of a matrix's `pretrain.batching.options` (mode `dbb`), with their defaults.

    The matrix validates these names and types at plan time (read from this signature,
    torch-free). `steps: single` (default) runs one bin shape per optimiser step
    (`DBBBatchSampler`: `min_batches`, `mode`, `resize_bound`, `remainder`,
    `flop_budget`, `model`); `steps: mixed` runs each optimiser step as several
    single-shape micro-batches with gradient accumulation (`plan_mixed_epoch`:
    `pool_batches`, `pad_bound`; `bench.train.mixed`). Use `split_batching_options`.
    """
    return dict(locals())


def split_batching_options(options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(`steps`, the sampler keywords) of a `batching.options` mapping.

    Single-shape steps get exactly the keys given (the sampler's own defaults apply);
    mixed-shape steps get `pool_batches`, `pad_bound`, `num_prefix_tokens`. An option of
    the other kind of step raises ValueError.
    """
    given = dict(options or {})
    full = batching_options(**given)  # TypeError on an unknown keyword
    steps = full["steps"]
    if steps not in STEPS:
        raise ValueError(f"batching option steps must be one of {STEPS}, got {steps!r}")
    other = SINGLE_STEP_OPTIONS if steps == "mixed" else MIXED_STEP_OPTIONS
    wrong = sorted(set(given) & set(other))
    if wrong:
        raise ValueError(f"batching options {wrong} do not apply to steps: {steps}")
    if steps == "mixed":
        return steps, {k: full[k] for k in (*MIXED_STEP_OPTIONS, "num_prefix_tokens")}
    return steps, {k: v for k, v in given.items() if k != "steps"}


# -------------------------------------------------------------------------- sampler


class BinBatch(list):
    """A list of dataset indices that also carries its target grid `shape` (h, w).

    A plain `list` subclass so `DataLoader(batch_sampler=...)` accepts it; the shape
    survives pickling to worker processes.
    """

    def __init__(self, indices: Sequence[int], shape: tuple[int, int]) -> None:
        super().__init__(indices)
        self.shape = (int(shape[0]), int(shape[1]))


class DBBBatchSampler(Sampler[list[int]]):
    """Batch sampler yielding `BinBatch` index lists, one bin shape per step.

    Args:
        grid_h, grid_w: per-image patch grid after the resize policy (`grid_size`).
        batch_size / token_budget / flop_budget / model / num_prefix_tokens:
            per-rank batch sizing, see `BatchSizer`.
        min_batches: minimum global batches of own images per bin (main DBB knob).
        mode: "pad" (pad to the bin envelope), "resize" (resize to the bin shape) or
            "fit" (downscale by at most `resize_bound` patches per dimension, then pad).
        resize_bound: δ of fit mode, in patches (see `build_bins`).
        remainder: policy for the one short step of an epoch: "partial" (keep it
            short; if it has fewer images than ranks, repeat some so every rank gets
            one), "drop" (skip it), "fill" (repeat its images up to a full step).
        seed, rank, world_size: as in `DistributedSampler`; all ranks must pass the
            same seed and sizes.

    `set_epoch(e)` before each epoch; `len()` is the number of steps per rank and is
    the same every epoch.
    """

    def __init__(
        self,
        grid_h: Sequence[int] | np.ndarray,
        grid_w: Sequence[int] | np.ndarray,
        *,
        batch_size: int | None = None,
        token_budget: int | None = None,
        flop_budget: float | None = None,
        model: str | ViTConfig = "vit_base",
        num_prefix_tokens: int = 1,
        min_batches: float = 4.0,
        mode: str = "pad",
        resize_bound: int = 1,
        remainder: str = "partial",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
        self.sizer = BatchSizer(
            batch_size=batch_size,
            token_budget=token_budget,
            flop_budget=flop_budget,
            model=model,
            num_prefix_tokens=num_prefix_tokens,
        )
        self.bins = build_bins(
            np.asarray(grid_h), np.asarray(grid_w), sizer=self.sizer, world_size=world_size,
            min_batches=min_batches, mode=mode, resize_bound=resize_bound,
        )
        self.remainder = remainder
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._plan: EpochPlan | None = None
        self._plan_epoch: int | None = None

    @classmethod
    def from_sizes(
        cls,
        height: Sequence[int] | np.ndarray,
        width: Sequence[int] | np.ndarray,
        *,
        patch: int,
        max_side: int | None,
        **kwargs: Any,
    ) -> "DBBBatchSampler":
        """Build from pixel sizes (index `height`/`width` columns) via the resize policy."""
        gh, gw = grid_size(np.asarray(height), np.asarray(width), patch=patch, max_side=max_side)
        return cls(gh, gw, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The full (all-rank) plan of `epoch` (default: the current one); cached."""
        e = self.epoch if epoch is None else int(epoch)
        if self._plan is None or self._plan_epoch != e:
            self._plan = plan_epoch(self.bins, seed=self.seed, epoch=e, remainder=self.remainder)
            self._plan_epoch = e
        return self._plan

    def __iter__(self) -> Iterator[BinBatch]:
        plan = self.plan()
        for s in range(len(plan)):
            yield BinBatch(plan.rank_slice(s, self.rank).tolist(), tuple(plan.shape[s]))

    def __len__(self) -> int:
        b = self.bins
        n = int(b.full_steps.sum())
        if b.overflow_count:
            G = b.overflow_batch * self.world_size
            n += b.overflow_count // G
            if b.overflow_count % G and self.remainder != "drop":
                n += 1
        return n


# -------------------------------------------------------------------------- collate


def resize_to_policy(image: torch.Tensor, *, max_side: int | None) -> torch.Tensor:
    """Downscale a (C, h, w) image so its longer side is <= `max_side` (as `policy_size`)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    ph, pw = policy_size(np.array([h]), np.array([w]), max_side=max_side)
    if (int(ph[0]), int(pw[0])) == (h, w):
        return image
    return _resize(image, (int(ph[0]), int(pw[0])))


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].to(image.dtype)


def _as_chw(image: Any) -> torch.Tensor:
    t = torch.as_tensor(image)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W) or (C, H, W), got {tuple(t.shape)}")
    return t


def pad_to_grid(
    images: Sequence[torch.Tensor],
    shape: tuple[int, int],
    *,
    patch: int,
    mode: str = "pad",
    max_shrink: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (C, h, w) images into one (B, C, H·p, W·p) tensor for grid `shape` = (H, W).

    pad mode: each image sits top-left, zero-padded right and bottom (timm's
    `dynamic_img_pad` convention); its grid `ceil(h/p) × ceil(w/p)` must fit.
    resize mode: each image is resized to exactly (H·p, W·p).
    fit mode: a side longer than the bin's (h > H·p) is downscaled to exactly H·p
    pixels (the other side independently), then the image is padded as in pad mode;
    `max_shrink` (patches) rejects images whose grid exceeds the bin by more.

    Returns `(images, valid)`; `valid` is (B, H·W) bool in row-major patch order
    (timm's flatten order), True where a patch holds image pixels. A patch that is
    pure padding is never valid.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    H, W = int(shape[0]), int(shape[1])
    imgs = [_as_chw(x) for x in images]
    if not imgs:
        raise ValueError("cannot collate an empty batch")
    C = imgs[0].shape[0]
    out = torch.zeros((len(imgs), C, H * patch, W * patch), dtype=imgs[0].dtype)
    valid = torch.zeros((len(imgs), H, W), dtype=torch.bool)
    for i, im in enumerate(imgs):
        if im.shape[0] != C:
            raise ValueError(f"image {i} has {im.shape[0]} channels, image 0 has {C}")
        if mode == "resize":
            out[i] = _resize(im, (H * patch, W * patch))
            valid[i] = True
            continue
        h, w = int(im.shape[1]), int(im.shape[2])
        gh, gw = -(-h // patch), -(-w // patch)
        if mode == "fit" and (gh > H or gw > W):
            if max_shrink is not None and max(gh - H, gw - W) > max_shrink:
                raise ValueError(
                    f"image {i} of grid {gh}x{gw} exceeds bin grid {H}x{W} by more than {max_shrink} patches"
                )
            h, w = min(h, H * patch), min(w, W * patch)
            im = _resize(im, (h, w))
            gh, gw = -(-h // patch), -(-w // patch)
        if gh > H or gw > W:
            raise ValueError(f"image {i} of {h}x{w} px (grid {gh}x{gw}) does not fit bin grid {H}x{W} at patch {patch}")
        out[i, :, :h, :w] = im
        valid[i, :gh, :gw] = True
    return out, valid.reshape(len(imgs), H * W)
