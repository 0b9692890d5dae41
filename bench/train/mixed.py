"""Mixed-shape DBB steps: one optimiser step = several same-shape micro-batches.

Why: single-shape steps need a full batch of nearly equal patch grids, which small or
diverse size lists lack (`bench.data.dbb`, `plan_mixed_epoch`). Here a step's images are
planned together and run as exact-grid micro-batches whose gradients are accumulated
before one optimiser step (`bench.train.loop.fit` handles a `MixedStep`).

Loss weighting (token-weighted): micro-batch m's loss is weighted by
`tokens_m / step_tokens`, its share of the real (unpadded) patch tokens of the whole
step over all ranks. MAE's loss on a padded single-shape batch is a mean over the
batch's masked tokens, so a large image counts in proportion to its tokens; with
token weights the accumulated gradient is that of one big batch of the step's images
(exactly so when micro-batches share a grid, where token and image shares coincide;
with mixed grids up to each image's masked count being rounded to whole tokens). The
token is also DBB's unit of a step's cost and memory (`token_budget`).

Randomness: every micro-batch re-seeds torch with the step's seed and runs inside
`ssl_methods.shard.sample_rows(offset, n, total)` with its rows of the step as one
global batch, so per-sample draws (MAE masks, drop path) are those of the one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from bench.data.dbb import AlignedMicroBatch, MixedStepSampler, grid_size, pad_to_grid
from bench.data.batches import BinnedBatches


@dataclass
class MicroBatch:
    """One micro-batch: padded images `x`, `valid` (B, L) token mask, its loss `weight`
    (share of the step over all ranks) and its rows of the step (`offset`, `total`)."""

    x: torch.Tensor
    valid: torch.Tensor
    weight: float
    offset: int
    total: int


@dataclass
class MixedStep:
    """A step's micro-batches for this rank (same count and shapes on every rank)."""

    micro: list[MicroBatch]

    def __len__(self) -> int:
        return len(self.micro)


class MixedBinnedBatches(BinnedBatches):
    """DBB pre-training batches with mixed-shape steps (`batching.options.steps: mixed`).

    Loading, unreadable-image handling and the native cache are `BinnedBatches`'; the
    plan is `plan_mixed_epoch` (batch size or token budget are global, as there) and
    `epoch_batches` yields `(step, rows, MixedStep, None)`. Every image runs once per
    epoch; with one rank every micro-batch is an exact grid (or within `pad_bound`).
    """

    def __init__(
        self,
        index: pd.DataFrame,
        *,
        patch: int,
        max_side: int,
        in_chans: int,
        seed: int,
        batch_size: int | None = None,
        token_budget: int | None = None,
        policy: str = "skip",
        read_options: dict[str, Any] | None = None,
        cache: Any = None,
        rank: int = 0,
        world_size: int = 1,
        pool_batches: float = 16.0,
        pad_bound: int = 0,
        num_prefix_tokens: int = 1,
    ) -> None:
        # the parent sets up reading, skips size-less images and plans single-shape bins,
        # which are replaced here (their planning cost is a fraction of a second)
        super().__init__(
            index, patch=patch, max_side=max_side, in_chans=in_chans, seed=seed, batch_size=batch_size,
            token_budget=token_budget, policy=policy, read_options=read_options, cache=cache, rank=rank,
            world_size=world_size,
        )
        if token_budget is None and batch_size is not None and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is the global batch and must be divisible by the world size {world_size}")
        gh, gw = grid_size(
            self.index["height"].to_numpy(int), self.index["width"].to_numpy(int), patch=patch, max_side=max_side
        )
        self.grid_h, self.grid_w = gh, gw
        self.mode = "pad"
        self.sampler = MixedStepSampler(  # type: ignore[assignment]
            gh,
            gw,
            batch_size=batch_size // world_size if token_budget is None and batch_size is not None else None,
            token_budget=token_budget // world_size if token_budget is not None else None,
            pool_batches=pool_batches,
            pad_bound=pad_bound,
            num_prefix_tokens=num_prefix_tokens,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def _micro(self, mb: AlignedMicroBatch) -> tuple[list[int], list[torch.Tensor]]:
        """Load a micro-batch; an unreadable image is replaced by a readable one of the same
        micro-batch (any rank's share: it fits the shape), so shapes stay equal on all ranks."""
        rows, imgs = [], []
        for i in mb.indices.tolist():
            t = self._load(int(i))
            if t is None and self.world_size > 1:
                for j in mb.group.tolist():
                    t = self._load(int(j))
                    if t is not None:
                        i = j
                        break
            if t is not None:
                rows.append(int(i))
                imgs.append(t)
        return rows, imgs

    def epoch_batches(  # type: ignore[override]
        self, epoch: int, start_step: int = 0
    ) -> Iterator[tuple[int, np.ndarray, MixedStep, None]]:
        plan = self.sampler.plan(epoch)
        tokens = self.grid_h * self.grid_w
        for step in range(start_step, len(plan)):
            micro: list[MicroBatch] = []
            kept: list[int] = []
            spec = plan.aligned_micro_batches(step, self.rank)
            for mb in spec:
                rows, imgs = self._micro(mb)
                if not imgs:  # with several ranks the whole group is unreadable on every rank: all skip it
                    continue
                x, valid = pad_to_grid(imgs, mb.shape, patch=self.patch, mode="pad")
                micro.append(MicroBatch(x, valid, float(tokens[rows].sum()), mb.offset, mb.total))
                kept.extend(rows)
            if not micro:
                continue
            # weights: share of the step's real tokens over all ranks; with one rank, of those loaded
            total = float(spec[0].step_tokens) if self.world_size > 1 else sum(m.weight for m in micro)
            for m in micro:
                m.weight = m.weight / total
            yield step, np.asarray(kept, dtype=np.int64), MixedStep(micro), None
