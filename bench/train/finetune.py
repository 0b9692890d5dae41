"""Fine-tune stage: multi-label BCE on a site's train split, model selection on its val split.

Model selection keeps the weights of the epoch with the best mean validation AUC
(classes with both labels present), as the papers do; `model.pt` holds those weights
plus the class order, which the evaluate stage reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.data.labels import label_set
from bench.train.data import ImageBatches, load_index, source_kwargs
from bench.train.loop import OptimCfg, default_param_groups, fit
from bench.train.pretrain import masked_bce, resolve_init

if TYPE_CHECKING:
    from bench.execute import RunContext
    from bench.plan import Stage
    from bench.store import Store
    from bench.tracking import StageLogger


@torch.no_grad()
def predict(model: torch.nn.Module, batches: ImageBatches) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities (N, C) in index order, and the rows that decoded (for skipped images)."""
    model.eval()
    probs, rows = [], []
    for _, kept, x, _ in batches.epoch_batches(0):
        probs.append(torch.sigmoid(model(x)).float().numpy())
        rows.append(kept)
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(rows)


def few_label_subset(index: Any, subset: float | int | None, seed: int) -> Any:
    """Few-label regime: a fraction (< 1) or a count of training images, drawn by patient."""
    if subset is None:
        return index
    patients = index["patient_id"].astype(str).unique()
    rng = np.random.default_rng([seed, 7919])
    rng.shuffle(patients)
    target = int(round(subset * len(index))) if subset < 1 else int(subset)
    counts = index.groupby(index["patient_id"].astype(str)).size()
    chosen, total = [], 0
    for pid in patients:
        if total >= target:
            break
        chosen.append(pid)
        total += int(counts[pid])
    return index[index["patient_id"].astype(str).isin(chosen)].reset_index(drop=True)


def run_finetune(stage: "Stage", store: "Store", logger: "StageLogger", ctx: "RunContext") -> tuple[list[str], dict[str, Any]]:
    import backbones
    from reports.metrics import mean_auc

    cfg = stage.config
    f = cfg["finetune"]
    seed = int(cfg["seed"])
    site = f["dataset"]
    classes = list(label_set(f["classes"]))
    train = few_label_subset(load_index(site, stage.paths[site], f["site_options"], ["train"]), f["label_subset"], seed)
    val = load_index(site, stage.paths[site], f["site_options"], ["val"])
    logger.text(f"fine-tuning on {site}: {len(train)} train / {len(val)} val images, {len(classes)} classes, seed {seed}")

    if stage.upstream:
        init = str(store.path(stage.upstream[0], "encoder.pt"))
    else:
        init = resolve_init(cfg["init"])
    torch.manual_seed(seed)
    model = backbones.create(
        cfg["backbone"], init=init, in_chans=cfg["in_chans"], num_classes=len(classes), img_size=cfg["image_size"]
    )
    if f["mode"] == "linear_probe":
        head = {id(p) for p in model.get_classifier().parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head)

    common = dict(
        image_size=cfg["image_size"],
        in_chans=cfg["in_chans"],
        classes=classes,
        seed=seed,
        policy=ctx.image_policy,
        **source_kwargs(site, f["site_options"], cfg["image_size"], ctx.cache_root),
    )
    if common["cache"] is not None:
        logger.text(f"reading pixels from the prepared cache {common['cache'].root}")
    train_b = ImageBatches(train, batch_size=f["batch_size"], drop_last=True, **common)
    val_b = ImageBatches(val, batch_size=max(f["batch_size"], 64), shuffle=False, **common)
    best_path = store.path(stage.key, "best.tmp.pt")
    state: dict[str, Any] = {"best_auc": -1.0, "best_epoch": -1, "bad_epochs": 0}

    def epoch_end(epoch: int) -> dict[str, float]:
        probs, rows = predict(model, val_b)
        auc = float(mean_auc(val_b.targets[rows], probs))
        if auc > state["best_auc"]:
            state.update(best_auc=auc, best_epoch=epoch, bad_epochs=0)
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, best_path)
        else:
            state["bad_epochs"] += 1
        return {"val_mean_auc": auc, "best_val_mean_auc": state["best_auc"]}

    def step_fn(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from bench.train.data import augment_batch

        assert y is not None
        if f["augment"]:
            x = augment_batch(x, gen)
        return masked_bce(model(x), y), {}

    optim = OptimCfg(
        epochs=f["epochs"],
        lr=f["lr"],
        min_lr=f["min_lr"],
        weight_decay=f["weight_decay"],
        warmup_epochs=f["warmup_epochs"],
        optimizer=f["optimizer"],
    )
    fit(
        model=model,
        groups=default_param_groups(model, f["weight_decay"]),
        batches=train_b,
        step_fn=step_fn,
        cfg=optim,
        seed=seed,
        checkpoint=store.path(stage.key, "checkpoint.pt"),
        logger=logger,
        state=state,
        epoch_end=epoch_end,
        progress=ctx.progress,
        desc=f"finetune seed {seed}",
    )
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    with store.write_output(stage.key, "model.pt") as tmp:
        torch.save({"state_dict": best, "classes": classes, "backbone": cfg["backbone"]}, tmp)
    best_path.unlink()
    bad = len(train_b.bad) + len(val_b.bad)
    if bad:
        logger.text(f"skipped {bad} unreadable images: {sorted({**train_b.bad.paths, **val_b.bad.paths})}")
    return ["model.pt"], {"best_val_mean_auc": state["best_auc"], "best_epoch": state["best_epoch"], "bad_images": bad}
