"""Where a stage's pixels come from, and what happens when an image cannot be read.

Pixels come from a `bench data prepare` cache when one was prepared for the same site,
adapter options and size (`open_cache`), and are decoded from the source files
otherwise (`bench.data.io.read_image`, with the site's `read_options`). Either way the
run's image policy applies in one place, `PixelSource.read`: `fail` raises the
`DataError` that names the file; `skip` drops the image, counts it in `BadImages` and
logs it. Both batch classes (`bench.data.batches`) read through it, so a fixed-size and a
variable-resolution stage skip, count and log alike.

No torch here: `bench data prepare`/`stats` and the leakage audit use the cache lookup.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from bench.data.errors import DataError
from bench.data.index import options_key
from bench.data.sites import get_site

if TYPE_CHECKING:
    from bench.data.cache import CacheReader

log = logging.getLogger(__name__)

POLICIES = ("skip", "fail")


def site_read_options(site: str) -> dict[str, Any]:
    """Pixel-reading options a site declares (e.g. PadChest's 16-bit PNGs hold 12-bit data)."""
    return dict(getattr(get_site(site), "read_options", {}) or {})


def cache_dir_for(cache_root: str | Path, site: str, options: dict[str, Any]) -> Path:
    """Where `bench data prepare` puts the cache of a site (with its adapter options)."""
    tag = hashlib.sha256(options_key(options).encode()).hexdigest()[:8]
    return Path(cache_root) / f"{site}-{tag}"


def open_cache(cache_root: str | Path | None, site: str, options: dict[str, Any], size: int) -> CacheReader | None:
    """The prepared cache of (site, options) at `size` px (0: native), or None (stages then decode from source)."""
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


def source_kwargs(site: str, options: dict[str, Any], size: int, cache_root: str | Path | None) -> dict[str, Any]:
    """Batch-class keywords for reading a site's pixels: its read options and its cache at `size` px (0: native), if prepared."""
    return {"read_options": site_read_options(site), "cache": open_cache(cache_root, site, options, size)}


def rows_in_cache(index: pd.DataFrame, cache: CacheReader | None) -> np.ndarray:
    """Row of each index image in a prepared cache, -1 where it is not cached."""
    if cache is None:
        return np.full(len(index), -1, dtype=np.int64)
    pos = {iid: r for r, iid in enumerate(cache.index["image_id"].astype(str))}
    return np.array([pos.get(i, -1) for i in index["image_id"].astype(str)], dtype=np.int64)


@dataclass
class BadImages:
    """Images that failed to decode under policy `skip`: reported, never silently lost."""

    paths: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.paths[path] = reason

    def __len__(self) -> int:
        return len(self.paths)


class PixelSource:
    """Decode-or-skip over the images of one index: `read(i)` is a float32 [0, 1] 2-D array or None.

    `native=True` reads a prepared cache's native-resolution copy (variable-resolution
    pre-training), otherwise its fixed-size one. An image found bad once is not tried again.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        *,
        policy: str = "skip",
        read_options: dict[str, Any] | None = None,
        cache: CacheReader | None = None,
        native: bool = False,
        bad: BadImages | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"image policy {policy!r} is not one of {', '.join(POLICIES)}")
        self.policy = policy
        self.paths: list[str] = index["path"].astype(str).tolist()
        self.bad = bad if bad is not None else BadImages()
        self.cache = cache
        self._options = dict(read_options or {})
        self._cache_rows = rows_in_cache(index, cache)
        self._native = native

    def read(self, i: int) -> np.ndarray | None:
        from bench.data.io import read_image

        path = self.paths[i]
        if path in self.bad.paths:
            return None
        row = int(self._cache_rows[i])
        if row >= 0:
            assert self.cache is not None
            return self.cache.native(row) if self._native else self.cache[row]
        try:
            return read_image(path, **self._options)
        except DataError as exc:
            if self.policy == "fail":
                raise
            self.bad.add(path, str(exc))
            log.warning("skipping unreadable image %s: %s", path, exc)
            return None


def readable_rows(
    rows: Sequence[int], load: Callable[[int], Any], global_rows: Sequence[int] | None = None, world_size: int = 1
) -> tuple[np.ndarray, list[Any]]:
    """Load `rows`, keeping the readable ones: (rows kept, their items).

    One process drops the unreadable images of its batch. Under data parallelism
    (`world_size` > 1 and the step's `global_rows` given) they are replaced instead
    (`fill_unreadable`), so every rank keeps the same batch shape.
    """
    loaded = [load(int(i)) for i in rows]
    if global_rows is not None and world_size > 1:
        return fill_unreadable(np.asarray(rows), loaded, np.asarray(global_rows), load)
    kept = [(int(i), t) for i, t in zip(rows, loaded) if t is not None]
    return np.asarray([i for i, _ in kept], dtype=np.int64), [t for _, t in kept]


def fill_unreadable(rows: np.ndarray, loaded: list[Any], global_rows: np.ndarray, load: Callable[[int], Any]) -> tuple[np.ndarray, list[Any]]:
    """Keep a rank's batch at full size when some of its images are unreadable (policy skip).

    Under data parallelism a rank cannot simply drop images (shapes must agree across
    ranks) or skip a step (the others would wait for it). Each unreadable image is
    replaced by the next readable one of the *global* batch, cyclically, which every
    rank can read and which gives the same result on every rank. Returns (rows, items)
    with unreadable entries replaced; empty when the whole global batch is unreadable,
    which every rank then sees alike and skips together.
    """
    if all(t is not None for t in loaded):
        return np.asarray(rows, dtype=np.int64), loaded
    memo: dict[int, Any] = {}

    def get(i: int) -> Any:
        if i not in memo:
            memo[i] = load(i)
        return memo[i]

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
