"""Preprocessing cache: decode every image once, then read pixels at memory speed.

`prepare(index, out_dir, size=224)` decodes each row of a standard index with
`bench.data.io.read_image` and writes, under `out_dir`:

* ``images_<size>.npy``: uint8 array (N, size, size), opened memory-mapped. Row r holds
  index row r resized to size x size (`resize` policy below) and quantised as
  ``round(255 * x)``. Rows of skipped images stay zero and are not listed.
* ``native.bin`` (with ``native=True``): one flat buffer of every image at native
  resolution (or downscaled so its longer side is at most `native_max_side`),
  row-major, back to back, uint16 (``round(65535 * x)``) or uint8; the index gives each
  image's element offset and shape. This is what variable-resolution pre-training
  (dynamic batch binning) reads.
* ``index.parquet``: the cached rows of the standard index plus ``cache_row`` (row in
  the fixed-size array) and, for the native cache, ``native_offset`` (in elements),
  ``native_height``, ``native_width``.
* ``report.json``: counts and every skipped image with the reason.
* ``cache.json``: the manifest (parameters and counts), written last; a folder
  without it is incomplete, and `CacheReader` refuses it.

The work runs in shards (``shards/shard-IIIII-of-NNNNN/``, contiguous row ranges, each
written under a temporary name and renamed when complete) decoded by this process and
worker processes on every core (`bench.data.cache_shards`), then `merge` writes the
files above. An interrupted prepare resumes from its finished shards. On a cluster,
`bench data prepare SITE --executor slurm` submits one array task per unfinished shard
(`prepare_shard`) and a merge job after them (`bench.execute.prepare_array`); a
hand-written array can run `bench data prepare SITE --n-shards N --shard
$SLURM_ARRAY_TASK_ID --merge`. See "shards" below.

Corrupt images (`ImageReadError`): ``on_error="skip"`` leaves them out, counts and
lists them in ``report.json`` and logs a warning; ``on_error="fail"`` raises the
`ImageReadError` that names the file.

Resize policies for the fixed-size array: ``squash`` (default; resize both sides to
`size`, ignoring the aspect ratio, as ``torchvision.transforms.Resize((s, s))``),
``crop`` (centre square on the short side, then resize; torchxrayvision's
``XRayCenterCrop``) and ``pad`` (fit the long side, centre, pad with 0 = air).
Resampling is PIL's antialiased bilinear on float32 data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.data import cache_shards
from bench.data.cache_shards import (  # noqa: F401  (re-exported: the worker side lives in a pandas-free module)
    NATIVE_FILE,
    REPORT,
    RESIZE_POLICIES,
    SHARDS_DIR,
    CacheConfig,
    _decode,
    _native_shape,
    _quantise,
    _resize,
    _shard_name,
    _write_shard,
    claim_shards,
    fixed_file,
    resize_square,
    shard_rows,
)
from bench.data.io import ImageReadError

log = logging.getLogger(__name__)

MANIFEST = "cache.json"
INDEX_FILE = "index.parquet"
ON_ERROR = ("skip", "fail")
NATIVE_DTYPES = ("uint16", "uint8")
FORMAT_VERSION = 1


def _fingerprint(index: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for image_id, path in zip(index["image_id"].astype(str), index["path"].astype(str)):
        h.update(f"{image_id}\0{path}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------ shards
#
# A cache is built as `n_shards` independent shards over contiguous row ranges, each
# written under a temporary name and renamed into `shards/` when complete (a rename
# is atomic on POSIX file systems), then merged into the final files, which are
# themselves renamed into place before the manifest is written last. A killed prepare
# therefore leaves only complete shards plus temporaries that nothing reads; the next
# prepare with the same rows and parameters redoes only the missing shards. Shards
# need nothing from each other, so a cluster job array can run one shard per task
# (`prepare_shard(..., shard=i, n_shards=n)`) and a final task runs `merge`.

SHARD_PLAN = "plan.json"
DEFAULT_SHARD_ROWS = 256
SHARDS_PER_WORKER = 8  # shards are taken dynamically; more, smaller shards shorten the tail


def _validate(index: pd.DataFrame, size: int | None, native: bool, native_dtype: str, resize: str, on_error: str) -> None:
    if size is None and not native:
        raise ValueError("nothing to cache: size is None and native is False")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if native_dtype not in NATIVE_DTYPES:
        raise ValueError(f"native_dtype must be one of {NATIVE_DTYPES}, got {native_dtype!r}")
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    for col in ("image_id", "path"):
        if col not in index.columns:
            raise ValueError(f"index lacks column {col!r}; has {list(index.columns)}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _shard_plan(out: Path, cfg: CacheConfig, fingerprint: str, n_rows: int, n_shards: int) -> int:
    """Create or check `shards/plan.json`; returns the shard count in force.

    An existing plan of the same rows and parameters wins (its shard count is kept, so
    resuming with another worker count reuses the finished shards); a plan of other
    rows or parameters is an error rather than a silent mix of two caches.
    """
    d = out / SHARDS_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / SHARD_PLAN
    want = {"version": FORMAT_VERSION, "config": asdict(cfg), "fingerprint": fingerprint, "rows": n_rows}
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in want} != want:
            raise FileExistsError(f"{d} holds shards of other rows or parameters; remove it or use another folder")
        return int(old["n_shards"])
    _atomic_write(path, json.dumps({**want, "n_shards": n_shards}, indent=2) + "\n")
    return n_shards


def prepare_shard(
    index: pd.DataFrame,
    out_dir: str | Path,
    size: int | None = 224,
    *,
    shard: int,
    n_shards: int,
    resize: str = "squash",
    native: bool = False,
    native_dtype: str = "uint16",
    native_max_side: int | None = None,
    png16: str = "container",
    on_error: str = "skip",
) -> Path:
    """Decode shard `shard` of `n_shards` of `index` into `out_dir/shards/` (one cluster task).

    Idempotent: a finished shard is left as it is. Every task must pass the same
    index, parameters and `n_shards` (checked against `shards/plan.json`). Returns
    the shard's folder; `merge` commits the cache once all shards exist.
    """
    _validate(index, size, native, native_dtype, resize, on_error)
    cfg = CacheConfig(size, resize, native, native_dtype, native_max_side, png16)
    out = Path(out_dir)
    planned = _shard_plan(out, cfg, _fingerprint(index), len(index), n_shards)
    if planned != n_shards:
        raise ValueError(f"{out / SHARDS_DIR} was planned with {planned} shards, this task says {n_shards}")
    rows = shard_rows(len(index), shard, n_shards)
    sub = list(zip(index["image_id"].astype(str).iloc[rows.start : rows.stop], index["path"].astype(str).iloc[rows.start : rows.stop]))
    return out / SHARDS_DIR / _write_shard(out, sub, cfg, on_error, shard, n_shards)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Process start method for shard workers.

    Forking the caller is unsafe (it may hold torch/BLAS threads), and "spawn" makes
    every worker import PIL and numpy again (seconds on a loaded machine). A fork
    server is a fresh single-threaded process that imports the worker module
    (`bench.data.cache_shards`, no pandas) once; workers fork from it in milliseconds.
    "spawn" where fork servers do not exist.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([cache_shards.__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def plan_shards(
    index: pd.DataFrame,
    out_dir: str | Path,
    size: int | None = 224,
    *,
    n_shards: int | None = None,
    resize: str = "squash",
    native: bool = False,
    native_dtype: str = "uint16",
    native_max_side: int | None = None,
    png16: str = "container",
    on_error: str = "skip",
) -> tuple[int, list[int]]:
    """Fix the shard plan of a cache before a job array runs it: (shard count in force,
    unfinished shards). An existing plan of the same rows and parameters keeps its
    count (a resubmission does only what is left); `n_shards` defaults to about
    `DEFAULT_SHARD_ROWS` images per shard."""
    _validate(index, size, native, native_dtype, resize, on_error)
    cfg = CacheConfig(size, resize, native, native_dtype, native_max_side, png16)
    n = len(index)
    wanted = n_shards if n_shards is not None else max(1, -(-n // DEFAULT_SHARD_ROWS))
    planned = _shard_plan(Path(out_dir), cfg, _fingerprint(index), n, wanted)
    return planned, missing_shards(out_dir)


def missing_shards(out_dir: str | Path) -> list[int]:
    """Shards of the plan in `out_dir/shards/` that are not finished yet."""
    d = Path(out_dir) / SHARDS_DIR
    plan = json.loads((d / SHARD_PLAN).read_text())
    n = int(plan["n_shards"])
    return [i for i in range(n) if not (d / _shard_name(i, n)).is_dir()]


def merge(index: pd.DataFrame, out_dir: str | Path, *, keep_shards: bool = False) -> dict[str, Any]:
    """Commit a cache from its finished shards; returns the manifest.

    Final files are written under temporary names, renamed into place, and the
    manifest (`cache.json`, what `CacheReader` and the stages look for) is written
    last, so a merge killed at any point leaves no cache a stage would read and can
    simply be run again. Shards are removed afterwards unless `keep_shards`.
    """
    out = Path(out_dir)
    d = out / SHARDS_DIR
    plan = json.loads((d / SHARD_PLAN).read_text())
    if plan["fingerprint"] != _fingerprint(index) or plan["rows"] != len(index):
        raise FileExistsError(f"{d} holds shards of other rows; merge with the index they were built from")
    missing = missing_shards(out)
    if missing:
        raise RuntimeError(f"{d}: {len(missing)} of {plan['n_shards']} shards are not finished (first: {missing[0]})")
    cfg = CacheConfig(**plan["config"])
    n, n_shards = len(index), int(plan["n_shards"])
    tmp = f".tmp-{os.getpid()}"
    fixed_path = out / fixed_file(cfg.size) if cfg.size else None
    ok = np.zeros(n, dtype=bool)
    shapes = np.zeros((n, 2), dtype=np.int64)
    skipped: list[dict[str, str]] = []
    fixed = (
        np.lib.format.open_memmap(str(fixed_path) + tmp, mode="w+", dtype=np.uint8, shape=(n, cfg.size, cfg.size))
        if fixed_path is not None
        else None
    )
    with open(out / (NATIVE_FILE + tmp), "wb") if cfg.native else contextlib.nullcontext() as native_fh:
        for s in range(n_shards):
            sd = d / _shard_name(s, n_shards)
            rows = shard_rows(n, s, n_shards)
            meta = np.load(sd / "meta.npz")
            ok[rows.start : rows.stop] = meta["ok"]
            shapes[rows.start : rows.stop] = meta["shapes"]
            skipped += json.loads((sd / REPORT).read_text())
            if fixed is not None:
                part = np.load(sd / "fixed.npy", mmap_mode="r")
                for lo in range(0, part.shape[0], 1024):  # bounded memory
                    fixed[rows.start + lo : rows.start + min(lo + 1024, part.shape[0])] = part[lo : lo + 1024]
                del part
            if native_fh is not None:
                with open(sd / NATIVE_FILE, "rb") as src:
                    shutil.copyfileobj(src, native_fh, 1 << 24)
    if fixed is not None:
        fixed.flush()
        del fixed
    sizes = shapes[:, 0] * shapes[:, 1]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cached = index.loc[ok].copy()
    cached["cache_row"] = np.flatnonzero(ok).astype(np.int64)
    if cfg.native:
        cached["native_offset"] = offsets[ok]
        cached["native_height"] = shapes[ok, 0]
        cached["native_width"] = shapes[ok, 1]
    cached.reset_index(drop=True).to_parquet(out / (INDEX_FILE + tmp), index=False)
    os.replace(out / (INDEX_FILE + tmp), out / INDEX_FILE)
    if fixed_path is not None:
        os.replace(str(fixed_path) + tmp, fixed_path)
    if cfg.native:
        os.replace(out / (NATIVE_FILE + tmp), out / NATIVE_FILE)
    if skipped:
        log.warning("cache %s: skipped %d unreadable images, listed in %s", out, len(skipped), out / REPORT)
    report = {"rows": n, "cached": int(ok.sum()), "skipped": len(skipped), "skipped_images": skipped}
    _atomic_write(out / REPORT, json.dumps(report, indent=2) + "\n")
    manifest = {
        "version": FORMAT_VERSION,
        "config": asdict(cfg),
        "fingerprint": plan["fingerprint"],
        "rows": n,
        "cached": int(ok.sum()),
        "skipped": len(skipped),
        "native_elements": int(sizes.sum()),
    }
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if not keep_shards:
        shutil.rmtree(d, ignore_errors=True)
    return manifest


def prepare(
    index: pd.DataFrame,
    out_dir: str | Path,
    size: int | None = 224,
    *,
    resize: str = "squash",
    native: bool = False,
    native_dtype: str = "uint16",
    native_max_side: int | None = None,
    png16: str = "container",
    on_error: str = "skip",
    workers: int = 1,
    n_shards: int | None = None,
    max_shards: int | None = None,
) -> dict[str, Any] | None:
    """Build the cache for `index` (a standard index) in `out_dir`; returns the manifest.

    `size=None` with `native=True` writes only the native cache. A folder that already
    holds a complete cache of the same rows and parameters is returned unchanged; one
    holding anything else is an error (never overwritten silently).

    Work is split into `n_shards` shards (default: about 256 images each, at least
    8 per worker) decoded by `workers` processes (`0`: every core), this one included,
    each one image at a time into its own shard files, so memory stays bounded whatever
    the collection size and no pixels travel between processes. Every process takes
    the next unfinished shard when it is done with one (`claim_shards`), and this
    process starts decoding while the others start up. Finished shards of an
    interrupted run are reused. `max_shards` stops after
    that many new shards without merging and returns None (a partial run, as if
    killed; for tests and for spreading work over several calls).
    """
    _validate(index, size, native, native_dtype, resize, on_error)
    cfg = CacheConfig(size, resize, native, native_dtype, native_max_side, png16)
    out = Path(out_dir)
    fingerprint = _fingerprint(index)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("config") == asdict(cfg) and old.get("fingerprint") == fingerprint:
            log.info("cache %s is complete for these rows and parameters; reused", out)
            return old
        raise FileExistsError(f"{out} holds a cache built from other rows or parameters; use another folder")
    if workers <= 0:  # every core this process may run on (a SLURM task's allocation, not the node)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = len(index)
    if n_shards is None:
        n_shards = max(1, min(n, max(-(-n // DEFAULT_SHARD_ROWS), SHARDS_PER_WORKER * workers if workers > 1 else 1)))
    n_shards = _shard_plan(out, cfg, fingerprint, n, n_shards)
    todo = missing_shards(out)
    if max_shards is not None:
        todo = todo[:max_shards]
    job = cache_shards.ShardJob(
        str(out), index["image_id"].astype(str).tolist(), index["path"].astype(str).tolist(), cfg, on_error, todo, n_shards
    )
    helpers = min(workers, len(todo)) - 1  # this process is one of the workers
    if helpers <= 0:
        failed = claim_shards(job, cache_shards.LocalClaims())
    else:
        ctx = _worker_context()
        claims = cache_shards.SharedClaims(ctx)
        pool = ProcessPoolExecutor(
            max_workers=helpers, mp_context=ctx, initializer=cache_shards.init_worker, initargs=(claims,)
        )
        try:
            futures = [pool.submit(claim_shards, job) for _ in range(helpers)]
            failed = claim_shards(job, claims)  # decode here too while the helpers start
            failed = failed or next((f for f in (fut.result() for fut in futures) if f is not None), None)
        finally:  # on an error (policy "fail") or an interrupt, no process claims another shard
            claims.stop()
            pool.shutdown(wait=True, cancel_futures=True)
    if failed is not None:
        raise ImageReadError(*failed)
    if max_shards is not None and missing_shards(out):
        return None
    return merge(index, out)


class CacheReader:
    """Read a cache written by `prepare`: float32 [0, 1] images by row of `.index`.

    Row i is the i-th row of `.index` (the cached rows of the original index, in
    order). `reader[i]` is the fixed-size image (size, size); `reader.batch(rows)`
    stacks several (B, size, size); `reader.native(i)` is the native-resolution image.
    Memory maps are opened lazily in each process, so a reader can be pickled into
    DataLoader workers without copying the pixel data.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} is not a complete cache: {MANIFEST} is missing")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        self.config = CacheConfig(**self.manifest["config"])
        self.index: pd.DataFrame = pd.read_parquet(self.root / INDEX_FILE)
        self._rows = self.index["cache_row"].to_numpy(dtype=np.int64)
        if self.config.native:
            self._offsets = self.index["native_offset"].to_numpy(dtype=np.int64)
            self._heights = self.index["native_height"].to_numpy(dtype=np.int64)
            self._widths = self.index["native_width"].to_numpy(dtype=np.int64)
        self._fixed: np.ndarray | None = None
        self._native: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fixed"] = None
        state["_native"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    @property
    def size(self) -> int | None:
        return self.config.size

    def _fixed_array(self) -> np.ndarray:
        if self.config.size is None:
            raise ValueError(f"cache {self.root} has no fixed-size array (built with size=None)")
        if self._fixed is None:
            self._fixed = np.load(self.root / fixed_file(self.config.size), mmap_mode="r")
        return self._fixed

    def _native_buffer(self) -> np.ndarray:
        if not self.config.native:
            raise ValueError(f"cache {self.root} has no native-resolution buffer (built with native=False)")
        if self._native is None:
            self._native = np.memmap(self.root / NATIVE_FILE, dtype=self.config.native_dtype, mode="r")
        return self._native

    def raw(self, i: int) -> np.ndarray:
        """The stored uint8 (size, size) image of row i (no copy, no conversion)."""
        return self._fixed_array()[self._rows[i]]

    def __getitem__(self, i: int) -> np.ndarray:
        return np.true_divide(self._fixed_array()[self._rows[i]], np.float32(255.0), dtype=np.float32)

    def batch(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (B, size, size) for index rows `rows`, in the order given."""
        wanted = self._rows[np.asarray(rows, dtype=np.int64)]
        raw = self._fixed_array()[wanted]  # one gather from the memory map (uint8)
        return np.true_divide(raw, np.float32(255.0), dtype=np.float32)

    def native(self, i: int) -> np.ndarray:
        """float32 (h, w) in [0, 1] at native (or capped) resolution for row i."""
        buffer = self._native_buffer()
        h, w, start = int(self._heights[i]), int(self._widths[i]), int(self._offsets[i])
        top = 255.0 if self.config.native_dtype == "uint8" else 65535.0
        flat = buffer[start : start + h * w]
        return flat.reshape(h, w).astype(np.float32) / np.float32(top)

    def native_sizes(self) -> pd.DataFrame:
        """``image_id, height, width`` of the native cache (input to size binning)."""
        return pd.DataFrame(
            {
                "image_id": self.index["image_id"].to_numpy(),
                "height": self.index["native_height"].to_numpy(),
                "width": self.index["native_width"].to_numpy(),
            }
        )
