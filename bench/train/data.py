"""Turning a site's standard index into training batches.

Pixels: `bench.data.io.read_image` gives float [0,1] 2-D arrays at native size; we
resize to `image_size`² (antialiased bilinear) and normalise with the grey
equivalent of the ImageNet statistics (mean/std of the RGB means/stds), so that
ImageNet-initialised and random-initialised models see the same input scale.

Corrupt images follow the run's policy: `fail` raises an error naming the file;
`skip` drops the image from its batch, counts it and lists it in the stage log.

Randomness (shuffling, augmentation) is derived from (seed, epoch, step) rather than
from a running RNG, so a run resumed from any checkpoint sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.data.sites import DataError, get_site

log = logging.getLogger(__name__)

GREY_MEAN = 0.449  # mean of ImageNet's (0.485, 0.456, 0.406)
GREY_STD = 0.226  # mean of ImageNet's (0.229, 0.224, 0.225)


_INDEX_MEMO: dict[tuple[str, str, str], pd.DataFrame] = {}


def load_index(site: str, root: str, options: dict[str, Any], splits: Sequence[str] | None) -> pd.DataFrame:
    """The site's standard index restricted to `splits`, with a clear error if that leaves nothing.

    Indexes are memoised per process by (site, root, options): a chained fine-tune and its
    evaluations, or the leakage audit, read a site's CSVs and image headers once.
    """
    if not Path(root).exists():
        raise DataError(
            f"data root for site {site!r} does not exist: {root} "
            f"(set data.root / data.sites.{site} in the matrix, or BENCH_DATA_ROOT)"
        )
    import json

    memo_key = (site, str(Path(root).resolve()), json.dumps(options, sort_keys=True, default=str))
    if memo_key not in _INDEX_MEMO:
        _INDEX_MEMO[memo_key] = get_site(site).load_index(Path(root), **options)
    index = _INDEX_MEMO[memo_key]
    if splits is not None:
        index = index[index["split"].isin(list(splits))]
    if index.empty:
        raise DataError(f"site {site!r} at {root}: no images in split(s) {list(splits or [])}")
    return index.reset_index(drop=True)


def site_read_options(site: str) -> dict[str, Any]:
    """Pixel-reading options a site declares (e.g. PadChest's 16-bit PNGs hold 12-bit data)."""
    return dict(getattr(get_site(site), "read_options", {}) or {})


def cache_dir_for(cache_root: str | Path, site: str, options: dict[str, Any]) -> Path:
    """Where `bench data prepare` puts the cache of a site (with its adapter options)."""
    import hashlib
    import json

    tag = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(cache_root) / f"{site}-{tag}"


def open_cache(cache_root: str | Path | None, site: str, options: dict[str, Any], size: int) -> Any:
    """The prepared cache of (site, options) at `size` px, or None (stages then decode from source)."""
    if not cache_root:
        return None
    from bench.data.cache import CacheReader

    d = cache_dir_for(cache_root, site, options) / (f"size{size}" if size else "native")
    try:
        reader = CacheReader(d)
    except FileNotFoundError:
        return None
    if size:
        return reader if reader.size == size else None
    return reader if reader.config.native else None


def _rows_in_cache(index: pd.DataFrame, cache: Any) -> np.ndarray:
    """Row of each index image in a prepared cache, -1 where it is not cached."""
    if cache is None:
        return np.full(len(index), -1, dtype=np.int64)
    pos = {iid: r for r, iid in enumerate(cache.index["image_id"].astype(str))}
    return np.array([pos.get(i, -1) for i in index["image_id"].astype(str)], dtype=np.int64)


def source_kwargs(site: str, options: dict[str, Any], size: int, cache_root: str | None) -> dict[str, Any]:
    """`ImageBatches` keywords for reading a site's pixels: its read options and its cache, if prepared."""
    return {"read_options": site_read_options(site), "cache": open_cache(cache_root, site, options, size)}


def seeded_subset(index: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A random N-image subset (the paper pre-trains on a random 100,000 per dataset)."""
    if n is None or n >= len(index):
        return index
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(index), size=n, replace=False))
    return index.iloc[keep].reset_index(drop=True)


def targets_of(index: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, C) float32 with NaN where the site does not provide a class or the label is unknown."""
    out = np.full((len(index), len(classes)), np.nan, dtype=np.float32)
    for j, c in enumerate(classes):
        if c in index.columns:
            out[:, j] = index[c].to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def to_model_input(img: np.ndarray, size: int, in_chans: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    t = (t[0] - GREY_MEAN) / GREY_STD
    return t.expand(in_chans, -1, -1).contiguous() if in_chans != 1 else t


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild, anatomy-preserving augmentation: random scale 0.9-1.1, shift +-6%, rotation +-7 deg.

    No horizontal flips: the heart's side is diagnostic information on chest films.
    """
    b = x.shape[0]
    # draws come from a CPU generator (reproducible across devices), then move to x's device
    scale = (0.9 + 0.2 * torch.rand(b, generator=gen)).to(x.device)
    ang = ((torch.rand(b, generator=gen) - 0.5) * (2 * 7 * np.pi / 180)).to(x.device)
    shift = ((torch.rand(b, 2, generator=gen) - 0.5) * 0.12).to(x.device)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = (0.0 - GREY_MEAN) / GREY_STD  # outside the film is air (dark)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
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


def fill_unreadable(rows: np.ndarray, loaded: list[Any], global_rows: np.ndarray, load: Any) -> tuple[np.ndarray, list[Any]]:
    """Keep a rank's batch at full size when some of its images are unreadable (policy skip).

    Under data parallelism a rank cannot simply drop images (shapes must agree across
    ranks) or skip a step (the others would wait for it). Each unreadable image is
    replaced by the next readable one of the *global* batch, cyclically, which every
    rank can read and which gives the same result on every rank. Returns (rows, items)
    with unreadable entries replaced; empty when the whole global batch is unreadable,
    which every rank then sees alike and skips together.
    """
    if all(t is not None for t in loaded):
        return rows, loaded
    cache: dict[int, Any] = {}

    def get(i: int) -> Any:
        if i not in cache:
            cache[i] = load(i)
        return cache[i]

    g = [int(v) for v in global_rows]
    out_rows, out = [], []
    for r, t in zip(rows, loaded):
        if t is None:
            start = g.index(int(r)) if int(r) in g else 0
            for k in range(1, len(g) + 1):
                cand = g[(start + k) % len(g)]
                if get(cand) is not None:
                    r, t = cand, get(cand)
                    break
            else:
                return np.zeros(0, dtype=np.int64), []
        out_rows.append(int(r))
        out.append(t)
    return np.asarray(out_rows, dtype=np.int64), out


@dataclass
class BadImages:
    """Images that failed to decode under policy `skip`: reported, never silently lost."""

    paths: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.paths[path] = reason

    def __len__(self) -> int:
        return len(self.paths)


class ImageBatches:
    """Deterministic batches over an index: `epoch_batches(epoch)` yields (rows, x, y).

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
        from bench.data.io import read_image  # pixel decoding lives in the data layer

        self.local_batch = check_world(batch_size, rank, world_size)
        self.rank, self.world_size = rank, world_size

        opts = dict(read_options or {})
        self._read = lambda path: read_image(path, **opts)
        self.index = index.reset_index(drop=True)
        self.paths = self.index["path"].astype(str).tolist()
        self.size = image_size
        self.in_chans = in_chans
        self.targets = targets_of(self.index, classes) if classes else None
        self.batch_size = batch_size
        self.seed = seed
        if policy not in ("skip", "fail"):
            raise ValueError(f"image policy {policy!r} is not one of skip, fail")
        self.policy = policy
        self.shuffle = shuffle
        self.drop_last = drop_last and len(self.paths) >= batch_size
        self.bad = BadImages()
        self._cache: dict[int, torch.Tensor] = {} if len(self.paths) <= cache_limit else None  # type: ignore[assignment]
        # rows of a `bench data prepare` cache (same site/options/size), or -1 when not cached
        self._disk = cache
        self._disk_rows = _rows_in_cache(self.index, cache)

    def __len__(self) -> int:
        n = len(self.paths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.paths)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _load(self, i: int) -> torch.Tensor | None:
        if self._cache is not None and i in self._cache:
            return self._cache[i].float()
        path = self.paths[i]
        if path in self.bad.paths:
            return None
        if self._disk_rows[i] >= 0:
            img = self._disk[int(self._disk_rows[i])]
        else:
            try:
                img = self._read(path)
            except DataError as exc:
                if self.policy == "fail":
                    raise
                self.bad.add(path, str(exc))
                log.warning("skipping unreadable image %s: %s", path, exc)
                return None
        # Always round through float16 (what the cache stores), so that a cached and a freshly
        # decoded image are bit-identical; this is what keeps resumed runs exact.
        t = to_model_input(img, self.size, self.in_chans).half()
        if self._cache is not None:
            self._cache[i] = t
        return t.float()

    def batch(self, rows: np.ndarray, global_rows: np.ndarray | None = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        """Load `rows`; unreadable images are dropped, or (data parallel, `global_rows` given) replaced."""
        if global_rows is not None and self.world_size > 1:
            rows_kept, xs = fill_unreadable(rows, [self._load(int(i)) for i in rows], global_rows, self._load)
        else:
            kept, xs = [], []
            for i in rows:
                t = self._load(int(i))
                if t is not None:
                    kept.append(int(i))
                    xs.append(t)
            rows_kept = np.asarray(kept, dtype=np.int64)
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
        from bench.data.io import read_image

        self.bad = BadImages()
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
                self.bad.add(path, "no usable size in its header (unreadable, empty or missing)")
            log.warning("DBB: %d image(s) without a usable size skipped, e.g. %s", int(unreadable.sum()), first)
            index = index[~unreadable]
        opts = dict(read_options or {})
        self._read = lambda path: read_image(path, **opts)
        self.index = index.reset_index(drop=True)
        self.paths = self.index["path"].astype(str).tolist()
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
        # a native-resolution cache from `bench data prepare SITE --native` (pixels only; sizes
        # for planning still come from the index, so cached and uncached runs bin identically)
        self._disk = cache
        self._disk_rows = _rows_in_cache(self.index, cache)

    def __len__(self) -> int:
        return len(self.sampler)

    def _load(self, i: int) -> torch.Tensor | None:
        from bench.data.dbb import resize_to_policy

        path = self.paths[i]
        if path in self.bad.paths:
            return None
        if self._disk_rows[i] >= 0:
            img = self._disk.native(int(self._disk_rows[i]))
        else:
            try:
                img = self._read(path)
            except DataError as exc:
                if self.policy == "fail":
                    raise
                self.bad.add(path, str(exc))
                return None
        t = (torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None] - GREY_MEAN) / GREY_STD
        t = resize_to_policy(t, max_side=self.max_side)
        return t.expand(self.in_chans, -1, -1) if self.in_chans != 1 else t

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, np.ndarray, torch.Tensor, torch.Tensor]]:
        from bench.data.dbb import pad_to_grid

        plan = self.sampler.plan(epoch)
        for step in range(start_step, len(plan)):
            rows = shard_rows(plan.steps[step], self.rank, self.world_size)
            if self.world_size > 1:
                kept_rows, imgs = fill_unreadable(rows, [self._load(int(i)) for i in rows], plan.steps[step], self._load)
                kept = list(kept_rows)
            else:
                kept, imgs = [], []
                for i in rows:
                    t = self._load(int(i))
                    if t is not None:
                        kept.append(int(i))
                        imgs.append(t)
            if not imgs:
                continue
            x, valid = pad_to_grid(imgs, tuple(int(v) for v in plan.shape[step]), patch=self.patch, mode=self.mode)
            yield step, np.asarray(kept, dtype=np.int64), x, valid
