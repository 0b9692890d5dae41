"""Evaluate stage: a fine-tuned model's probabilities on one site split -> predictions.parquet.

One row per image: `image_id, patient_id, site, split` then `label:<class>` (1/0/NaN)
and `prob:<class>` for every class the model outputs. The truth comes from the
evaluation site's own index, so classes it does not provide are NaN and the report
decides which classes a column averages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.data.batches import ImageBatches
from bench.data.index import load_index
from bench.data.sources import source_kwargs
from bench.train.finetune import build_model, predict, selection_score
from bench.train.prediction_frame import prediction_frame

if TYPE_CHECKING:
    from bench.env import StageEnv
    from bench.plan import Stage
    from bench.store import Store
    from bench.tracking import StageLogger


def run_evaluate(stage: "Stage", store: "Store", logger: "StageLogger", env: "StageEnv") -> tuple[list[str], dict[str, Any]]:
    from reports.metrics import auc_per_class

    cfg = stage.config
    ft_key = stage.upstream[0]
    saved = torch.load(store.path(ft_key, "model.pt"), map_location="cpu", weights_only=True)
    classes: list[str] = list(saved["classes"])
    # model.pt files written before linear probes had their own head carry no `mode`: plain timm models
    model = build_model(
        saved["backbone"],
        init="random",
        in_chans=cfg["in_chans"],
        num_classes=len(classes),
        img_size=cfg["image_size"],
        pool=saved.get("pool", "default"),
        mode=saved.get("mode", "finetune"),
    )
    model.load_state_dict(saved["state_dict"])
    model.to(torch.device(env.device))
    site = cfg["site"]
    index = load_index(site, stage.paths[site], cfg["site_options"], [cfg["split"]])
    batches = ImageBatches(
                index,
        image_size=cfg["image_size"],
        in_chans=cfg["in_chans"],
        classes=classes,
        batch_size=64,
        seed=0,
        shuffle=False,
        policy=env.image_policy,
        **source_kwargs(site, cfg["site_options"], cfg["image_size"], env.cache_root),
    )
    multiclass = saved.get("task", "multilabel") == "multiclass"
    probs, rows = predict(model, batches, multiclass)
    truth = batches.targets[rows]
    out = prediction_frame(index.iloc[rows], site, cfg["split"], classes, truth, probs)
    with store.write_output(stage.key, "predictions.parquet") as tmp:
        out.to_parquet(tmp, index=False)
    summary: dict[str, Any] = {"images": int(len(out)), "bad_images": len(batches.bad)}
    if multiclass:
        summary["balanced_top1"] = selection_score(truth, probs, True)
    else:
        for c, a in zip(classes, auc_per_class(truth, probs)):
            if a == a:  # not NaN
                summary[f"auc.{c}"] = float(a)
    if len(batches.bad):
        logger.text(f"skipped {len(batches.bad)} unreadable images: {sorted(batches.bad.paths)}")
    logger.text(f"evaluated {len(out)} images of {site}/{cfg['split']}")
    return ["predictions.parquet"], summary
