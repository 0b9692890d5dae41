"""Fine-tune stage: multi-label BCE on a site's train split, model selection on its val split.

Model selection keeps the weights of the epoch with the best validation score (mean AUC
over classes with both labels present, or balanced top-1 accuracy for multi-class
tasks), as the papers do; `model.pt` holds those weights plus the class order and the
head's structure, which the evaluate stage reads.

Linear probing (`mode: linear_probe`) trains a `LinearProbe`: the encoder frozen in eval
mode, its tokens aggregated (`pool`: mean of patch tokens, CLS token, or the flattened
patch tokens, the pilot study's three variants), standardised by a BatchNorm without
affine parameters, then one linear layer. The standardisation is not cosmetic: frozen
self-supervised features (MAE's in particular) share a large common component, so the
part that differs between images is a few percent of the feature scale; a linear layer
fed raw features then sees near-constant inputs, learns only the class prior in a short
schedule and predicts the majority class for every image (balanced accuracy = chance).
MAE's linear-probe recipe (He et al. 2022, appendix A.2) adds the same BatchNorm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bench.data.labels import resolve_classes
from bench.data.sites import DataError
from bench.data.batches import ImageBatches
from bench.data.sources import source_kwargs
from bench.data.subsets import finetune_sets
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
    """timm `global_pool` for ViT heads: `avg` (mean of patch tokens, the MAE recipe) or `token` (CLS).

    `flatten` keeps timm's default pooling (and so the encoder's final norm): the probe
    reads the normed token sequence itself, see `LinearProbe`.
    """
    pool = f.get("pool", "default")
    return {} if pool in ("default", "flatten") else {"global_pool": pool}


class LinearProbe(nn.Module):
    """Frozen encoder -> aggregated features -> BatchNorm (no affine) -> linear layer.

    `pool` names the aggregation: `default` (the backbone's own pooled features), `avg`
    (mean of the patch tokens), `token` (the CLS token) or `flatten` (all patch tokens of
    the normed sequence, concatenated; for CNNs the whole feature map). The encoder never
    trains: its parameters are frozen, its forward runs without autograd, and `train()`
    keeps it in eval mode so that dropout or BatchNorm statistics inside it cannot drift
    either. Why the BatchNorm: see the module docstring.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, pool: str, in_chans: int, img_size: int) -> None:
        super().__init__()
        if pool not in ("default", "avg", "token", "flatten"):
            raise ValueError(f"linear probe pool {pool!r} is not one of default, avg, token, flatten")
        self.encoder = encoder.requires_grad_(False).eval()
        self.pool = pool
        with torch.no_grad():
            dim = self.features(torch.zeros(1, in_chans, img_size, img_size)).shape[1]
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) frozen features of a batch, before standardisation."""
        with torch.no_grad():
            f = self.encoder.forward_features(x)
            if self.pool != "flatten":
                return self.encoder.forward_head(f, pre_logits=True).flatten(1)
            if f.ndim == 3:  # ViT token sequence (B, prefix + L, D): patch tokens only
                f = f[:, int(getattr(self.encoder, "num_prefix_tokens", 0)) :]
            return f.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).float()))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.encoder.eval()
        return self

    def get_classifier(self) -> nn.Module:
        return self.head


def build_model(
    backbone: str, *, init: str, in_chans: int, num_classes: int, img_size: int, pool: str = "default", mode: str = "finetune"
) -> nn.Module:
    """The network a fine-tune stage trains and its evaluate stages reload (same structure both times)."""
    import backbones

    if mode == "linear_probe":
        encoder = backbones.create(backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, **pool_kwargs({"pool": pool}))
        return LinearProbe(encoder, num_classes, pool, in_chans, img_size)
    if mode != "finetune":
        raise ValueError(f"fine-tune mode {mode!r} is not one of finetune, linear_probe")
    if pool == "flatten":
        raise ValueError("pool 'flatten' is a linear-probe aggregation; full fine-tuning uses default, avg or token")
    return backbones.create(backbone, init=init, in_chans=in_chans, num_classes=num_classes, img_size=img_size, **pool_kwargs({"pool": pool}))


def positive_weights(y: np.ndarray) -> np.ndarray:
    """Per-class weight of a positive label from the training split's prevalence (`loss: weighted_bce`).

    w_c = N_neg,c / N_pos,c = 1 / p_c - 1, with p_c = N_pos,c / (N_pos,c + N_neg,c) the prevalence
    of class c among its known (non-NaN) training labels; negatives keep weight 1. Positives are
    weighted by their inverse frequency relative to the negatives, as the DINOv2-initialisation
    study does, so that both labels of a class contribute equally to the loss in total: a rare
    finding is not learnt as "always absent". A class whose known labels are all one value (or
    none) gets w_c = 1, since there is no imbalance to correct that the data can show.
    """
    y = np.asarray(y, dtype=np.float64)
    pos = np.sum(y == 1.0, axis=0).astype(np.float64)
    neg = np.sum(y == 0.0, axis=0).astype(np.float64)
    w = np.ones(y.shape[1])
    ok = (pos > 0) & (neg > 0)
    w[ok] = neg[ok] / pos[ok]
    return w


def weighted_masked_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean over the known labels (NaN = unknown, masked as in `masked_bce`) of the class-weighted BCE

    -[w_c y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], w_c from `positive_weights`. With all
    w_c = 1 it equals `masked_bce`.
    """
    known = ~torch.isnan(y)
    if not known.any():
        return logits.sum() * 0.0
    per = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(y, nan=0.0), pos_weight=pos_weight.to(logits.device, logits.dtype), reduction="none"
    )
    return per[known].mean()


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


