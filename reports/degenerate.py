"""Degenerate table cells: a score at chance within noise, or no spread at all over different seeds.

Why: a linear probe that predicts one class for every image scores balanced top-1
exactly 1/k in every seed, and a table prints "0.2500 (0.0000)" as if it were a
result. A reader cannot tell a broken stage from a hard task, so such cells get a
double dagger, a footnote, a `degenerate` column in the CSV, and `bench run` warns
naming the stages (`degenerate_cells`).

Rules, per (experiment, report column) cell, on the per-seed values of its headline metric:

* **at chance**: |mean over seeds - chance| <= `z` (default 2) standard errors of a
  *random scorer* on that column's labels (one run; seeds share the images, so
  averaging seeds does not shrink this noise).
  - Multilabel (class-mean AUC, chance 0.5): a random score's AUC for a class with
    n1 positives and n0 negatives has variance (n1 + n0 + 1) / (12 n1 n0) (the
    Mann-Whitney null); the class mean over C classes with both labels present has
    SE = sqrt(sum of those variances) / C (classes taken as independent).
  - Multiclass (balanced top-1, chance 1/k): a uniform random guess has recall
    Binomial(n_c, 1/k) / n_c per class, so SE = sqrt(sum_c (1/k)(1 - 1/k) / n_c) / k.
* **sd exactly 0**: at least two different seeds and every seed's value identical
  (the sample sd is exactly 0): the seeds did not change the outcome, which for a
  trained model means the seed is not reaching the stage or the model is constant.
  A perfect score (1.0) in every seed is not flagged: there is nothing left to vary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from reports.manifest import ordered


@dataclass(frozen=True)
class DegenerateCell:
    """One flagged cell. `reason` is a sentence for people; `kind` is `chance` or `zero_sd`.

    `stage_keys` are the evaluate stages behind the cell (one per seed) and
    `finetune_keys` the fine-tune stages, when the manifest has them (`bench` does).
    """

    experiment: object
    column: str
    kind: str
    reason: str
    metric: str
    value: float
    chance: float
    stage_keys: tuple[str, ...]
    finetune_keys: tuple[str, ...] = ()


def chance_se(task: str, n_pos: np.ndarray, n_neg: np.ndarray) -> tuple[float, float]:
    """(chance level, standard error of a random scorer) of the headline metric of one run."""
    n_pos = np.asarray(n_pos, dtype=np.float64)
    n_neg = np.asarray(n_neg, dtype=np.float64)
    if task == "multiclass":
        k = n_pos.size
        counts = n_pos[n_pos > 0]
        p = 1.0 / k
        return p, float(np.sqrt(np.sum(p * (1 - p) / counts)) / max(counts.size, 1))
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return 0.5, float("nan")
    var = (n_pos[ok] + n_neg[ok] + 1.0) / (12.0 * n_pos[ok] * n_neg[ok])
    return 0.5, float(np.sqrt(var.sum()) / ok.sum())


def find_degenerate(runs: pd.DataFrame, *, z: float = 2.0) -> list[DegenerateCell]:
    """Degenerate cells of `reports.aggregate.run_metrics` output (no file is read)."""
    out: list[DegenerateCell] = []
    for exp in ordered(runs["experiment"]):
        for col in ordered(runs["column"]):
            g = runs[(runs["experiment"] == exp) & (runs["column"] == col)]
            if g.empty:
                continue
            task = str(g["task"].iloc[0])
            metric = "balanced_top1" if task == "multiclass" else "mean_auc"
            vals = g[metric].to_numpy(dtype=np.float64)
            ok = ~np.isnan(vals)
            if not ok.any():
                continue
            mean = float(vals[ok].mean())
            keys = tuple(str(k) for k in g["stage_key"])
            ft = tuple(str(k) for k in g["finetune_key"]) if "finetune_key" in g.columns else ()
            first = g.iloc[0]
            chance, se = chance_se(task, first["n_pos"], first["n_neg"])
            name = "balanced top-1" if task == "multiclass" else "mean AUC"
            if not np.isnan(se) and abs(mean - chance) <= z * se:
                out.append(
                    DegenerateCell(
                        exp, str(col), "chance",
                        f"{name} {mean:.4f} is within {z:g} SE ({se:.4f}) of chance ({chance:.4f})",
                        metric, mean, chance, keys, ft,
                    )
                )
            seeds = g.loc[ok, "seed"].tolist()
            if len(set(map(str, seeds))) >= 2 and float(np.ptp(vals[ok])) == 0.0 and mean < 1.0:
                out.append(
                    DegenerateCell(
                        exp, str(col), "zero_sd",
                        f"{name} is exactly {mean:.4f} in every seed ({', '.join(map(str, seeds))}): sd 0",
                        metric, mean, chance, keys, ft,
                    )
                )
    return out


def degenerate_cells(manifest: pd.DataFrame, *, z: float = 2.0) -> list[DegenerateCell]:
    """Degenerate cells of a report manifest (reads its predictions files).

    This is what `bench run` calls after the evaluations to warn, naming
    `cell.stage_keys` / `cell.finetune_keys`; `build_reports` marks the same cells.
    """
    from reports.aggregate import run_metrics

    return find_degenerate(run_metrics(manifest), z=z)


def note(cells: Sequence[DegenerateCell], z: float = 2.0) -> str:
    """The footnote explaining the double dagger in a table."""
    kinds = {c.kind for c in cells}
    parts = []
    if "chance" in kinds:
        parts.append(f"at chance within noise (score within {z:g} standard errors of a random scorer of chance level)")
    if "zero_sd" in kinds:
        parts.append("no spread over different seeds (sd exactly 0)")
    return (
        "‡ degenerate: " + " or ".join(parts) + "; the stage may be broken rather than the task hard "
        "(see degenerate_cells.csv / index.md for the stages)."
    )
