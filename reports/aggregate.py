"""From a manifest to numbers: per-run metrics, then mean and sd over seeds.

Conventions (the Krones tables):

* Per manifest row (one run on one report column) the headline number is the
  class-mean AUC over the row's `classes` (classes with a single label value are
  skipped, as `reports.metrics.mean_auc` does). The per-class AUCs come from
  `reports.statistics.class_auc_influence` (one sort per class, equal to
  scikit-learn's `roc_auc_score` to 1e-12, tested), which also yields the per-image
  influence values the significance tests need, so each file is read once.
  Multiclass rows get top-1 and balanced top-1 accuracy.
* Per (experiment, column): `mean` = mean over seeds; `sd` = **sample standard
  deviation (ddof=1) of the per-seed values across seeds** (NaN with one seed).
  This is training (seed) variance only; image-level uncertainty is in
  `reports.statistics`.
* `n` = number of images evaluated (rows of the predictions file); the manifest's
  own `n` is used for display when given.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from reports.manifest import check_manifest, ordered
from reports.multiclass import balanced_top1_accuracy, top1_accuracy
from reports.predictions import Predictions, load_predictions
from reports.statistics import class_auc_influence

Loader = Callable[[str, tuple[str, ...]], Predictions]


def run_metrics(manifest: pd.DataFrame, loader: Loader | None = None) -> pd.DataFrame:
    """One row per manifest row with its metrics added.

    Added columns: `n_images` (int), `auc` (np.ndarray (C,), per class, NaN where
    undefined), `mean_auc` (float), `influence` (np.ndarray (N,), per-image
    influence of the class-mean AUC, images sorted by id), `labels_key` (digest of
    image ids and labels: equal keys = same evaluation set), and for
    `task == multiclass` rows `top1` and `balanced_top1` (NaN for multilabel rows);
    `n_pos` / `n_neg` (np.ndarray (C,), images labelled 1 / 0 per class: the chance-level
    noise of `reports.degenerate`).
    """
    m = check_manifest(manifest)
    load = loader or load_predictions
    n_images, aucs, means, top1, btop1, infl, keys, n_pos, n_neg = [], [], [], [], [], [], [], [], []
    for row in m.itertuples(index=False):
        pred = load(row.predictions, row.classes)
        per, psi = class_auc_influence(pred.y_true, pred.y_score)
        infl.append(psi)
        digest = hashlib.sha1(np.ascontiguousarray(pred.y_true).tobytes())
        digest.update("\0".join(map(str, pred.image_ids)).encode())
        keys.append(digest.hexdigest())
        n_images.append(pred.n)
        n_pos.append((pred.y_true == 1).sum(axis=0).astype(np.int64))
        n_neg.append((pred.y_true == 0).sum(axis=0).astype(np.int64))
        aucs.append(per)
        means.append(float(np.nanmean(per)) if np.any(~np.isnan(per)) else float("nan"))
        if row.task == "multiclass":
            top1.append(top1_accuracy(pred.y_true, pred.y_score))
            btop1.append(balanced_top1_accuracy(pred.y_true, pred.y_score))
        else:
            top1.append(float("nan"))
            btop1.append(float("nan"))
    out = m.copy()
    out["n_images"] = n_images
    out["auc"] = aucs
    out["mean_auc"] = means
    out["top1"] = top1
    out["balanced_top1"] = btop1
    out["influence"] = infl
    out["labels_key"] = keys
    out["n_pos"] = n_pos
    out["n_neg"] = n_neg
    return out


def _mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    sd = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    return float(v.mean()), sd, int(v.size)


def summarise(runs: pd.DataFrame, metric: str = "mean_auc") -> pd.DataFrame:
    """Mean and sample sd (ddof=1) over seeds per (experiment, column).

    Returns columns `experiment, column, mean, sd, n_seeds, n_images, seeds,
    run_ids, stage_keys` in manifest order (experiments, then columns).
    """
    rows = []
    for exp in ordered(runs["experiment"]):
        for col in ordered(runs["column"]):
            g = runs[(runs["experiment"] == exp) & (runs["column"] == col)]
            if g.empty:
                continue
            mean, sd, k = _mean_sd(g[metric])
            rows.append(
                {
                    "experiment": exp,
                    "column": col,
                    "mean": mean,
                    "sd": sd,
                    "n_seeds": k,
                    "n_images": int(g["n_images"].max()),
                    "seeds": g["seed"].tolist(),
                    "run_ids": g["run_id"].tolist(),
                    "stage_keys": g["stage_key"].tolist(),
                }
            )
    return pd.DataFrame(rows)


def summarise_per_class(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per-class AUC mean and sample sd (ddof=1) over seeds, for one report column.

    Returns long form: `experiment, class, mean, sd, n_seeds` (Table 3, Figure 2a).
    The sd is over seeds of that class's AUC (the Krones Table 3 caption says
    "sd of the class means", copied from Table 2; per class there is nothing to
    average, so the seed sd of the per-class AUC is what can be reported).
    """
    g = runs[runs["column"] == column]
    rows = []
    for exp in ordered(g["experiment"]):
        e = g[g["experiment"] == exp]
        classes = e["classes"].iloc[0]
        stack = np.vstack(e["auc"].tolist())  # (seeds, C)
        for j, cls in enumerate(classes):
            mean, sd, k = _mean_sd(stack[:, j])
            rows.append({"experiment": exp, "class": cls, "mean": mean, "sd": sd, "n_seeds": k})
    return pd.DataFrame(rows)


def best_seeds(runs: pd.DataFrame, column: str, metric: str = "mean_auc") -> dict[object, object]:
    """Best seed per experiment on `column` by `metric` (higher is better).

    Krones Tables 7-8 report "the best performing model seed from each experiment,
    based on the model's AUC". Ties go to the seed listed first in the manifest.
    """
    g = runs[runs["column"] == column]
    out: dict[object, object] = {}
    for exp in ordered(g["experiment"]):
        e = g[g["experiment"] == exp]
        vals = e[metric].to_numpy(dtype=np.float64)
        if np.all(np.isnan(vals)):
            continue
        out[exp] = e["seed"].iloc[int(np.nanargmax(vals))]
    return out
