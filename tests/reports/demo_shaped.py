"""A synthetic report manifest with the shape of `make demo`'s (matrix/demo.yaml), built in a second.

Same experiments, seeds, report columns, class sets, manifest keys and display
values as `bench.runner.build_manifest` writes for the demo, with predictions drawn
from known signal strengths, so table layout (pdflatex widths), figure legends and
degenerate-cell flags can be checked without training anything. Two cells are
degenerate on purpose, as observed in the real demo (issue 16): P.1's probe predicts
one class for every image (balanced top-1 exactly 1/4 in both seeds) and 3.5's two
seeds give identical CheXpert predictions (sd exactly 0).

Run as a script to build the reports into a folder:
`python tests/reports/demo_shaped.py OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

NIH14 = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
HARMONISED5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion"]
COLUMNS = [  # column, site, classes, location, n images
    ("NIH 14 class avg.", "nih", NIH14, "Bethesda (USA)", 400),
    ("NIH 5 class avg.", "nih", HARMONISED5, "Bethesda (USA)", 400),
    ("VinDr test", "vindr", HARMONISED5, "Hanoi (Vietnam)", 300),
    ("Padchest", "padchest", HARMONISED5, "San Juan (Spain)", 250),
    ("CheXpert vali", "chexpert", HARMONISED5, "Stanford (USA)", 234),
]
# id, backbone, init, method, pre-training dataset, signal strength, label
EXPERIMENTS = [
    ("1.1", "ResNet-tiny (demo)", "Random", "None", "-", 0.9, "1.1: ResNet-tiny (demo), none, rand"),
    ("2.1", "ViT-tiny (demo)", "Random", "None", "-", 0.5, "2.1: ViT-tiny (demo), none, rand"),
    ("3.1", "ViT-tiny (demo)", "Random", "MAE", "ChestX-ray14", 1.1, "3.1: ViT-tiny (demo), MAE, rand, ChestX-ray14"),
    ("3.1s", "ViT-tiny (demo)", "Random", "MAE", "ChestX-ray14", 0.9, "3.1s: ViT-tiny (demo), MAE, rand, ChestX-ray14"),
    ("3.2", "ViT-tiny (demo)", "Random", "SimMIM", "ChestX-ray14", 1.2, "3.2: ViT-tiny (demo), SimMIM, rand, ChestX-ray14"),
    ("3.3", "ViT-tiny (demo)", "Random", "GMML", "ChestX-ray14", 1.25, "3.3: ViT-tiny (demo), GMML, rand, ChestX-ray14"),
    ("3.5", "ViT-tiny (demo)", "Random", "MAE", "OCT", 0.7, "3.5: ViT-tiny (demo), MAE, rand, OCT"),
    ("B.1", "ViT-tiny (demo)", "Random", "MAE", "CheXpert", 1.0, "B.1: ViT-tiny (demo), MAE, rand, CheXpert"),
]
SIZES = {"3.1": 600, "3.1s": 300, "3.2": 600, "3.3": 600, "3.5": 500, "B.1": 450}
SEEDS = (0, 1)


def _write(path: Path, y: np.ndarray, p: np.ndarray, classes: list[str], site: str, split: str) -> str:
    n = y.shape[0]
    df = pd.DataFrame(
        {"image_id": [f"{site}{i:05d}" for i in range(n)], "patient_id": [f"p{i // 2:05d}" for i in range(n)],
         "site": site, "split": split}
    )
    for j, c in enumerate(classes):
        df[f"label:{c}"] = y[:, j]
        df[f"prob:{c}"] = p[:, j]
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return str(path)


def demo_shaped_manifest(folder: Path, *, seed: int = 0) -> pd.DataFrame:
    """Write predictions under `folder` and return the manifest (rows as `build_manifest` makes them)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    labels = {}
    for col, site, classes, _, n in COLUMNS:
        prev = rng.uniform(0.08, 0.35, len(classes))
        labels[col] = (rng.random((n, len(classes))) < prev).astype(float)
    rows = []
    for exp, backbone, init, method, data, strength, label in EXPERIMENTS:
        common = {
            "task": "multilabel", "finetune_site": "nih", "label": label, "meta:Backbone": backbone,
            "meta:Initialisation": init, "meta:Pre-training": method, "meta:Pre-training dataset": data,
            "meta:Fine-tuning": "ChestX-ray14",
        }
        first: dict[str, np.ndarray] = {}
        if exp in SIZES:
            common.update(pretrain_size=SIZES[exp], series=f"{method} on {data} ({backbone})")
        for s in SEEDS:
            for col, site, classes, loc, n in COLUMNS:
                y = labels[col]
                z = strength * (2 * y - 1) + rng.normal(0.0, 1.3, y.shape) - 1.0
                p = 1.0 / (1.0 + np.exp(-z))
                if exp == "3.5" and col == "CheXpert vali":
                    p = first.setdefault(col, p)  # both seeds give the same scores: the sd-exactly-0 cell
                f = folder / f"{exp}_{s}_{col}.parquet".replace(" ", "_")
                rows.append(
                    {"experiment": exp, "seed": s, "column": col, "site": site, "split": "test", "classes": classes,
                     "predictions": _write(f, y, p, classes, site, "test"),
                     "stage_key": f"evaluate-{exp.replace('.', '')}-{s}-{site}-0123abcd", "run_id": f"{rng.integers(16**12):012x}",
                     "finetune_key": f"finetune-{exp.replace('.', '')}-{s}", "n_train": 800, "location": loc, **common}
                )
    # P.1: linear probe on OCT (multiclass), constant prediction: exactly chance
    k = ["CNV", "DME", "DRUSEN", "NORMAL"]
    y = np.eye(4)[rng.integers(0, 4, 200)]
    for s in SEEDS:
        p = np.tile([0.4, 0.2, 0.2, 0.2], (200, 1))
        f = folder / f"P.1_{s}_oct.parquet"
        rows.append(
            {"experiment": "P.1", "seed": s, "column": "OCT test (4 classes)", "site": "oct", "split": "test", "classes": k,
             "predictions": _write(f, y, p, k, "oct", "test"), "stage_key": f"evaluate-P1-{s}-oct-4567ef01",
             "run_id": f"{rng.integers(16**12):012x}", "finetune_key": f"finetune-P1-{s}", "n_train": 400,
             "location": "Kermany OCT", "task": "multiclass", "finetune_site": "oct",
             "label": "P.1: ViT-tiny (demo), MAE, rand, OCT", "meta:Backbone": "ViT-tiny (demo)",
             "meta:Initialisation": "Random", "meta:Pre-training": "MAE", "meta:Pre-training dataset": "OCT",
             "meta:Fine-tuning": "OCT"}
        )
    return pd.DataFrame(rows)


def token_frame() -> pd.DataFrame:
    """The shape of `bench.runner.token_frame` output."""
    return pd.DataFrame(
        {"strategy": ["Pad to max side (96 px)", "Resize to 64 px", "DBB (min 1 batch)"],
         "tokens_processed": [5.3e6, 2.4e6, 3.1e6], "flops": [9.1e11, 4.0e11, 5.2e11]}
    )


def build(out: Path, **kw) -> list[Path]:
    """The demo's report call (`matrix/demo.yaml` reports: CheXpert vali, compat)."""
    from reports import build_reports

    m = demo_shaped_manifest(Path(out) / "predictions")
    kw = {"reliability_column": "CheXpert vali", "compat": True, "n_boot": 200, **kw}
    return build_reports(m, Path(out) / "reports", title="Demo (synthetic, demo-shaped)", token_frame=token_frame(), **kw)


if __name__ == "__main__":
    for p in build(Path(sys.argv[1])):
        print(p)
