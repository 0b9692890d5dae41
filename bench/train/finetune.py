"""Fine-tune stage: multi-label BCE on a site's train split, model selection on its val split.

Model selection keeps the weights of the epoch with the best mean validation AUC
(classes with both labels present), as the papers do; `model.pt` holds those weights
plus the class order, which the evaluate stage reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.data.labels import resolve_classes
from bench.train.data import ImageBatches, load_index, source_kwargs
from bench.train.loop import OptimCfg, default_param_groups, fit
from bench.train.pretrain import masked_bce, resolve_init

if TYPE_CHECKING:
    from bench.env import StageEnv
    from bench.plan import Stage
    from bench.store import Store
    from bench.tracking import StageLogger


@torch.no_grad()
def predict(model: torch.nn.Module, batches: ImageBatches, multiclass: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) in index order (sigmoid, or softmax for multi-class), and the rows that decoded."""
    model.eval()
    dev = next(model.parameters()).device
    probs, rows = [], []
    for _, kept, x, _ in batches.epoch_batches(0):
        logits = model(x.to(dev)).float()
        p = torch.softmax(logits, dim=1) if multiclass else torch.sigmoid(logits)
        probs.append(p.cpu().numpy())
        rows.append(kept)
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(rows)


def pool_kwargs(f: dict[str, Any]) -> dict[str, Any]:
    """timm `global_pool` for ViT heads: `avg` (mean of patch tokens, the MAE recipe) or `token` (CLS)."""
    pool = f.get("pool", "default")
    return {} if pool == "default" else {"global_pool": pool}


def cross_entropy_onehot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for one-hot targets; rows without a known class (all NaN) are ignored."""
    known = ~torch.isnan(y).all(dim=1)
    if not known.any():
        return logits.sum() * 0.0
    target = torch.nan_to_num(y[known], nan=0.0).argmax(dim=1)
    return torch.nn.functional.cross_entropy(logits[known], target)


def selection_score(y: np.ndarray, probs: np.ndarray, multiclass: bool) -> float:
    """Validation score used to keep the best epoch: mean AUC, or balanced top-1 accuracy."""
    from reports.metrics import mean_auc

    if not multiclass:
        return float(mean_auc(y, probs))
    from sklearn.metrics import balanced_accuracy_score

    known = ~np.isnan(y).all(axis=1)
    if not known.any():
        return float("nan")
    return float(balanced_accuracy_score(np.nan_to_num(y[known]).argmax(1), probs[known].argmax(1)))


def finetune_sets(site: str, root: str, f: dict[str, Any], classes: list[str], seed: int) -> tuple[Any, Any]:
    """(train, val) images of a fine-tuning stage.

    The site's own `val` split when it has one; otherwise (e.g. Kermany OCT) a seeded,
    patient-level, label-stratified `val_fraction` of its train split, the same for every
    seed so that seeds differ only in initialisation and order. The few-label regime
    then draws whole patients from the train part.
    """
    from bench.data.splits import assign_splits, few_label_subset

    index = load_index(site, root, f["site_options"], ["train", "val"])
    if (index["split"] == "val").any():
        train, val = index[index["split"] == "train"], index[index["split"] == "val"]
    else:
        strat = [c for c in classes if c in index.columns and index[c].notna().all()]
        which = assign_splits(index, {"train": 1 - f["val_fraction"], "val": f["val_fraction"]}, seed=0, stratify=strat)
        train, val = index[which == "train"], index[which == "val"]
    train = train.reset_index(drop=True)
    if f["label_subset"] is not None:
        strat = [c for c in classes if c in train.columns and train[c].notna().all()]
        train = few_label_subset(train, f["label_subset"], seed=seed, stratify=strat).reset_index(drop=True)
    return train, val.reset_index(drop=True)


def run_finetune(stage: "Stage", store: "Store", logger: "StageLogger", env: "StageEnv") -> tuple[list[str], dict[str, Any]]:
    import backbones

    cfg = stage.config
    f = cfg["finetune"]
    seed = int(cfg["seed"])
    site = f["dataset"]
    classes = list(resolve_classes(f["classes"], site))
    multiclass = f["task"] == "multiclass"
    train, val = finetune_sets(site, stage.paths[site], f, classes, seed)
    logger.text(f"fine-tuning on {site}: {len(train)} train / {len(val)} val images, {len(classes)} classes, seed {seed}")

    if stage.upstream:
        init = str(store.path(stage.upstream[0], "encoder.pt"))
    else:
        init = resolve_init(cfg["init"])
    torch.manual_seed(seed)
    model = backbones.create(
        cfg["backbone"], init=init, in_chans=cfg["in_chans"], num_classes=len(classes), img_size=cfg["image_size"], **pool_kwargs(f)
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
        policy=env.image_policy,
        **source_kwargs(site, f["site_options"], cfg["image_size"], env.cache_root),
    )
    if common["cache"] is not None:
        logger.text(f"reading pixels from the prepared cache {common['cache'].root}")
    train_b = ImageBatches(train, batch_size=f["batch_size"], drop_last=True, **common)
    val_b = ImageBatches(val, batch_size=max(f["batch_size"], 64), shuffle=False, **common)
    best_path = store.path(stage.key, "best.tmp.pt")
    state: dict[str, Any] = {"best_auc": -1.0, "best_epoch": -1, "bad_epochs": 0}

    def epoch_end(epoch: int) -> dict[str, float]:
        probs, rows = predict(model, val_b, multiclass)
        # model selection: mean AUC (multi-label) or balanced top-1 accuracy (multi-class)
        auc = selection_score(val_b.targets[rows], probs, multiclass)
        if auc > state["best_auc"]:
            state.update(best_auc=auc, best_epoch=epoch, bad_epochs=0)
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, best_path)
        else:
            state["bad_epochs"] += 1
        name = "val_balanced_top1" if multiclass else "val_mean_auc"
        return {name: auc, f"best_{name}": state["best_auc"]}

    def step_fn(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from bench.train.data import augment_batch

        assert y is not None
        if f["augment"]:
            x = augment_batch(x, gen)
        return (cross_entropy_onehot(model(x), y) if multiclass else masked_bce(model(x), y)), {}

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
        progress=env.progress,
        desc=f"finetune seed {seed}",
        device=env.device,
        precision=f.get("precision", "auto"),
        should_stop=(lambda: state["bad_epochs"] >= f["patience"]) if f.get("patience") else None,
    )
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    with store.write_output(stage.key, "model.pt") as tmp:
        torch.save({"state_dict": best, "classes": classes, "backbone": cfg["backbone"], "task": f["task"], "pool": f.get("pool", "default")}, tmp)
    best_path.unlink()
    bad = len(train_b.bad) + len(val_b.bad)
    if bad:
        logger.text(f"skipped {bad} unreadable images: {sorted({**train_b.bad.paths, **val_b.bad.paths})}")
    summary = {"best_val_score": state["best_auc"], "best_epoch": state["best_epoch"], "bad_images": bad}
    return ["model.pt"], {**summary, "train_images": len(train), "val_images": len(val)}
