"""`bench data prepare` throughput: per-image cost breakdown and multi-core speed-up.

Why (issue 13, section 4): decoding 16-bit 1024² PNGs to 224² runs at about 16
images/s per core, so a 600,000-image collection takes 10 core-hours; the prepare
must use every core. This script measures, on the same files:

* the single-core decode rate (`read_image` + resize, what an uncached loader does);
* the per-image cost breakdown of that work: read (file bytes), decode (PNG inflate),
  rescale (to float32 [0, 1]), resize (224², antialiased bilinear), write (quantise to
  uint8 and store in the memory-mapped array);
* `prepare(..., workers=k)` images/s for each k in `--workers` (default 1 and 2),
  end to end (process start-up, shards, merge), repeated `--repeats` times, and the
  speed-up of each against the single-core decode rate.

The machine's load average is printed before every timed run: other processes on a
shared machine take cores away from the workers, so read the speed-ups together
with it (and repeat when the load was high). Because wall-clock speed-ups are only
meaningful on idle cores, the script also measures the CPU time per image of the parallel phase (the
loop `prepare` itself runs, `claim_shards`, in this process plus k - 1 fork-server
workers, all CPU summed): if k processes need the same CPU seconds per image as the
single-core decode, k idle cores give k times its rate; that ratio is printed as the
CPU-time projection, alone and with the (serial) merge added. The fixed costs
(starting the fork server and a worker, merging) are printed on their own.

Run (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prepare_throughput.py --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from loader_throughput import synthetic_sources  # noqa: E402

from bench.data import cache_shards  # noqa: E402
from bench.data.cache import (  # noqa: E402
    SHARDS_PER_WORKER,
    _quantise,
    _worker_context,
    merge,
    prepare,
    prepare_shard,
    resize_square,
)
from bench.data.io import _pil_to_float, read_image  # noqa: E402

STAGES = ("read", "decode", "rescale", "resize", "write")


def load() -> float:
    """1-minute load average (how many runnable processes compete for the cores)."""
    return os.getloadavg()[0]


def breakdown(paths: list[str], size: int, png16: str = "container", clock=time.perf_counter) -> dict[str, float]:
    """Mean seconds per image of each stage, single process, same code path as `prepare`.

    `clock=time.process_time` counts CPU time only (robust to other processes' load).
    """
    total = dict.fromkeys(STAGES, 0.0)
    out = np.lib.format.open_memmap(
        os.path.join(tempfile.gettempdir(), f"bd-{os.getpid()}.npy"), mode="w+", dtype=np.uint8,
        shape=(len(paths), size, size),
    )
    try:
        for i, path in enumerate(paths):
            t0 = clock()
            data = Path(path).read_bytes()
            t1 = clock()
            img = Image.open(io.BytesIO(data))
            img.load()
            t2 = clock()
            arr = _pil_to_float(img, png16)
            t3 = clock()
            small = resize_square(arr, size)
            t4 = clock()
            out[i] = _quantise(small, "uint8")
            t5 = clock()
            for k, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                total[k] += dt
        t0 = clock()
        out.flush()
        total["write"] += clock() - t0
    finally:
        name = out.filename
        del out
        os.unlink(name)
    return {k: v / len(paths) for k, v in total.items()}


def decode_rate(paths: list[str], size: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of `read_image` + resize in this process (one core)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        resize_square(read_image(p), size)
    return len(paths) / (time.perf_counter() - t0), (time.process_time() - c0) / len(paths)


def _timed_claims(job: cache_shards.ShardJob, claims: cache_shards.LocalClaims | None = None) -> float:
    """`prepare`'s own work loop (`claim_shards`) in one process; returns its CPU seconds."""
    c0 = time.process_time()
    cache_shards.claim_shards(job, claims)
    return time.process_time() - c0


def _started(_: int) -> int:
    return os.getpid()


def worker_cpu_per_image(index, work: Path, size: int, workers: int) -> tuple[float, float]:
    """(CPU seconds per image over all k processes of the parallel phase, wall images/s of it).

    The same loop `prepare(workers=k)` runs (this process plus k - 1 fork-server
    workers claiming shards from a shared counter), timed once the workers are up, so
    start-up and merge (fixed costs, printed separately) are not in it.
    """
    from concurrent.futures import ProcessPoolExecutor

    out = work / f"cpu-{workers}-{time.time_ns()}"
    (out / cache_shards.SHARDS_DIR).mkdir(parents=True)
    n = len(index)
    n_shards = max(1, min(n, SHARDS_PER_WORKER * workers))
    job = cache_shards.ShardJob(str(out), index["image_id"].astype(str).tolist(), index["path"].astype(str).tolist(),
                                cache_shards.CacheConfig(size), "skip", list(range(n_shards)), n_shards)  # fmt: skip
    if workers == 1:
        t0 = time.perf_counter()
        cpu = _timed_claims(job, cache_shards.LocalClaims())
    else:
        ctx = _worker_context()
        claims = cache_shards.SharedClaims(ctx)
        with ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=cache_shards.init_worker, initargs=(claims,)) as pool:
            list(pool.map(_started, range(workers - 1)))  # workers up (fork server imports done) before timing
            t0 = time.perf_counter()
            futures = [pool.submit(_timed_claims, job) for _ in range(workers - 1)]
            cpu = _timed_claims(job, claims) + sum(f.result() for f in futures)
    wall = time.perf_counter() - t0
    shutil.rmtree(out)
    return cpu / n, n / wall


