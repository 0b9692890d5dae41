"""The worker side of `bench.data.cache`: decode images into shard folders.

Why a module of its own: shard workers are forked from a fork server that imports
this module once per prepare; it needs only numpy, PIL and `bench.data.io`, not
pandas (about half the import time), so the workers start sooner. `bench.data.cache`
re-exports everything here; read its docstring for the cache layout.

`claim_shards` is the work loop every process of a local prepare runs, the parent
included: shards are taken one at a time from a shared counter, so a process that
finishes early takes the next shard instead of idling while another works through a
fixed share (dynamic balancing; the tail is at most one shard long).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.data.io import ImageReadError, read_image

REPORT = "report.json"
NATIVE_FILE = "native.bin"
RESIZE_POLICIES = ("squash", "crop", "pad")
SHARDS_DIR = "shards"


@dataclass(frozen=True)
class CacheConfig:
    """What a cache was built with; a folder is reused only for the same config and rows."""

    size: int | None = 224
    resize: str = "squash"
    native: bool = False
    native_dtype: str = "uint16"
    native_max_side: int | None = None
    png16: str = "container"


def fixed_file(size: int) -> str:
    return f"images_{size}.npy"


def resize_square(img: np.ndarray, size: int, policy: str = "squash") -> np.ndarray:
    """float32 (H, W) in [0, 1] -> float32 (size, size) by `policy` (see module doc)."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    h, w = img.shape
    if policy == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side]
    if policy == "pad":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = _resize(img, nh, nw)
        out = np.zeros((size, size), dtype=np.float32)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top : top + nh, left : left + nw] = inner
        return out
    return _resize(img, size, size)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape == (height, width):
        return img.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _native_shape(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _quantise(img: np.ndarray, dtype: str) -> np.ndarray:
    top = 255.0 if dtype == "uint8" else 65535.0
    return np.round(np.clip(img, 0.0, 1.0) * top).astype(dtype)


def _decode(task: tuple[str, CacheConfig]) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Worker: (fixed-size uint8 image, native image, error) for one path."""
    path, cfg = task
    try:
        img = read_image(path, png16=cfg.png16)  # type: ignore[arg-type]
    except ImageReadError as exc:
        return None, None, exc.reason
    fixed = _quantise(resize_square(img, cfg.size, cfg.resize), "uint8") if cfg.size else None
    native = None
    if cfg.native:
        nh, nw = _native_shape(*img.shape, cfg.native_max_side)
        native = _quantise(_resize(img, nh, nw), cfg.native_dtype)
    return fixed, native, None


def shard_rows(n_rows: int, shard: int, n_shards: int) -> range:
    """Index rows of shard `shard` of `n_shards`: contiguous, sizes differ by at most one."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    return range(shard * n_rows // n_shards, (shard + 1) * n_rows // n_shards)


def _shard_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:05d}-of-{n_shards:05d}"


def _write_shard(
    out: Path, rows: list[tuple[str, str]], cfg: CacheConfig, on_error: str, shard: int, n_shards: int
) -> str:
    """Decode `rows` (image_id, path) into one shard folder; atomic; returns its name."""
    final = out / SHARDS_DIR / _shard_name(shard, n_shards)
    if final.is_dir():
        return final.name
    tmp = out / SHARDS_DIR / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = len(rows)
    try:
        fixed = (
            np.lib.format.open_memmap(tmp / "fixed.npy", mode="w+", dtype=np.uint8, shape=(n, cfg.size, cfg.size))
            if cfg.size
            else None
        )
        ok = np.zeros(n, dtype=bool)
        shapes = np.zeros((n, 2), dtype=np.int64)
        skipped: list[dict[str, str]] = []
        with open(tmp / NATIVE_FILE, "wb") as native_fh:
            for r, (image_id, path) in enumerate(rows):
                small, big, error = _decode((path, cfg))
                if error is not None:
                    if on_error == "fail":
                        raise ImageReadError(path, error)
                    skipped.append({"image_id": image_id, "path": path, "reason": error})
                    continue
                ok[r] = True
                if fixed is not None:
                    fixed[r] = small
                if big is not None:
                    native_fh.write(np.ascontiguousarray(big).tobytes())
                    shapes[r] = big.shape
        if fixed is not None:
            fixed.flush()
            del fixed
        np.savez(tmp / "meta.npz", ok=ok, shapes=shapes)
        (tmp / REPORT).write_text(json.dumps(skipped) + "\n")
        try:
            os.rename(tmp, final)  # the shard appears complete or not at all
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same shard first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final.name


@dataclass(frozen=True)
class ShardJob:
    """What every process of a local prepare needs to decode any shard of the plan."""

    out: str
    ids: list[str]
    paths: list[str]
    config: CacheConfig
    on_error: str
    todo: list[int]  # the unfinished shards, in the order they are handed out
    n_shards: int


class LocalClaims:
    """Shard claims within one process (a single-worker prepare)."""

    def __init__(self) -> None:
        self._next = 0
        self._stopped = False

    def next(self) -> int | None:
        """The position in `ShardJob.todo` to decode next; None once stopped."""
        if self._stopped:
            return None
        i, self._next = self._next, self._next + 1
        return i

    def stop(self) -> None:
        self._stopped = True


class SharedClaims(LocalClaims):
    """Shard claims shared by the processes of one prepare: a counter and a stop flag in
    shared memory, handed to the workers when they start (`init_worker`)."""

    def __init__(self, ctx: Any) -> None:
        self._counter = ctx.Value("q", 0)
        self._stop = ctx.Value("b", 0, lock=False)

    def next(self) -> int | None:
        with self._counter.get_lock():
            if self._stop.value:
                return None
            i = self._counter.value
            self._counter.value = i + 1
        return i

    def stop(self) -> None:
        self._stop.value = 1


_CLAIMS: LocalClaims | None = None


def init_worker(claims: LocalClaims) -> None:
    """Pool initialiser: the claims this worker process takes its shards from."""
    global _CLAIMS
    _CLAIMS = claims


def claim_shards(job: ShardJob, claims: LocalClaims | None = None) -> tuple[str, str] | None:
    """Decode shards of `job` until none is left; returns None, or (path, reason) of the
    image that failed under ``on_error="fail"`` (an `ImageReadError` does not pickle),
    after which no process of the prepare starts another shard."""
    claims = claims if claims is not None else _CLAIMS
    if claims is None:
        raise RuntimeError("claim_shards in a worker that init_worker did not set up")
    n = len(job.ids)
    while (i := claims.next()) is not None and i < len(job.todo):
        shard = job.todo[i]
        r = shard_rows(n, shard, job.n_shards)
        rows = list(zip(job.ids[r.start : r.stop], job.paths[r.start : r.stop]))
        try:
            _write_shard(Path(job.out), rows, job.config, job.on_error, shard, job.n_shards)
        except ImageReadError as exc:
            claims.stop()
            return str(exc.path), exc.reason
    return None
