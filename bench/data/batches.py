"""Turning a site's standard index into training batches (torch).

`ImageBatches` gives fixed-size batches (fine-tuning, evaluation, fixed-size
pre-training); `BinnedBatches` gives variable-resolution batches planned by Dynamic
Batch Binning (`bench.data.dbb`). Both read pixels through `bench.data.sources.PixelSource`,
so unreadable images follow the run's image policy (`fail` raises naming the file; `skip`
drops, counts and logs the image) the same way in both.

Randomness (shuffling, augmentation) is derived from (seed, epoch, step) rather than
from a running RNG, so a run resumed from any checkpoint sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from bench.data.errors import DataError
from bench.data.sources import BadImages, PixelSource, readable_rows
from bench.data.transforms import normalise, to_model_input

log = logging.getLogger(__name__)


def targets_of(index: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, C) float32 with NaN where the site does not provide a class or the label is unknown."""
    out = np.full((len(index), len(classes)), np.nan, dtype=np.float32)
    for j, c in enumerate(classes):
        if c in index.columns:
            out[:, j] = index[c].to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def shard_rows(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s contiguous, equal-size share of one global batch's rows.

    Why equal: every rank must hold tensors of the same shape at every step (gradient
    all-reduce, all-gathers). A global batch that does not split evenly (a short last
    batch, a DBB remainder step) is completed by repeating its own first rows, as torch's
    `DistributedSampler` pads an epoch; full batches of `world_size * b` rows are never
    padded, so rank r holds rows [r*b, (r+1)*b) exactly.
    """
    rows = np.asarray(rows)
    if world_size == 1:
        return rows
    per = -(-len(rows) // world_size)
    if len(rows) < per * world_size:
        rows = np.resize(rows, per * world_size)
    return rows[rank * per : (rank + 1) * per]


def check_world(batch_size: int, rank: int, world_size: int) -> int:
    """The per-rank batch of a global `batch_size` split over `world_size` ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is the global batch and must be divisible by the world size {world_size} "
            f"(each rank processes batch_size / world_size images per step)"
        )
    return batch_size // world_size


