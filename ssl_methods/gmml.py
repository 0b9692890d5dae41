"""GMML - Group Masked Model Learning (Atito et al. 2022; Sara-Ahmed/GMML).

Per sample `n_views` crops (RandomResizedCrop(0.05-1) + flip, light brightness/contrast
jitter 0.1 with p 0.3 and blur p 0.1, both on [0, 1] pixels; the reference's saturation
0.1 / hue 0.01 jitter is the identity on grey images) are corrupted by group masking (`ssl_methods.corruption`): connected
rectangles covering U(0.5, 0.75) of the pixels filled with N(0, 1) noise, or, with
probability 0.5, 30% replaced by the pixels of a partner from the same view, at the
same place. The
ViT sees the corrupted pixels (no mask token); the average of blocks 6/8/10/12
(1-indexed; for other depths the blocks at 1/2, 2/3, 5/6 and all of the depth),
after the final norm, feeds the RECHead; the loss is the L1 over corrupted
pixels only, pooled over views, images and channels.

Deviations: torch RNG (seedable) instead of OS-entropy numpy; crops resampled
bilinearly on-device; the reconstruction head predicts `in_chans` channels (the
reference hard-codes 3); non-square grids are supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.augment import photometric, random_resized_crop
from ssl_methods.base import ConfigError, SSLMethod, parse_config
from ssl_methods.corruption import gmml_corrupt, masked_l1_mean
from ssl_methods.heads import RECHead
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method
from ssl_methods.vit_tokens import check_plain_vit, vit_tokens


@dataclass
class GMMLConfig:
    n_views: int = 2
    coverage: tuple[float, float] = (0.5, 0.75)
    fill: str = "noise"
    replace_prob: float = 0.5
    replace_coverage: tuple[float, float] = (0.3, 0.3)
    max_side_frac: float = 0.3
    align: int = 1
    recons_blocks: tuple[int, ...] | None = None
    drop_path_rate: float = 0.1
    augment: bool = True
    crop_scale: tuple[float, float] = (0.05, 1.0)
    hflip: float = 0.5
    jitter_p: float = 0.3
    jitter_strength: float = 0.1
    blur_p: float = 0.1

    def __post_init__(self) -> None:
        if self.fill not in ("noise", "zeros"):
            raise ConfigError(f"gmml: fill must be 'noise' or 'zeros', got {self.fill!r}")
        if self.n_views < 1:
            raise ConfigError(f"gmml: n_views must be >= 1, got {self.n_views}")


_GM = "Sara-Ahmed/GMML"
RECIPE = Recipe(
    method="gmml", family="vit", optimizer="adamw", betas=(0.9, 0.999), base_lr=5e-4, lr_batch=256, min_lr=1e-6,
    weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0, clip_mode="per_tensor", warmup_epochs=10, epochs=800,
    batch_size=256,
    sources={
        "optimizer": f"{_GM}:main.py torch.optim.AdamW(params_groups) (PyTorch default betas (0.9, 0.999))",
        "betas": f"{_GM}:main.py torch.optim.AdamW(params_groups): default betas",
        "base_lr": f"{_GM}:main.py --lr 0.0005; lr_schedule = cosine_scheduler(lr * batch_size * world / 256., ...)",
        "min_lr": f"{_GM}:main.py --min_lr 1e-6",
        "weight_decay": f"{_GM}:main.py --weight_decay 0.04 --weight_decay_end 0.4 (wd_schedule, group 0 only)",
        "clip_grad": f"{_GM}:main.py --clip_grad 3.0; utils.clip_gradients (per parameter tensor)",
        "warmup_epochs": f"{_GM}:main.py --warmup_epochs 10 --epochs 800 (+1 inside main)",
        "lr_schedule": f"{_GM}:utils.py cosine_scheduler",
        "coverage": f"{_GM}:main.py --drop_perc 0.75; datasets_utils.py U(min(0.5, p), p) of the pixels",
        "fill": f"{_GM}:main.py --drop_type noise",
        "replace_prob": f"{_GM}:datasets_utils.py GMML_replace_list rep_drop = 1 / (len(drop_types) + 1) = 0.5",
        "replace_coverage": f"{_GM}:main.py --drop_replace 0.3",
        "max_side_frac": f"{_GM}:datasets_utils.py GMML_drop_rand_patches max_block_sz=0.3",
        "align": f"{_GM}:main.py --drop_align 1",
        "recons_blocks": f"{_GM}:main.py --recons_blocks 6-8-10-12",
        "drop_path_rate": f"{_GM}:vision_transformer.py VisionTransformer(drop_path_rate=0.1) (not overridden)",
        "crop_scale": f"{_GM}:datasets_utils.py DataAugmentationSiT: scale (0.05, 1.) when local_crops_number == 0",
        "jitter_p": f"{_GM}:datasets_utils.py color_jitter1 RandomApply(ColorJitter(0.1, 0.1, 0.1, 0.01), p=0.3)",
        "jitter_strength": f"{_GM}:datasets_utils.py ColorJitter(brightness=0.1, contrast=0.1, ...)",
        "blur_p": f"{_GM}:datasets_utils.py clean_transfo GaussianBlur(0.1)",
        "n_views": f"{_GM}:datasets_utils.py DataAugmentationSiT: 2 global crops",
        "hflip": f"{_GM}:datasets_utils.py RandomHorizontalFlip(p=0.5)",
    },
    notes=(
        "colour jitter: brightness/contrast 0.1 only - saturation 0.1 / hue 0.01 are the identity on grey radiographs",
        "replace partner drawn from the same view (GMML_replace_list runs per crop list)",
        "AMP: bf16 autocast (reference: fp16 + GradScaler)",
    ),
)


def default_recons_blocks(depth: int) -> tuple[int, ...]:
    """(6, 8, 10, 12) for depth 12; the same fractions of the depth otherwise."""
    picks = {max(1, round(depth * f)) for f in (1 / 2, 2 / 3, 5 / 6, 1.0)}
    return tuple(sorted(picks))


@register_method("gmml")
class GMML(SSLMethod):
    name = "gmml"
    supported_families = ("vit",)
    recipes = {"vit": RECIPE}
    config_class = GMMLConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        self.cfg = parse_config(GMMLConfig, cfg, self.name)
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size,
            drop_path_rate=self.cfg.drop_path_rate,
        )
        check_plain_vit(self.encoder, self.name)
        depth = len(self.encoder.blocks)
        self.recons_blocks = self.cfg.recons_blocks or default_recons_blocks(depth)
        if not all(1 <= i <= depth for i in self.recons_blocks):
            raise ConfigError(f"gmml: recons_blocks {self.recons_blocks} must lie in 1..{depth}")
        self.patch = int(self.encoder.patch_embed.patch_size[0])
        self.rec_head = RECHead(int(self.encoder.embed_dim), in_chans, self.patch)

    def export_encoder(self) -> nn.Module:
        return self.encoder

    def make_views(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (n_views * B, C, H, W) clean crops, view-major."""
        c = self.cfg
        size = (images.shape[2], images.shape[3])
        views = []
        for _ in range(c.n_views):
            v = images
            if c.augment and self.training:
                v = random_resized_crop(images, size, c.crop_scale, hflip=c.hflip)
                v = photometric(
                    v, jitter_p=c.jitter_p, brightness=c.jitter_strength, contrast=c.jitter_strength, blur_p=c.blur_p,
                )
            views.append(v)
        return torch.cat(views, dim=0)

    def reconstruct(self, corrupted: Tensor) -> Tensor:
        """Corrupted images -> reconstruction (same shape) from averaged, normed block outputs."""
        _, outs, grid = vit_tokens(self.encoder, corrupted, self.recons_blocks)
        feats = self.encoder.norm(torch.stack(outs).mean(dim=0))
        return self.rec_head(feats[:, 1:], grid)

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"gmml: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        clean = self.make_views(images)
        corr = gmml_corrupt(
            clean, coverage=c.coverage, fill=c.fill, replace_prob=c.replace_prob,  # type: ignore[arg-type]
            replace_coverage=c.replace_coverage, max_side_frac=c.max_side_frac, align=c.align, groups=c.n_views,
        )
        rec = self.reconstruct(corr.corrupted)
        loss = masked_l1_mean(rec.float(), clean.float(), corr.mask)
        logs = {"loss": float(loss.detach()), "corrupted_frac": float(corr.mask.mean())}
        return loss, logs
