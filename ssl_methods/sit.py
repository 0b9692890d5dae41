"""SiT v2 (Atito et al.; Sara-Ahmed/SiT at 7f22e9c): GMML reconstruction + momentum-teacher
contrastive learning. (SiT v1 - rotation prediction with uncertainty weighting - is a
different algorithm and is not implemented.)

Two DINO-style global views per image (RRC 0.2-1 + flip, brightness/contrast jitter p 0.8,
blur p 1.0 on view 1, p 0.1 + solarise 0.2 on view 2; photometric steps on [0, 1] pixels). The student ViT sees group-corrupted views
(zeros over 50% of the pixels, or with probability 0.5 the pixels of a partner from the
same view over 30%); the EMA teacher sees the clean views. Student heads: CLSHead (BN MLP
D -> 4096 -> 4096 -> 256) on the cls token and RECHead on the patch tokens, both after
the final norm. Loss = C(s0, t1) + C(s1, t0) + lambda * L1(corrupted pixels), with C
the MoCo v3 InfoNCE (tau 0.2, x 2 tau). The teacher follows
theta_t <- m theta_t + (1 - m) theta_s after every step, m from 0.996 to 1 (cosine).

Export: the teacher backbone by default (`export: teacher`), DINO's convention - the
repo does not say which network to fine-tune.

Deviations: torch RNG corruption (seedable), on-device views, `in_chans`-channel
reconstruction, the momentum schedule follows the loop's progress in [0, 1], a
narrower CLSHead (512 hidden) for encoders under 384-d (the CPU demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.augment import multiview_crop
from ssl_methods.base import ConfigError, SSLMethod, cosine_momentum, ema_update, parse_config
from ssl_methods.contrastive import info_nce
from ssl_methods.corruption import gmml_corrupt, masked_l1_mean
from ssl_methods.heads import RECHead, bn_mlp
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method
from ssl_methods.vit_tokens import check_plain_vit, vit_tokens


@dataclass
class SiTConfig:
    coverage: tuple[float, float] = (0.5, 0.5)
    fill: str = "zeros"
    replace_prob: float = 0.5
    replace_coverage: tuple[float, float] = (0.3, 0.3)
    max_side_frac: float = 0.3
    align: int = 1
    out_dim: int = 256
    head_hidden: int | None = None  # None: 4096 for encoders >= 384-d, else 512
    temperature: float = 0.2
    lmbda: float = 1.0
    momentum: float = 0.996
    drop_path_rate: float = 0.1
    export: str = "teacher"
    augment: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if self.fill not in ("noise", "zeros"):
            raise ConfigError(f"sit: fill must be 'noise' or 'zeros', got {self.fill!r}")
        if self.export not in ("teacher", "student"):
            raise ConfigError(f"sit: export must be 'teacher' or 'student', got {self.export!r}")


_SIT = "Sara-Ahmed/SiT"
RECIPE = Recipe(
    method="sit", family="vit", optimizer="adamw", betas=(0.9, 0.999), base_lr=5e-4, lr_batch=256, min_lr=1e-6,
    weight_decay=0.04, weight_decay_end=0.1, clip_grad=3.0, clip_mode="per_tensor", warmup_epochs=10, epochs=800,
    batch_size=256,
    sources={
        "optimizer": f"{_SIT}:main.py torch.optim.AdamW(utils.get_params_groups(student)) (default betas)",
        "betas": f"{_SIT}:main.py torch.optim.AdamW(...): PyTorch default betas (0.9, 0.999)",
        "base_lr": f"{_SIT}:main.py --lr 0.0005; cosine_scheduler(lr * batch_size * world / 256., ...)",
        "min_lr": f"{_SIT}:main.py --min_lr 1e-6",
        "weight_decay": f"{_SIT}:main.py --weight_decay 0.04 --weight_decay_end 0.1",
        "clip_grad": f"{_SIT}:main.py --clip_grad 3.0; utils.clip_gradients (per parameter tensor)",
        "warmup_epochs": f"{_SIT}:main.py --warmup_epochs 10 --epochs 800 (README: 801, 4 GPUs x 64)",
        "lr_schedule": f"{_SIT}:utils.py cosine_scheduler",
        "coverage": f"{_SIT}:main.py --drop_perc 0.5 (U(min(0.5, p), p) = 0.5)",
        "fill": f"{_SIT}:main.py --drop_type zeros",
        "replace_prob": f"{_SIT}:main.py collate_batch -> GMML_replace_list (drop_type 'noise': 1 / 2)",
        "replace_coverage": f"{_SIT}:main.py --drop_replace 0.3",
        "max_side_frac": f"{_SIT}:datasets/datasets_utils.py GMML_drop_rand_patches max_block_sz=0.3",
        "align": f"{_SIT}:main.py --drop_align 1",
        "out_dim": f"{_SIT}:main.py --out_dim 256",
        "head_hidden": f"{_SIT}:vision_transformer.py CLSHead hidden 4096",
        "temperature": f"{_SIT}:main.py --simclr_temp 0.2",
        "lmbda": f"{_SIT}:main.py --lmbda 1 (README: ~5 for small datasets)",
        "momentum": f"{_SIT}:main.py --momentum_teacher 0.996, cosine_scheduler(m, 1, epochs, iters) per iteration",
        "drop_path_rate": f"{_SIT}:main.py --drop_path_rate 0.1 (student; teacher 0)",
        "crop_scale": f"{_SIT}:datasets/datasets_utils.py RandomResizedCrop(224, scale=(0.2, 1.))",
        "hflip": f"{_SIT}:datasets/datasets_utils.py RandomHorizontalFlip(p=0.5)",
    },
    notes=(
        "views: ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 applied as brightness/contrast 0.4 on [0, 1] pixels "
        "(saturation/hue/RandomGrayscale are the identity on grey images); blur p 1.0 / 0.1, solarise p 0 / 0.2",
        "replace partner drawn from the same view (collate_batch calls GMML_replace_list per crop)",
        "AMP: bf16 autocast (reference: fp16 + GradScaler)",
    ),
)


@register_method("sit")
class SiT(SSLMethod):
    name = "sit"
    supported_families = ("vit",)
    recipes = {"vit": RECIPE}
    config_class = SiTConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        c = self.cfg = parse_config(SiTConfig, cfg, self.name)
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=c.drop_path_rate
        )
        check_plain_vit(self.encoder, self.name)
        dim = int(self.encoder.embed_dim)
        hidden = c.head_hidden or (4096 if dim >= 384 else 512)
        self.patch = int(self.encoder.patch_embed.patch_size[0])
        self.cls_head = bn_mlp([dim, hidden, hidden, c.out_dim], ["relu", "gelu"])
        for m in self.cls_head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.rec_head = RECHead(dim, in_chans, self.patch)
        # the teacher starts as a copy of the student, without drop-path, and never gets gradients
        self.teacher = backbones.create(backbone, in_chans=in_chans, num_classes=0, img_size=img_size)
        self.teacher.load_state_dict(self.encoder.state_dict())
        self.teacher_cls_head = bn_mlp([dim, hidden, hidden, c.out_dim], ["relu", "gelu"])
        self.teacher_cls_head.load_state_dict(self.cls_head.state_dict())
        for p in list(self.teacher.parameters()) + list(self.teacher_cls_head.parameters()):
            p.requires_grad_(False)
        self.momentum = c.momentum

    def export_encoder(self) -> nn.Module:
        return self.teacher if self.cfg.export == "teacher" else self.encoder

    def after_step(self, progress: float) -> None:
        """EMA of the student (backbone + CLSHead) into the teacher, m = cosine_momentum."""
        self.momentum = cosine_momentum(self.cfg.momentum, progress)
        ema_update(self.teacher, self.encoder, self.momentum)
        ema_update(self.teacher_cls_head, self.cls_head, self.momentum)

    def make_views(self, images: Tensor) -> Tensor:
        """Two global views, view-major (2B, C, H, W)."""
        c = self.cfg
        if not (c.augment and self.training):
            return torch.cat([images, images], dim=0)
        size = (images.shape[2], images.shape[3])
        v1 = multiview_crop(images, size, scale=c.crop_scale, blur_p=1.0, hflip=c.hflip)
        v2 = multiview_crop(images, size, scale=c.crop_scale, blur_p=0.1, solarize_p=0.2, hflip=c.hflip)
        return torch.cat([v1, v2], dim=0)

    def losses(self, clean: Tensor, corrupted: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(contrastive, reconstruction) for view-major clean/corrupted (2B, ...) batches."""
        c = self.cfg
        tokens, _, grid = vit_tokens(self.encoder, corrupted)
        tokens = self.encoder.norm(tokens)
        s = self.cls_head(tokens[:, 0])
        rec = self.rec_head(tokens[:, 1:], grid)
        with torch.no_grad():
            t_tokens, _, _ = vit_tokens(self.teacher, clean)
            t = self.teacher_cls_head(self.teacher.norm(t_tokens)[:, 0])
        s0, s1 = s.float().chunk(2)
        t0, t1 = t.float().chunk(2)
        contrastive = info_nce(s0, t1, c.temperature) + info_nce(s1, t0, c.temperature)
        recon = masked_l1_mean(rec.float(), clean.float(), mask)
        return contrastive, recon

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"sit: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        if images.shape[0] < 2:
            raise ValueError("sit: the contrastive loss needs a batch of at least 2 images")
        clean = self.make_views(images)
        corr = gmml_corrupt(
            clean, coverage=c.coverage, fill=c.fill, replace_prob=c.replace_prob,  # type: ignore[arg-type]
            replace_coverage=c.replace_coverage, max_side_frac=c.max_side_frac, align=c.align, groups=2,
        )
        contrastive, recon = self.losses(clean, corr.corrupted, corr.mask)
        loss = contrastive + c.lmbda * recon
        logs = {
            "loss": float(loss.detach()),
            "contrastive": float(contrastive.detach()),
            "reconstruction": float(recon.detach()),
            "momentum": self.momentum,
        }
        return loss, logs