class ImageBatches:
    """Deterministic batches over an index: `epoch_batches(epoch)` yields (step, rows, x, y).

    Decoded images are cached in memory (as float16 at model size) after first use
    when the set is small (`cache_limit` images), which is the common CPU/demo case;
    large sets go through `bench data prepare` caches instead.

    Data parallel: `batch_size` is the global batch; with `world_size` > 1 every rank
    computes the same global batches and takes its equal share (`shard_rows`), so all
    ranks run `len(self)` steps with `batch_size / world_size` images each.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        image_size: int,
        in_chans: int,
        classes: Sequence[str] | None,
        batch_size: int,
        seed: int,
        policy: str = "skip",
        shuffle: bool = True,
        drop_last: bool = False,
        cache_limit: int = 20000,
        read_options: dict[str, Any] | None = None,
        cache: Any = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.local_batch = check_world(batch_size, rank, world_size)
        self.rank, self.world_size = rank, world_size
        self.index = index.reset_index(drop=True)
        # rows of a `bench data prepare` cache (same site/options/size) are read from it
        self.source = PixelSource(self.index, policy=policy, read_options=read_options, cache=cache)
        self.paths = self.source.paths
        self.size = image_size
        self.in_chans = in_chans
        self.targets = targets_of(self.index, classes) if classes else None
        self.batch_size = batch_size
        self.seed = seed
        self.policy = policy
        self.shuffle = shuffle
        self.drop_last = drop_last and len(self.paths) >= batch_size
        self._memory: dict[int, torch.Tensor] | None = {} if len(self.paths) <= cache_limit else None

    @property
    def bad(self) -> BadImages:
        return self.source.bad

    def __len__(self) -> int:
        n = len(self.paths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.paths)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _load(self, i: int) -> torch.Tensor | None:
        if self._memory is not None and i in self._memory:
            return self._memory[i].float()
        img = self.source.read(i)
        if img is None:
            return None
        # Always round through float16 (what the memory cache stores), so that a cached and a freshly
        # decoded image are bit-identical; this is what keeps resumed runs exact.
        t = to_model_input(img, self.size, self.in_chans).half()
        if self._memory is not None:
            self._memory[i] = t
        return t.float()

    def batch(self, rows: np.ndarray, global_rows: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        """Load `rows`; unreadable images are dropped, or (data parallel, `global_rows` given) replaced."""
        rows_kept, xs = readable_rows(rows, self._load, global_rows, self.world_size)
        if not xs:
            return rows_kept, torch.empty(0, self.in_chans, self.size, self.size), None
        x = torch.stack(xs)
        y = torch.from_numpy(self.targets[rows_kept]) if self.targets is not None else None
        return rows_kept, x, y

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, np.ndarray, torch.Tensor, torch.Tensor | None]]:
        order = self.order(epoch)
        for step in range(start_step, len(self)):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            kept, x, y = self.batch(shard_rows(rows, self.rank, self.world_size), rows)
            if len(kept) == 0:
                continue
            yield step, kept, x, y


class BinnedBatches:
    """Variable-resolution pre-training batches from Dynamic Batch Binning.

    Same iteration contract as `ImageBatches.epoch_batches`, but each batch is a
    padded (B, C, H, W) tensor at its bin's shape plus a (B, L) bool `valid` token mask
    (True = real image patch) in place of targets. Sizes come from the index's
    `height`/`width` (header metadata), so planning never decodes pixels; images are
    decoded at native size, capped to `max_side` on the longer side, normalised, and
    padded by `bench.data.dbb.pad_to_grid`.

    Data parallel: `batch_size` and `token_budget` are global (per step, all ranks
    together); the sampler plans with `world_size` ranks and per-rank sizes
    `batch_size / world_size` (`token_budget // world_size`), every rank computes the same
    epoch plan and takes its equal share of each planned step (`shard_rows`), so all ranks
    run the same steps at the same bin shape. With a fixed `batch_size` the plan is the
    one a single process makes with the same global batch.
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
        **sampler_options: Any,
    ) -> None:
        from bench.data.dbb import DBBBatchSampler

        bad = BadImages()
        # size -1 (header unreadable at indexing time), 0 or missing: the image cannot be binned, so it
        # is unreadable like any image that fails to decode (skipped and counted, or fatal under `fail`)
        unreadable = ~((index["height"] > 0) & (index["width"] > 0))
        if unreadable.any():
            first = str(index.loc[unreadable, "path"].iloc[0])
            if policy == "fail":
                raise DataError(
                    f"cannot read image {first}: no usable size in its header ({int(unreadable.sum())} such images)"
                )
            for path in index.loc[unreadable, "path"].astype(str):
                bad.add(path, "no usable size in its header (unreadable, empty or missing)")
            log.warning("DBB: %d image(s) without a usable size skipped, e.g. %s", int(unreadable.sum()), first)
            index = index[~unreadable]
        self.index = index.reset_index(drop=True)
        # a native-resolution cache from `bench data prepare SITE --native` (pixels only; sizes
        # for planning still come from the index, so cached and uncached runs bin identically)
        self.source = PixelSource(self.index, policy=policy, read_options=read_options, cache=cache, native=True, bad=bad)
        self.paths = self.source.paths
        self.patch, self.max_side, self.in_chans = patch, max_side, in_chans
        self.policy = policy
        self.mode = sampler_options.get("mode", "pad")
        if len(self.index) == 0:
            raise DataError("batching: dbb has no readable images to bin")
        self.rank, self.world_size = rank, world_size
        per_rank_batch = check_world(batch_size, rank, world_size) if batch_size is not None and token_budget is None else None
        per_rank_budget = None
        if token_budget is not None:
            per_rank_budget = token_budget // world_size
            if per_rank_budget < 1:
                raise ValueError(f"token_budget {token_budget} is smaller than the world size {world_size}")
        self.sampler = DBBBatchSampler.from_sizes(
            self.index["height"].to_numpy(int),
            self.index["width"].to_numpy(int),
            patch=patch,
            max_side=max_side,
            batch_size=per_rank_batch,
            token_budget=per_rank_budget,
            seed=seed,
            rank=rank,
            world_size=world_size,
            **sampler_options,
        )
        self.targets = None

    @property
    def bad(self) -> BadImages:
        return self.source.bad

    def __len__(self) -> int:
        return len(self.sampler)

    def _load(self, i: int) -> torch.Tensor | None:
        from bench.data.dbb import resize_to_policy

        img = self.source.read(i)
        if img is None:
            return None
        t = resize_to_policy(normalise(img), max_side=self.max_side)
        return t.expand(self.in_chans, -1, -1) if self.in_chans != 1 else t

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, np.ndarray, torch.Tensor, torch.Tensor]]:
        from bench.data.dbb import pad_to_grid

        plan = self.sampler.plan(epoch)
        for step in range(start_step, len(plan)):
            rows = shard_rows(plan.steps[step], self.rank, self.world_size)
            kept, imgs = readable_rows(rows, self._load, plan.steps[step], self.world_size)
            if not imgs:
                continue
            x, valid = pad_to_grid(imgs, tuple(int(v) for v in plan.shape[step]), patch=self.patch, mode=self.mode)
            yield step, kept, x, valid
