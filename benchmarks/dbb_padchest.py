"""Batching benchmark on PadChest's real image sizes, plus DBB planning time at 640k images.

Why PadChest: its label CSV, shipped inside the `torchxrayvision` package, lists the
DICOM size (`Rows_DICOM`, `Columns_DICOM`) of all 160,861 images (47,552 distinct
sizes, 612–4280 px), so the comparison runs on real radiograph sizes without any
image download. The 640k-image list is synthetic and only times planning (the DBB
poster's dataset had 639,877 images).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dbb_padchest.py --out /tmp/dbb

Prints the Markdown report (poster-shaped table + full strategy table per S), checks
the targets (DBB <= 102% of pad-to-patch tokens and <= 104% of its ViT-B FLOPs, every
image once, compositions change between epochs) and exits 1 if one is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.data.dbb import BatchSizer, build_bins, grid_size, plan_epoch
from bench.dbb_report import read_sizes, render, run_benchmark


def padchest_csv() -> Path:
    """The PadChest label CSV inside the installed torchxrayvision package."""
    try:
        import torchxrayvision
    except ModuleNotFoundError:
        raise SystemExit("torchxrayvision is not installed (it is in the project's `test` extra)") from None
    hits = sorted((Path(torchxrayvision.__file__).parent / "data").glob("PADCHEST*.csv*"))
    if not hits:
        raise SystemExit(f"no PADCHEST*.csv* in {Path(torchxrayvision.__file__).parent / 'data'}")
    return hits[0]


def synthetic_sizes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` radiograph-like sizes: log-uniform longer side 400–3072 px, log-normal aspect."""
    rng = np.random.default_rng(seed)
    longer = np.exp(rng.uniform(np.log(400), np.log(3072), n)).astype(np.int64)
    aspect = np.clip(rng.lognormal(0.0, 0.25, n), 0.33, 3.0)
    h = np.where(aspect >= 1, longer, np.maximum(64, longer * aspect)).astype(np.int64)
    w = np.where(aspect >= 1, np.maximum(64, longer / aspect), longer).astype(np.int64)
    return h, w


def time_planning(n: int, *, max_side: int, patch: int, batch_size: int, min_batches: float, epochs: int = 3) -> dict:
    h, w = synthetic_sizes(n)
    gh, gw = grid_size(h, w, patch=patch, max_side=max_side)
    t0 = time.perf_counter()
    bins = build_bins(gh, gw, sizer=BatchSizer(batch_size=batch_size), min_batches=min_batches)
    build = time.perf_counter() - t0
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        plan = plan_epoch(bins, seed=0, epoch=e)
        times.append(time.perf_counter() - t0)
        assert sum(len(s) for s in plan.steps) == n
    return {
        "n": n,
        "distinct_sizes": len(set(zip(h.tolist(), w.tolist()))),
        "distinct_grids": len(set(zip(gh.tolist(), gw.tolist()))),
        "bins": bins.n_bins,
        "build_s": build,
        "plan_s_median": statistics.median(times),
        "plan_s_max": max(times),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-side", type=int, nargs="+", default=[1024, 2048, 3072])
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--min-batches", type=float, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--target-min-batches", type=float, default=4, help="DBB setting checked against the targets")
    ap.add_argument("--synthetic-n", type=int, default=640_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    src = padchest_csv()
    df = read_sizes(src)
    print(f"PadChest sizes: {src.name}: {len(df):,} images, {len(df.drop_duplicates()):,} distinct sizes, "
          f"{int(df.min().min())}-{int(df.max().max())} px\n")
    sweep = sorted(set(args.min_batches) | {args.target_min_batches})
    label = f"DBB min_batches={args.target_min_batches:g}"
    mds, texs, checks = [], [], []
    for S in args.max_side:
        res = run_benchmark(df["height"].to_numpy(), df["width"].to_numpy(), patch=args.patch, max_side=S,
                            batch_size=args.batch_size, min_batches=sweep)
        md, tex = render(res, title=f"PadChest ({len(df):,} images): S={S}, patch {args.patch}, batch {args.batch_size}",
                         dbb_label=label)
        mds.append(md)
        texs.append(tex)
        ref, dbb = res[0], next(r for r in res if r.label == label)
        tok = dbb.processed / ref.processed
        flo = dbb.flops["vit_base"] / ref.flops["vit_base"]
        ok = tok <= 1.02 and flo <= 1.04 and dbb.real == ref.real and dbb.n_dropped == 0 and dbb.repeated_pairs < 1.0
        checks.append(ok)
        print(md)
        print(f"target S={S}: tokens {100 * tok:.2f}% (<= 102%), ViT-B FLOPs {100 * flo:.2f}% (<= 104%), "
              f"dropped {dbb.n_dropped}, same-batch pairs again next epoch {100 * dbb.repeated_pairs:.1f}% "
              f"-> {'PASS' if ok else 'FAIL'}\n")

    timing = time_planning(args.synthetic_n, max_side=max(args.max_side), patch=args.patch,
                           batch_size=args.batch_size, min_batches=args.target_min_batches)
    tline = (f"Planning, synthetic {timing['n']:,} images ({timing['distinct_sizes']:,} distinct sizes, "
             f"{timing['distinct_grids']:,} distinct grids at S={max(args.max_side)}): {timing['bins']} bins, "
             f"bin construction {timing['build_s']:.2f} s once, epoch plan median {timing['plan_s_median']:.3f} s "
             f"(max {timing['plan_s_max']:.3f} s; target < 1 s) -> {'PASS' if timing['plan_s_median'] < 1 else 'FAIL'}")
    print(tline)
    checks.append(timing["plan_s_median"] < 1)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dbb_padchest.md").write_text("\n".join(mds) + "\n" + tline + "\n")
        (args.out / "dbb_padchest.tex").write_text("\n".join(texs))
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
