"""MoCo v3 (Chen, Xie, He 2021; facebookresearch/moco-v3) on timm ViT, ResNet or Swin.

Two BYOL-style views per image (RRC 0.08-1 (ResNet: 0.2-1) + flip, brightness/contrast
jitter p 0.8, blur p 1.0 on view 1, blur p 0.1 + solarise 0.2 on view 2; photometric
steps on [0, 1] pixels). q_k = predictor(projector(encoder(x_k))); keys
k_k = momentum_projector(momentum_encoder(x_k)) without gradient. Loss
= C(q1, k2) + C(q2, k1), with C the InfoNCE of `ssl_methods.contrastive` (tau 0.2 for
ViT, 1.0 for ResNet, x 2 tau). ViT: projector bias-free Linear D -> 4096 -> 4096 -> 256
with BN + ReLU and a final BN(affine=False), predictor 256 -> 4096 -> 256 likewise, and
the random patch projection frozen (`--stop-grad-conv1`, every reference ViT command).
ResNet (MoCo_ResNet): projector D -> 4096 -> 256 with the final BN, predictor
256 -> 4096 -> 256 without it. The momentum network (encoder + projector) follows
theta_m <- m theta_m + (1 - m) theta_b with m = 1 - (1 + cos(pi * progress)) / 2 * (1 - 0.99),
evaluated per iteration (the reference's fractional epoch `epoch + i / iters_per_epoch`).

Runs on one device without a process group (the key all-gather is the identity).
Exports the base encoder (`convert_to_deit.py` keeps `base_encoder` minus the head).

Deviations: the reference updates the momentum encoder at the start of each forward;
here `after_step` updates it after each optimiser step, which yields the same
sequence of weights (the reference's first update is a no-op copy). The backbone is
the registered one (ViT-S with 6 heads; the reference's MoCo ViT-S has 12 heads and a
fixed sin-cos pos-embed); the projector/predictor hidden width defaults to 512 for
encoders narrower than 384-d (the CPU demo). Per-parameter weight decay follows
the reference: every parameter is decayed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.augment import multiview_crop
from ssl_methods.base import ConfigError, SSLMethod, cosine_momentum, ema_update, parse_config
from ssl_methods.contrastive import info_nce
from ssl_methods.heads import bn_mlp
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method


@dataclass
class MoCoV3Config:
    out_dim: int = 256
    mlp_hidden: int | None = None  # None: 4096 for encoders >= 384-d, else 512
    temperature: float | None = None  # None: 0.2 for ViT/Swin (CONFIG.md --moco-t=.2), 1.0 for ResNet (default)
    momentum: float = 0.99
    drop_path_rate: float = 0.0
    augment: bool = True
    crop_scale: tuple[float, float] | None = None  # None: (0.08, 1) for ViT/Swin, (0.2, 1) for ResNet
    hflip: float = 0.5
    # freeze the random patch projection (`--stop-grad-conv1`); None: on for ViT, off otherwise
    stop_grad_patch: bool | None = None


_MOCO = "facebookresearch/moco-v3"
_VIT_CMD = f"{_MOCO}:CONFIG.md ViT-Small/ViT-Base commands"
_R50_CMD = f"{_MOCO}:CONFIG.md ResNet-50 100/300-epoch commands"
_MOCO_SOURCES = {
    "optimizer": f"{_VIT_CMD} --optimizer=adamw; main_moco.py torch.optim.AdamW(model.parameters(), lr, weight_decay=wd)",
    "betas": f"{_MOCO}:main_moco.py torch.optim.AdamW(...) without betas: PyTorch default (0.9, 0.999)",
    "base_lr": f"{_VIT_CMD} --lr=1.5e-4; main_moco.py args.lr = args.lr * args.batch_size / 256",
    "min_lr": f"{_MOCO}:main_moco.py adjust_learning_rate: half-cycle cosine to 0",
    "weight_decay": f"{_VIT_CMD} --weight-decay=.1 (all parameters, constant)",
    "clip_grad": f"{_MOCO}:main_moco.py (no clipping)",
    "warmup_epochs": f"{_VIT_CMD} --epochs=300 --warmup-epochs=40",
    "lr_schedule": f"{_MOCO}:main_moco.py adjust_learning_rate(epoch + i / iters_per_epoch)",
    "temperature": f"{_VIT_CMD} --moco-t=.2; ResNet-50: main_moco.py --moco-t default 1.0",
    "momentum": f"{_MOCO}:main_moco.py --moco-m 0.99 with --moco-m-cos, per iteration (fractional epoch)",
    "out_dim": f"{_MOCO}:main_moco.py --moco-dim 256",
    "mlp_hidden": f"{_MOCO}:main_moco.py --moco-mlp-dim 4096",
    "crop_scale": f"{_MOCO}:main_moco.py --crop-min 0.08 (ViT); {_R50_CMD} --crop-min=.2",
    "stop_grad_patch": f"{_VIT_CMD} --stop-grad-conv1; vits.py patch_embed.proj requires_grad = False",
    "hflip": f"{_MOCO}:main_moco.py RandomHorizontalFlip()",
    "drop_path_rate": f"{_MOCO}:vits.py (no drop path)",
}
RECIPE = Recipe(
    method="mocov3", family="vit", optimizer="adamw", betas=(0.9, 0.999), base_lr=1.5e-4, lr_batch=256, min_lr=0.0,
    weight_decay=0.1, weight_decay_end=None, clip_grad=None, clip_mode="global", warmup_epochs=40, epochs=300,
    batch_size=4096, lr_schedule="linear warm-up from 0, then half-cosine to 0, per iteration",
    sources=_MOCO_SOURCES,
    notes=(
        "views: ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 applied as brightness/contrast 0.4 on [0, 1] pixels "
        "(saturation/hue/RandomGrayscale are the identity on grey images); blur p 1.0 / 0.1, solarise p 0 / 0.2",
        "betas: the code passes none, so AdamW's (0.9, 0.999) - not MAE's (0.9, 0.95)",
        "ViT-S: the registered timm ViT-S (6 heads, learned pos-embed); the reference's has 12 heads and a "
        "fixed sin-cos pos-embed",
        "AMP: bf16 autocast (reference: fp16 + GradScaler)",
    ),
)
RECIPE_RESNET = dataclasses.replace(
    RECIPE, family="resnet", notes=(
        "reference ResNet-50: LARS, lr 0.6 x batch/256 (100 ep; 0.3 for 300 ep), wd 1e-6, 10 warm-up epochs "
        f"({_R50_CMD}; main_moco.py defaults); the loop has no LARS, so the ViT AdamW recipe is used",
        "heads as MoCo_ResNet: 2-layer projector, predictor without final BN; temperature 1.0, crop-min 0.2",
    ),
)


@register_method("mocov3")
class MoCoV3(SSLMethod):
    name = "mocov3"
    supported_families = ("vit", "resnet", "swin")
    recipes = {"vit": RECIPE, "resnet": RECIPE_RESNET}
    config_class = MoCoV3Config

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        c = self.cfg = parse_config(MoCoV3Config, cfg, self.name)
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=c.drop_path_rate
        )
        self.family = backbones.get_spec(backbone).family
        resnet = self.family == "resnet"
        self.temperature = c.temperature if c.temperature is not None else (1.0 if resnet else 0.2)
        self.crop_scale = c.crop_scale if c.crop_scale is not None else ((0.2, 1.0) if resnet else (0.08, 1.0))
        dim = backbones.feature_dim(self.encoder)
        hidden = c.mlp_hidden or (4096 if dim >= 384 else 512)
        # MoCo_ViT: 3-layer projector, predictor ending in BN; MoCo_ResNet: 2-layer projector,
        # predictor without the final BN (moco/builder.py _build_projector_and_predictor_mlps)
        proj_dims = [dim, hidden, c.out_dim] if resnet else [dim, hidden, hidden, c.out_dim]
        proj_acts = ["relu"] * (len(proj_dims) - 2)
        self.projector = bn_mlp(proj_dims, proj_acts, bias=False)
        self.predictor = bn_mlp([c.out_dim, hidden, c.out_dim], ["relu"], bias=False, last_bn=not resnet)
        self.momentum_encoder = backbones.create(backbone, in_chans=in_chans, num_classes=0, img_size=img_size)
        self.momentum_encoder.load_state_dict(self.encoder.state_dict())
        self.momentum_projector = bn_mlp(proj_dims, proj_acts, bias=False)
        self.momentum_projector.load_state_dict(self.projector.state_dict())
        stop_grad = c.stop_grad_patch if c.stop_grad_patch is not None else self.family == "vit"
        if stop_grad:
            if self.family != "vit":
                raise ConfigError(f"mocov3: stop_grad_patch needs a ViT backbone, got {backbone!r} ({self.family})")
            # a fixed random patch projection stabilises ViT training (MoCo v3 section 4.2)
            self.encoder.patch_embed.proj.requires_grad_(False)
        for p in list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters()):
            p.requires_grad_(False)
        self.momentum = c.momentum

    def export_encoder(self) -> nn.Module:
        return self.encoder

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """MoCo v3 decays every trainable parameter (main_moco.py builds AdamW on all)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]

    def after_step(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.cfg.momentum, progress)
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)

    def make_views(self, images: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg
        if not (c.augment and self.training):
            return images, images
        size = (images.shape[2], images.shape[3])
        v1 = multiview_crop(images, size, scale=self.crop_scale, blur_p=1.0, hflip=c.hflip)
        v2 = multiview_crop(images, size, scale=self.crop_scale, blur_p=0.1, solarize_p=0.2, hflip=c.hflip)
        return v1, v2

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"mocov3: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        if images.shape[0] < 2:
            raise ValueError("mocov3: the contrastive loss needs a batch of at least 2 images")
        x1, x2 = self.make_views(images)
        # one pass per view, as the reference: BatchNorm statistics never mix the two views
        q1, q2 = (self.predictor(self.projector(self.encoder(x))).float() for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_encoder(x)).float() for x in (x1, x2))
        tau = self.temperature
        loss = info_nce(q1, k2, tau) + info_nce(q2, k1, tau)
        return loss, {"loss": float(loss.detach()), "momentum": self.momentum}
