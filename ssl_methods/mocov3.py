"""MoCo v3 (Chen, Xie, He 2021; facebookresearch/moco-v3) on timm ViT, ResNet or Swin.

Two BYOL-style views per image (RRC 0.08-1 + flip, jitter p 0.8, blur p 1.0 on view 1,
blur p 0.1 + solarise 0.2 on view 2). q_k = predictor(projector(encoder(x_k))); keys
k_k = momentum_projector(momentum_encoder(x_k)) without gradient. Loss
= C(q1, k2) + C(q2, k1), with C the InfoNCE of `ssl_methods.contrastive` (tau 0.2,
x 2 tau). Projector: bias-free Linear D -> 4096 -> 4096 -> 256 with BN + ReLU and a
final BN(affine=False); predictor 256 -> 4096 -> 256 likewise. The momentum network
(encoder + projector) follows theta_m <- m theta_m + (1 - m) theta_b with
m = 1 - (1 + cos(pi * progress)) / 2 * (1 - 0.99).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.augment import multiview_crop
from ssl_methods.base import SSLMethod, cosine_momentum, ema_update, parse_config
from ssl_methods.contrastive import info_nce
from ssl_methods.heads import bn_mlp
from ssl_methods.registry import register_method


@dataclass
class MoCoV3Config:
    out_dim: int = 256
    mlp_hidden: int | None = None  # None: 4096 for encoders >= 384-d, else 512
    temperature: float = 0.2
    momentum: float = 0.99
    drop_path_rate: float = 0.0
    augment: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5


@register_method("mocov3")
class MoCoV3(SSLMethod):
    name = "mocov3"
    supported_families = ("vit", "resnet", "swin")

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        c = self.cfg = parse_config(MoCoV3Config, cfg, self.name)
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=c.drop_path_rate
        )
        dim = backbones.feature_dim(self.encoder)
        hidden = c.mlp_hidden or (4096 if dim >= 384 else 512)
        self.projector = bn_mlp([dim, hidden, hidden, c.out_dim], ["relu", "relu"], bias=False)
        self.predictor = bn_mlp([c.out_dim, hidden, c.out_dim], ["relu"], bias=False)
        self.momentum_encoder = backbones.create(backbone, in_chans=in_chans, num_classes=0, img_size=img_size)
        self.momentum_encoder.load_state_dict(self.encoder.state_dict())
        self.momentum_projector = bn_mlp([dim, hidden, hidden, c.out_dim], ["relu", "relu"], bias=False)
        self.momentum_projector.load_state_dict(self.projector.state_dict())
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
        v1 = multiview_crop(images, size, scale=c.crop_scale, blur_p=1.0, hflip=c.hflip)
        v2 = multiview_crop(images, size, scale=c.crop_scale, blur_p=0.1, solarize_p=0.2, hflip=c.hflip)
        return v1, v2

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"mocov3: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        if images.shape[0] < 2:
            raise ValueError("mocov3: the contrastive loss needs a batch of at least 2 images")
        x1, x2 = self.make_views(images)
        # one pass per view, as the reference: BatchNorm statistics never mix the two views
        q1, q2 = (self.predictor(self.projector(self.encoder(x))).float() for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(self.momentum_encoder(x)).float() for x in (x1, x2))
        loss = info_nce(q1, k2, c.temperature) + info_nce(q2, k1, c.temperature)
        return loss, {"loss": float(loss.detach()), "momentum": self.momentum}