def _decode_cpu(paths: list[str], size: int) -> float:
    return decode_rate(paths, size)[1]


def concurrent_decode_cpu(paths: list[str], size: int, k: int) -> float:
    """CPU seconds per image of k plain decode loops (`read_image` + resize, no cache code)
    running at the same time in k processes: what k cores give *any* k-process scheme on
    this machine (shared caches, memory bandwidth, hyper-threads of a virtual machine)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(k, mp_context=_worker_context()) as pool:
        list(pool.map(_started, range(k)))
        return statistics.mean(pool.map(_decode_cpu, [paths] * k, [size] * k))


def fixed_costs(index, work: Path, size: int) -> dict[str, float]:
    """Seconds of what a prepare does besides decoding: starting the fork server and a
    worker (`bench.data.cache_shards` imports; wall), and merging the shards (wall and CPU)."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([cache_shards.__name__])
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        list(pool.map(_started, [0]))
    start = time.perf_counter() - t0
    out = work / f"merge-{time.time_ns()}"
    assert prepare(index, out, size=size, n_shards=2, max_shards=1) is None  # decode everything...
    prepare_shard(index, out, size, shard=1, n_shards=2)
    t0, c0 = time.perf_counter(), time.process_time()
    merge(index, out)  # ...then time only the merge
    return {"worker start": start, "merge": time.perf_counter() - t0, "merge CPU": time.process_time() - c0}


