"""Benchmark: `build_reports` on a synthetic Table-1-sized result set.

14 experiments x 5 seeds x 6 report columns with the Krones Table-2 sizes
(NIH 14-class and 5-class avg. 25,596 images, VinDr 3,000, PadChest 1,861 with no
Edema positives, CheXpert test 38,240 with 10% unknown labels, CheXpert vali 234),
i.e. 420 prediction files. Predictions are written first (not timed); then one
`build_reports` call is timed with the reliability analysis on CheXpert vali,
Krones-compatible extras, figures and the image-level statistics (stratified paired
bootstrap with 2,000 replicates on columns up to 1,000 images, DeLong-type normal
approximation above).

The files are written by a child process, so the parent's peak RSS is that of the
build (plus imports). Prints wall time, CPU time (the machine may be shared: CPU
time is the better figure for the code's own cost) and peak RSS.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report_aggregate.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.labels import HARMONISED5, NIH14
from reports.build import build_reports

COLUMNS: tuple[tuple[str, int, tuple[str, ...], str], ...] = (
    ("NIH 14 class avg.", 25_596, NIH14, "Bethesda (USA)"),
    ("NIH 5 class avg.", 25_596, HARMONISED5, "Bethesda (USA)"),
    ("VinDr test", 3_000, HARMONISED5, "Hanoi (Vietnam)"),
    ("Padchest", 1_861, HARMONISED5, "San Juan (Spain)"),
    ("CheXpert test", 38_240, HARMONISED5, "Stanford (USA)"),
    ("CheXpert vali", 234, HARMONISED5, "Stanford (USA)"),
)
EXPERIMENTS = ("1.1", "1.2 (b)", "2.1", "2.2 (b)", "2.3", "2.4", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7", "3.8")
SEEDS = (0, 11, 21, 42, 100)


def _labels(rng: np.random.Generator, name: str, n: int, classes: tuple[str, ...]) -> np.ndarray:
    prev = rng.uniform(0.03, 0.35, size=len(classes))
    y = (rng.random((n, len(classes))) < prev).astype(np.float32)
    if name == "Padchest":
        y[:, classes.index("Edema")] = 0.0  # no Edema cases: that class has no AUC
    if name == "CheXpert test":
        y[rng.random(y.shape) < 0.1] = np.nan  # unknown labels
    return y


def write_result_set(root: Path, seed: int = 0) -> pd.DataFrame:
    """Write the 420 prediction files and return the report manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for col, n, classes, location in COLUMNS:
        y = _labels(rng, col, n, classes)
        ids = pd.Series([f"{col[:4]}{i:06d}" for i in range(n)])
        frame_ids = pd.DataFrame({"image_id": ids, "patient_id": ids, "site": col, "split": "test"})
        for e_idx, exp in enumerate(EXPERIMENTS):
            signal = 0.6 + 0.08 * e_idx
            for s in SEEDS:
                logits = signal * np.nan_to_num(y, nan=0.0) * 2.0 + rng.normal(size=y.shape).astype(np.float32) - 1.5
                prob = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
                df = frame_ids.copy()
                for j, c in enumerate(classes):
                    df[f"label:{c}"] = y[:, j]
                    df[f"prob:{c}"] = prob[:, j]
                path = root / f"{col.replace(' ', '_').replace('.', '')}__{exp.replace(' ', '')}__{s}.parquet"
                df.to_parquet(path, index=False)
                rows.append(
                    {
                        "experiment": exp,
                        "seed": s,
                        "column": col,
                        "site": col,
                        "split": "test",
                        "classes": list(classes),
                        "predictions": str(path),
                        "stage_key": f"evaluate/{exp}/{s}/{col}",
                        "run_id": f"{e_idx:02d}{s:03d}{len(rows):04d}",
                        "n": n,
                        "location": location,
                    }
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="write predictions and reports here and keep them")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--write-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_only is not None:  # child process: write files + manifest, exit
        m = write_result_set(args.write_only)
        m["classes"] = [json.dumps(c) for c in m["classes"]]
        m.to_parquet(args.write_only / "manifest.parquet", index=False)
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="report_bench_"))
    try:
        preds = root / "preds"
        preds.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write-only", str(preds)], check=True)
        t_write = time.perf_counter() - t0
        manifest = pd.read_parquet(preds / "manifest.parquet")
        manifest["classes"] = [json.loads(c) for c in manifest["classes"]]
        w0, c0 = time.perf_counter(), time.process_time()
        paths = build_reports(
            manifest,
            root / "reports",
            title="Benchmark: Table-1-sized synthetic result set",
            reliability_column="CheXpert vali",
            compat=True,
            n_boot=args.n_boot,
        )
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"prediction files: {len(manifest)} (written in {t_write:.1f} s by a child process, not timed)")
        print(f"outputs written: {len(paths)}")
        print(f"build_reports: wall {wall:.1f} s, CPU {cpu:.1f} s (n_boot={args.n_boot})")
        print(f"peak RSS of the building process: {rss_mib:.0f} MiB")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
