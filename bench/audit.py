"""Leakage audit: images and patients shared between pre-training, fine-tuning and evaluation.

For every experiment of a plan we rebuild the exact image sets its stages use (same
site adapters, splits, pre-training subset and few-label subset as the stage
runners) and intersect them by (site, image id) and (site, patient id). Overlap
between pre-training and evaluation is reported (the Krones paper pre-trains on a
random 100k of all NIH images, which includes NIH test); overlap between fine-tuning
and evaluation patients is refused unless the experiment sets `allow_leakage: true`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.data.index import load_index
from bench.data.labels import resolve_classes
from bench.data.subsets import finetune_sets, pretrain_subset
from bench.plan import Plan, resolve_site_root


class LeakageError(Exception):
    pass


def _load(cache: dict[Any, pd.DataFrame], matrix: Any, site: str, options: dict[str, Any], splits: tuple[str, ...]) -> pd.DataFrame:
    key = (site, repr(sorted(options.items())), splits)
    if key not in cache:
        cache[key] = load_index(site, resolve_site_root(matrix, site), options, list(splits))[["image_id", "patient_id", "split"]]
    return cache[key]


def audit_plan(plan: Plan) -> pd.DataFrame:
    """One row per (experiment, pair of roles, evaluation column) with shared image/patient counts."""
    m = plan.matrix
    cache: dict[Any, pd.DataFrame] = {}
    rows: list[dict[str, Any]] = []
    for e in m.experiments:
        sets: dict[str, tuple[str, pd.DataFrame]] = {}
        if e.pretrain.method != "none" and e.pretrain.dataset:
            idx = _load(cache, m, e.pretrain.dataset, e.pretrain.site_options, tuple(e.pretrain.splits))
            sets["pretrain"] = (e.pretrain.dataset, pretrain_subset(idx, e.pretrain.subset))
        # few-label subsets differ per seed; their union is what any seed may have seen
        f = e.finetune.model_dump()
        classes = list(resolve_classes(e.finetune.classes, e.finetune.dataset))
        root = resolve_site_root(m, e.finetune.dataset)
        parts = [pd.concat(finetune_sets(e.finetune.dataset, root, f, classes, s)) for s in e.finetune.seeds]
        sets["finetune"] = (e.finetune.dataset, pd.concat(parts).drop_duplicates("image_id"))
        for t in e.evaluate:
            ev = _load(cache, m, t.site, t.site_options, (t.split,))
            for role in ("pretrain", "finetune"):
                if role not in sets:
                    continue
                site, a = sets[role]
                shared_img = shared_pat = 0
                if site == t.site:
                    shared_img = len(set(a["image_id"].astype(str)) & set(ev["image_id"].astype(str)))
                    shared_pat = len(set(a["patient_id"].astype(str)) & set(ev["patient_id"].astype(str)))
                rows.append(
                    {
                        "experiment": e.id,
                        "pair": f"{role}-evaluate",
                        "column": t.column,
                        "a": f"{site}:{'+'.join(e.pretrain.splits) if role == 'pretrain' else 'train+val'}",
                        "b": f"{t.site}:{t.split}",
                        "a_images": len(a),
                        "b_images": len(ev),
                        "shared_images": shared_img,
                        "shared_patients": shared_pat,
                        "allowed": bool(e.allow_leakage) or role == "pretrain",
                    }
                )
        if "pretrain" in sets:
            (ps, pa), (fs, fa) = sets["pretrain"], sets["finetune"]
            same = ps == fs
            rows.append(
                {
                    "experiment": e.id,
                    "pair": "pretrain-finetune",
                    "column": "",
                    "a": f"{ps}:{'+'.join(e.pretrain.splits)}",
                    "b": f"{fs}:train+val",
                    "a_images": len(pa),
                    "b_images": len(fa),
                    "shared_images": len(set(pa["image_id"].astype(str)) & set(fa["image_id"].astype(str))) if same else 0,
                    "shared_patients": len(set(pa["patient_id"].astype(str)) & set(fa["patient_id"].astype(str))) if same else 0,
                    "allowed": True,
                }
            )
    return pd.DataFrame(rows)


def check_leakage(report: pd.DataFrame, matrix_path: Any) -> None:
    """Refuse fine-tune/evaluation patient overlap that the matrix does not allow explicitly."""
    if report.empty:
        return
    bad = report[(report["pair"] == "finetune-evaluate") & (report["shared_patients"] > 0) & ~report["allowed"]]
    if not bad.empty:
        lines = "; ".join(
            f"experiment {r.experiment} column {r.column!r}: {r.shared_patients} patients / {r.shared_images} images shared between {r.a} and {r.b}"
            for r in bad.itertuples()
        )
        raise LeakageError(
            f"{matrix_path}: fine-tuning and evaluation share patients ({lines}). "
            "Use a patient-disjoint split, or set `allow_leakage: true` on the experiment to accept it knowingly."
        )


def format_audit(report: pd.DataFrame) -> str:
    if report.empty:
        return "no image sets to audit"
    cols = ["experiment", "pair", "column", "a", "b", "a_images", "b_images", "shared_images", "shared_patients"]
    return report[cols].to_string(index=False)