def prepare_rate(index, work: Path, size: int, workers: int) -> float:
    """Images/s of a complete `prepare` (fresh folder) with `workers` processes."""
    out = work / f"cache-{workers}-{time.time_ns()}"
    t0 = time.perf_counter()
    prepare(index, out, size=size, workers=workers)
    dt = time.perf_counter() - t0
    shutil.rmtree(out)
    return len(index) / dt


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of source images")
    ap.add_argument("--source-size", type=int, default=1024, help="side of the synthetic 16-bit PNGs")
    ap.add_argument("--size", type=int, default=224, help="cached side")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the sources here (default: a temp folder)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        src = work / "sources"
        src.mkdir(parents=True, exist_ok=True)
        index = synthetic_sources(src, args.n, args.source_size, "png16")
        paths = index["path"].astype(str).tolist()
        decode_rate(paths, args.size)  # warm the page cache and imports
        t0 = time.perf_counter()
        prepare(index.head(8), work / "warm", size=args.size, workers=2)
        print(f"first multi-process prepare of 8 images: {time.perf_counter() - t0:.1f} s (starts the fork server, "
              "which imports numpy/PIL once per prepare process; later worker starts are forks)")
        shutil.rmtree(work / "warm")

        print(f"{args.n} synthetic 16-bit PNGs of {args.source_size}² (12-bit content) -> {args.size}², "
              f"{os.cpu_count()} cores visible")
        fixed = fixed_costs(index, work, args.size)
        print("fixed costs per prepare (wall): " + ", ".join(f"{k} {v:.2f} s" for k, v in fixed.items())
              + f" (load {load():.1f}); the first worker start overlaps with this process decoding")
        for name, clock in (("wall", time.perf_counter), ("CPU", time.process_time)):
            bd = breakdown(paths, args.size, clock=clock)
            per = sum(bd.values())
            print(f"per-image cost, one process, {name} time (ms): " + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in bd.items())
                  + f"; total {1e3 * per:.1f} ms = {1 / per:.1f} images/s (load {load():.1f})")
        decode, decode_cpu, rates = [], [], {w: [] for w in args.workers}
        cpu: dict[int, list[float]] = {w: [] for w in args.workers}
        pair: dict[int, list[float]] = {w: [] for w in args.workers if w > 1}
        for r in range(args.repeats):
            la = load()
            rate_, cpu_ = decode_rate(paths, args.size)
            decode.append(rate_)
            decode_cpu.append(cpu_)
            line = [f"repeat {r + 1}: load {la:.2f}; decode {rate_:.1f} images/s ({1e3 * cpu_:.0f} ms CPU/image)"]
            for w in args.workers:
                la = load()
                rates[w].append(prepare_rate(index, work, args.size, w))
                c, _ = worker_cpu_per_image(index, work, args.size, w)
                cpu[w].append(c)
                line.append(f"prepare workers={w} {rates[w][-1]:.1f} images/s (load before {la:.2f}), "
                            f"{1e3 * c:.0f} ms CPU/image in workers")
                if w > 1:
                    pair[w].append(concurrent_decode_cpu(paths, args.size, w))
                    line.append(f"{w} concurrent plain decode loops {1e3 * pair[w][-1]:.0f} ms CPU/image")
            print("; ".join(line))
        base = statistics.median(decode)
        base_cpu = statistics.median(decode_cpu)
        print(f"\nsingle-core decode rate (median of {args.repeats}): {base:.1f} images/s, {1e3 * base_cpu:.0f} ms CPU/image")
        for w in args.workers:
            med, best = statistics.median(rates[w]), max(rates[w])
            cpu_w = statistics.median(cpu[w])
            proj = w * base_cpu / cpu_w
            # on w idle cores: the decoding spread over w processes, plus the merge (serial, its CPU time)
            e2e = args.n * base_cpu / (args.n * cpu_w / w + fixed["merge CPU"])
            print(f"prepare, {w} process(es): median {med:.1f} images/s ({med / base:.2f}x decode), "
                  f"best {best:.1f} images/s ({best / base:.2f}x); CPU time {1e3 * cpu_w:.1f} ms/image in the workers; "
                  f"CPU-time projection on {w} idle core(s): {proj:.2f}x steady state, {e2e:.2f}x with the merge")
            if w > 1:
                par = statistics.median(pair[w])
                print(f"  {w} plain decode loops at once need {1e3 * par:.1f} ms CPU/image (machine contention): "
                      f"prepare's parallel phase costs {cpu_w / par:.3f}x that; on {w} cores that do not slow each "
                      f"other down, the projection is {w * par / cpu_w:.2f}x")
    return {"breakdown": bd, "decode": decode, "prepare": rates, "worker_cpu": cpu, "fixed": fixed, "concurrent_decode_cpu": pair}


if __name__ == "__main__":
    main()
