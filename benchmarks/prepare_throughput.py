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
meaningful on idle cores, the script also measures the CPU time each worker spends
per image (shards run through `prepare_shard` in k processes): if k workers need the
same CPU seconds per image as the single-core decode, k idle cores give k times its
rate; the ratio is printed as the CPU-time projection.

Run (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prepare_throughput.py --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import io
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

from bench.data.cache import _quantise, _worker_context, prepare, prepare_shard, resize_square  # noqa: E402
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


def _timed_shard(task: tuple) -> float:
    """Worker: one shard via the job-array entry point; returns its CPU seconds."""
    index, out, size, shard, n_shards = task
    c0 = time.process_time()
    prepare_shard(index, out, size, shard=shard, n_shards=n_shards)
    return time.process_time() - c0


def worker_cpu_per_image(index, work: Path, size: int, workers: int) -> tuple[float, float]:
    """(CPU seconds per image inside k shard workers, wall images/s of those shards)."""
    from concurrent.futures import ProcessPoolExecutor

    out = work / f"cpu-{workers}-{time.time_ns()}"
    n_shards = 4 * workers
    tasks = [(index, str(out), size, s, n_shards) for s in range(n_shards)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context()) as pool:
        list(pool.map(_timed_shard, tasks[:workers]))  # start the workers (imports) before timing
        shutil.rmtree(out)
        t0 = time.perf_counter()
        cpu = sum(pool.map(_timed_shard, tasks))
        wall = time.perf_counter() - t0
    shutil.rmtree(out)
    return cpu / len(index), len(index) / wall


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
              "which imports numpy/pandas/PIL once per prepare process; later worker starts are forks)")
        shutil.rmtree(work / "warm")

        print(f"{args.n} synthetic 16-bit PNGs of {args.source_size}² (12-bit content) -> {args.size}², "
              f"{os.cpu_count()} cores visible")
        for name, clock in (("wall", time.perf_counter), ("CPU", time.process_time)):
            bd = breakdown(paths, args.size, clock=clock)
            per = sum(bd.values())
            print(f"per-image cost, one process, {name} time (ms): " + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in bd.items())
                  + f"; total {1e3 * per:.1f} ms = {1 / per:.1f} images/s (load {load():.1f})")
        decode, decode_cpu, rates = [], [], {w: [] for w in args.workers}
        cpu: dict[int, list[float]] = {w: [] for w in args.workers}
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
            print("; ".join(line))
        base = statistics.median(decode)
        base_cpu = statistics.median(decode_cpu)
        print(f"\nsingle-core decode rate (median of {args.repeats}): {base:.1f} images/s, {1e3 * base_cpu:.0f} ms CPU/image")
        for w in args.workers:
            med, best = statistics.median(rates[w]), max(rates[w])
            proj = w * base_cpu / statistics.median(cpu[w])
            print(f"prepare, {w} process(es): median {med:.1f} images/s ({med / base:.2f}x decode), "
                  f"best {best:.1f} images/s ({best / base:.2f}x); CPU-time projection on {w} idle core(s): {proj:.2f}x")
    return {"breakdown": bd, "decode": decode, "prepare": rates, "worker_cpu": cpu}


if __name__ == "__main__":
    main()
