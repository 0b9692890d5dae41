"""GMML - Group Masked Model Learning (Atito et al. 2022; Sara-Ahmed/GMML).

Per sample `n_views` crops (RandomResizedCrop(0.05-1) + flip, light jitter p 0.3,
blur p 0.1) are corrupted by group masking (`ssl_methods.corruption`): connected
rectangles covering U(0.5, 0.75) of the pixels filled with N(0, 1) noise, or, with
probability 0.5, 30% replaced by a batch partner's pixels at the same place. The
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
from ssl_methods.augment import color_jitter, gaussian_blur, random_resized_crop
from ssl_methods.base import ConfigError, SSLMethod, parse_config
from ssl_methods.corruption import gmml_corrupt, masked_l1_mean
from ssl_methods.heads import RECHead
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


def default_recons_blocks(depth: int) -> tuple[int, ...]:
    """(6, 8, 10, 12) for depth 12; the same fractions of the depth otherwise."""
    picks = {max(1, round(depth * f)) for f in (1 / 2, 2 / 3, 5 / 6, 1.0)}
    return tuple(sorted(picks))


@register_method("gmml")
class GMML(SSLMethod):
    name = "gmml"
    supported_families = ("vit",)

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
                v = color_jitter(v, c.jitter_strength, c.jitter_strength, p=c.jitter_p)
                v = gaussian_blur(v, p=c.blur_p)
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
            replace_coverage=c.replace_coverage, max_side_frac=c.max_side_frac, align=c.align,
        )
        rec = self.reconstruct(corr.corrupted)
        loss = masked_l1_mean(rec.float(), clean.float(), corr.mask)
        logs = {"loss": float(loss.detach()), "corrupted_frac": float(corr.mask.mean())}
        return loss, logs