def why_no_score(y: np.ndarray, probs: np.ndarray, multiclass: bool) -> str:
    """Why `selection_score` is NaN for these validation targets and probabilities."""
    known = ~np.isnan(y)
    if len(y) == 0:
        return "no validation image could be read (all were skipped as unreadable)"
    if probs.size and not np.isfinite(probs).all():
        return "the model's validation probabilities are not finite (NaN/inf weights or inputs)"
    if multiclass:
        if not known.any(axis=1).any():
            return "no validation image has a known class"
        return "balanced accuracy is undefined on these validation labels"
    both = [j for j in range(y.shape[1]) if (y[known[:, j], j] == 1).any() and (y[known[:, j], j] == 0).any()]
    if not both:
        return (
            "no class has both positive and negative validation images, so AUC is undefined "
            f"({len(y)} validation images, {int(known.sum())} known labels); use a larger val split or val_fraction"
        )
    return "the mean AUC over classes with both labels is undefined"


def _migrate_state(state: dict[str, Any]) -> None:
    """Checkpoints written before the rename call the best validation score `best_auc`."""
    if "best_auc" in state:
        state["best_score"] = state.pop("best_auc")


def run_finetune(stage: "Stage", store: "Store", logger: "StageLogger", env: "StageEnv") -> tuple[list[str], dict[str, Any]]:
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
    pool = f.get("pool", "default")
    model = build_model(
        cfg["backbone"], init=init, in_chans=cfg["in_chans"], num_classes=len(classes), img_size=cfg["image_size"], pool=pool, mode=f["mode"]
    )

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
    loss_fn = masked_bce
    if not multiclass and f.get("loss", "bce") == "weighted_bce":
        pos_w = torch.as_tensor(positive_weights(train_b.targets), dtype=torch.float32)
        logger.text(
            "class-weighted BCE, positive weight N_neg/N_pos of the train split per class: "
            + ", ".join(f"{c} {w:.4g}" for c, w in zip(classes, pos_w.tolist()))
        )

        def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return weighted_masked_bce(logits, y, pos_w)

    best_path = store.path(stage.key, "best.tmp.pt")
    # best_score: the best validation selection score so far (mean AUC or balanced top-1, see `metric`)
    state: dict[str, Any] = {"best_score": -1.0, "best_epoch": -1, "bad_epochs": 0, "no_score": ""}
    metric = "val_balanced_top1" if multiclass else "val_mean_auc"

    def epoch_end(epoch: int) -> dict[str, float]:
        _migrate_state(state)
        probs, rows = predict(model, val_b, multiclass)
        score = selection_score(val_b.targets[rows], probs, multiclass)
        if score != score:  # NaN: say why once, and never select this epoch
            if not state["no_score"]:
                state["no_score"] = why_no_score(val_b.targets[rows], probs, multiclass)
                logger.text(f"validation {metric} is NaN at epoch {epoch}: {state['no_score']}")
            state["bad_epochs"] += 1
        elif score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, best_path)
        else:
            state["bad_epochs"] += 1
        return {metric: score, f"best_{metric}": state["best_score"]}

    def step_fn(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from bench.data.transforms import augment_batch

        assert y is not None
        if f["augment"]:
            x = augment_batch(x, gen)
        return (cross_entropy_onehot(model(x), y) if multiclass else loss_fn(model(x), y)), {}

    optim = OptimCfg.of_section(f)
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
        checkpoint_seconds=env.checkpoint_seconds,
        should_stop=(lambda: state["bad_epochs"] >= f["patience"]) if f.get("patience") else None,
    )
    _migrate_state(state)
    if state["best_epoch"] < 0 or not best_path.exists():
        why = state.get("no_score") or "no epoch produced a finite validation score"
        msg = f"fine-tune on {site}: validation {metric} was NaN in every epoch, so there is no best model to keep: {why}"
        # undefined scores come from the data (labels, unreadable images) unless the model's outputs were not finite
        raise FloatingPointError(msg) if why.startswith("the model's") else DataError(msg)
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    saved = {"state_dict": best, "classes": classes, "backbone": cfg["backbone"], "task": f["task"], "pool": pool, "mode": f["mode"]}
    with store.write_output(stage.key, "model.pt") as tmp:
        torch.save(saved, tmp)
    best_path.unlink()
    # the kept model's validation predictions: reports choose decision thresholds on them (`reports.youden`)
    from bench.train.prediction_frame import prediction_frame

    model.load_state_dict(best)
    val_probs, val_rows = predict(model, val_b, multiclass)
    frame = prediction_frame(val.iloc[val_rows], site, "val", classes, val_b.targets[val_rows], val_probs)
    with store.write_output(stage.key, "val_predictions.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    bad = len(train_b.bad) + len(val_b.bad)
    if bad:
        logger.text(f"skipped {bad} unreadable images: {sorted({**train_b.bad.paths, **val_b.bad.paths})}")
    summary = {"best_val_score": state["best_score"], "selection_metric": metric, "best_epoch": state["best_epoch"], "bad_images": bad}
    return ["model.pt", "val_predictions.parquet"], {**summary, "train_images": len(train), "val_images": len(val)}
