"""Images/s: decoding from the source files vs reading the preprocessing cache.

Usage (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/loader_throughput.py                # synthetic sources
    python benchmarks/loader_throughput.py --source-size 2048 --format dicom --n 100
    python benchmarks/loader_throughput.py --site padchest --root /data/padchest --n 500

Without ``--site`` the script writes `--n` source images of `--source-size` pixels
square in a temporary folder: chest renderings from `bench.data.synthetic.anatomy`
(upsampled), saved as 16-bit PNG with 12-bit content (PadChest-like), 8-bit PNG
(NIH-like) or 12-bit MONOCHROME1 DICOM (VinDr-like). With ``--site`` it uses the first
`--n` rows of a real site's index instead.

Measured (single process, this machine's one core):

* decode: `read_image` + resize to `--size` squared (what an uncached loader does
  per image);
* prepare: building the cache (decode + resize + write), images/s;
* cache single: `CacheReader[i]` in random order, float32 [0, 1];
* cache batch: `CacheReader.batch(rows)` for random batches of `--batch` rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.data.cache import CacheReader, prepare, resize_square  # noqa: E402
from bench.data.io import read_image  # noqa: E402


def synthetic_sources(out: Path, n: int, side: int, fmt: str, seed: int = 0) -> pd.DataFrame:
    """Write `n` chest-like images (`side` x `side`) in `fmt`; returns an index (image_id, path)."""
    from bench.data.synthetic.anatomy import SiteStyle, render
    from bench.data.synthetic.vindr import save_dicom

    rng = np.random.default_rng(seed)
    style = SiteStyle(name="bench", noise=0.01, blur=0.5)
    base = [render({}, np.random.default_rng(int(rng.integers(2**31))), style, 256, 256) for _ in range(min(n, 8))]
    rows = []
    for i in range(n):
        small = Image.fromarray(base[i % len(base)].astype(np.float32), mode="F")
        img = np.clip(np.asarray(small.resize((side, side), Image.Resampling.BILINEAR)), 0, 1)
        img = np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1)
        if fmt == "png16":
            path = out / f"img{i:05d}.png"
            Image.fromarray(np.round(img * 4095).astype(np.uint16)).save(path, compress_level=6)
        elif fmt == "png8":
            path = out / f"img{i:05d}.png"
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path, compress_level=6)
        else:
            path = out / f"img{i:05d}.dicom"
            save_dicom(img, path, f"img{i:05d}", rng)
        rows.append({"image_id": path.stem, "path": str(path)})
    return pd.DataFrame(rows)


def site_sources(site: str, root: Path, n: int, options: dict) -> pd.DataFrame:
    from bench.data.sites import get_site

    return get_site(site).load_index(root, **options).head(n).reset_index(drop=True)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of images")
    ap.add_argument("--size", type=int, default=224, help="cached side length in pixels")
    ap.add_argument("--source-size", type=int, default=1024, help="synthetic source side length")
    ap.add_argument("--format", choices=("png16", "png8", "dicom"), default="png16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--site", help="use a real site's index instead of synthetic sources")
    ap.add_argument("--root", type=Path, help="data root for --site")
    ap.add_argument("--options", default="{}", help="JSON site options, e.g. '{\"missing\": \"drop\"}'")
    ap.add_argument("--workdir", type=Path, help="keep sources/cache here instead of a temp folder")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.site:
            if args.root is None:
                ap.error("--site needs --root")
            index = site_sources(args.site, args.root, args.n, json.loads(args.options))
            what = f"{args.site} ({len(index)} images from {args.root})"
        else:
            src = work / "sources"
            src.mkdir(exist_ok=True)
            index = synthetic_sources(src, args.n, args.source_size, args.format)
            what = f"synthetic {args.format} {args.source_size}x{args.source_size} ({len(index)} images)"
        n = len(index)

        t0 = time.perf_counter()
        for p in index["path"]:
            resize_square(read_image(p), args.size)
        decode = rate(n, time.perf_counter() - t0)

        cache_dir = work / f"cache_{time.time_ns()}"
        t0 = time.perf_counter()
        prepare(index, cache_dir, size=args.size)
        build = rate(n, time.perf_counter() - t0)

        reader = CacheReader(cache_dir)
        rng = np.random.default_rng(0)
        reads = max(2000, n)
        order = rng.integers(0, len(reader), size=reads)
        reader[0]  # open the memory map
        t0 = time.perf_counter()
        for i in order:
            reader[int(i)]
        single = rate(reads, time.perf_counter() - t0)

        n_batches = max(30, reads // args.batch)
        batches = [rng.integers(0, len(reader), size=args.batch) for _ in range(n_batches)]
        t0 = time.perf_counter()
        for rows in batches:
            reader.batch(rows)
        batched = rate(n_batches * args.batch, time.perf_counter() - t0)

    results = {"decode": decode, "prepare": build, "cache_single": single, "cache_batch": batched}
    print(f"source: {what}; target {args.size}x{args.size}")
    print(f"decode from source + resize : {decode:10.1f} images/s")
    print(f"prepare cache               : {build:10.1f} images/s")
    print(f"cache read, single random   : {single:10.1f} images/s")
    print(f"cache read, batches of {args.batch:<4} : {batched:10.1f} images/s")
    print(f"speed-up (batch vs decode)  : {batched / decode:10.1f}x")
    return results


if __name__ == "__main__":
    main()
