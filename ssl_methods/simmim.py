"""SimMIM (Xie et al. 2022; microsoft/SimMIM `models/simmim.py`) on timm ViT and Swin.

Masking: on a coarse grid of `mask_patch_size`-pixel cells (32 px by default),
ceil(n_cells * mask_ratio) cells per sample are chosen by a random permutation and
upsampled to the backbone's token grid. After the patch embedding, masked tokens
are *replaced* by a learned mask token (all tokens go through the encoder). The
one-layer head is a 1x1 conv to stride^2 * in_chans channels followed by
PixelShuffle(stride) (stride = patch size for ViT, 32 for Swin). The loss is the
L1 over masked pixels, divided by (#masked pixels * in_chans), i.e. the mean
absolute error over masked pixel x channel elements, pooled over the batch.

Deviations from the reference: the ViT is a plain timm ViT (learned absolute
position embedding, as in timm) instead of the repo's BEiT-style ViT with shared
relative position bias, layer scale and separate q/v biases - the benchmark fine-tunes
timm ViTs, so the pre-trained weights must have timm keys (the plain ViT is the
default and the only encoder offered; the method notes and `RECIPE.notes` say so);
the loop's cosine schedule replaces the reference's multistep decay; the decoder predicts `in_chans` channels
(the reference hard-codes 3 and silently triples the loss for grey input); views
are made on-device with a bilinear batched RandomResizedCrop(0.67-1) + flip; the
mask uses torch RNG instead of the dataloader's numpy RNG.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods import shard
from ssl_methods.augment import random_resized_crop
from ssl_methods.base import ConfigError, SSLMethod, parse_config
from ssl_methods.patches import grid_pos_embed
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method


@dataclass
class SimMIMConfig:
    mask_ratio: float = 0.6
    mask_patch_size: int = 32  # pixels per side of a mask cell
    drop_path_rate: float | None = None  # None: 0.1 for ViT (ViT-B 800ep config), 0.0 for Swin (Swin-B 800ep config)
    augment: bool = True
    crop_scale: tuple[float, float] = (0.67, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"simmim: mask_ratio must be in (0, 1), got {self.mask_ratio}")


_SM = "microsoft/SimMIM"
_SM_VIT = f"{_SM}:configs/vit_base__800ep/simmim_pretrain__vit_base__img224__800ep.yaml"
_SM_SWIN = f"{_SM}:configs/swin_base__800ep/simmim_pretrain__swin_base__img192_window6__800ep.yaml"
_SM_SOURCES = {
    "optimizer": f"{_SM}:config.py TRAIN.OPTIMIZER NAME adamw, BETAS (0.9, 0.999), EPS 1e-8",
    "betas": f"{_SM}:config.py TRAIN.OPTIMIZER.BETAS (0.9, 0.999)",
    "base_lr": f"{_SM_VIT} TRAIN.BASE_LR 1e-4; main_simmim.py lr = BASE_LR * batch * world / 512",
    "min_lr": f"{_SM}:config.py TRAIN.MIN_LR 5e-6 (scaled like the lr)",
    "weight_decay": f"{_SM_VIT} TRAIN.WEIGHT_DECAY 0.05 (constant)",
    "clip_grad": f"{_SM}:config.py TRAIN.CLIP_GRAD 5.0; main_simmim.py clip_grad_norm_ (global)",
    "warmup_epochs": f"{_SM_VIT} TRAIN.EPOCHS 800, WARMUP_EPOCHS 10",
    "lr_schedule": f"{_SM_VIT} LR_SCHEDULER multistep, GAMMA 0.1, MULTISTEPS [700]",
    "mask_ratio": f"{_SM_VIT} DATA.MASK_RATIO 0.6",
    "mask_patch_size": f"{_SM_VIT} DATA.MASK_PATCH_SIZE 32",
    "drop_path_rate": f"{_SM_VIT} MODEL.DROP_PATH_RATE 0.1; {_SM_SWIN} 0.0",
    "crop_scale": f"{_SM}:data/data_simmim.py RandomResizedCrop(IMG_SIZE, scale=(0.67, 1.), ratio=(3/4, 4/3))",
    "crop_ratio": f"{_SM}:data/data_simmim.py ratio=(3. / 4., 4. / 3.)",
    "hflip": f"{_SM}:data/data_simmim.py RandomHorizontalFlip()",
}
_SM_NOTES = (
    "lr schedule: the loop's cosine to min_lr stands in for the reference multistep (x0.1 at epoch 700 of 800)",
    "warm-up starts from 0, not from WARMUP_LR 5e-7 per 512",
    "encoder: plain timm ViT (learned absolute pos-embed) instead of the repo's BEiT-style ViT-B "
    "(shared relative position bias, layer scale 0.1, q/v biases): fine-tuning loads timm keys",
)
RECIPE = Recipe(
    method="simmim", family="vit", optimizer="adamw", betas=(0.9, 0.999), base_lr=1e-4, lr_batch=512,
    min_lr=5e-6, scale_min_lr=True, weight_decay=0.05, weight_decay_end=None, clip_grad=5.0, clip_mode="global",
    warmup_epochs=10, epochs=800, batch_size=2048,
    lr_schedule="linear warm-up, then multistep x0.1 at epoch 700 of 800 (here: cosine to min_lr)",
    sources=_SM_SOURCES, notes=_SM_NOTES,
)
RECIPE_SWIN = dataclasses.replace(RECIPE, family="swin", notes=_SM_NOTES[:2] + (
    f"Swin-B reference: {_SM_SWIN} (same optimiser; drop path 0.0, 192 px, window 6)",
))


def block_mask(batch: int, cells: tuple[int, int], ratio: float, upsample: int, device: torch.device) -> Tensor:
    """(B, ch*upsample, cw*upsample) float mask, 1 = masked, constant on each cell.

    Exactly ceil(ch * cw * ratio) cells per sample are masked, chosen uniformly
    (argsort of U[0,1) noise, the first RNG call here).
    """
    n = cells[0] * cells[1]
    count = int(math.ceil(n * ratio))
    order = torch.argsort(shard.rand(batch, n, device=device), dim=1)  # split-invariant under data parallelism
    mask = torch.zeros(batch, n, device=device)
    mask.scatter_(1, order[:, :count], 1.0)
    mask = mask.reshape(batch, cells[0], cells[1])
    return mask.repeat_interleave(upsample, dim=1).repeat_interleave(upsample, dim=2)


def masked_l1(rec: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
    """sum(|rec - target| * mask) / (sum(mask) + 1e-5) / C.

    rec/target: (B, C, H, W); pixel_mask: (B, 1, H, W) with 1 on masked pixels.
    """
    chans = target.shape[1]
    return ((rec - target).abs() * pixel_mask).sum() / (pixel_mask.sum() + 1.0e-5) / chans


@register_method("simmim")
class SimMIM(SSLMethod):
    name = "simmim"
    supported_families = ("vit", "swin")
    recipes = {"vit": RECIPE, "swin": RECIPE_SWIN}
    config_class = SimMIMConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        self.cfg = parse_config(SimMIMConfig, cfg, self.name)
        self.family = backbones.get_spec(backbone).family
        drop_path = self.cfg.drop_path_rate
        if drop_path is None:
            drop_path = 0.1 if self.family == "vit" else 0.0
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=drop_path,
        )
        enc = self.encoder
        self.model_patch = int(enc.patch_embed.patch_size[0])
        embed_width = int(enc.patch_embed.proj.out_channels)
        if self.family == "vit":
            self.stride = self.model_patch
        else:  # Swin: patch merging halves the grid between stages
            self.stride = self.model_patch * 2 ** (len(enc.layers) - 1)
        if self.cfg.mask_patch_size % self.model_patch:
            raise ConfigError(
                f"simmim: mask_patch_size {self.cfg.mask_patch_size} must be a multiple of the "
                f"backbone patch size {self.model_patch}"
            )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_width))
        nn.init.trunc_normal_(self.mask_token, mean=0.0, std=0.02, a=-0.02, b=0.02)
        self.decoder = nn.Sequential(
            nn.Conv2d(int(enc.num_features), self.stride**2 * in_chans, kernel_size=1),
            nn.PixelShuffle(self.stride),
        )

    def export_encoder(self) -> nn.Module:
        return self.encoder

    def no_weight_decay_names(self) -> set[str]:
        """timm's `no_weight_decay()` of the encoder (pos_embed, cls_token; Swin's relative
        position tables), matched by full name or suffix, plus the mask token for Swin."""
        keys = set(self.encoder.no_weight_decay()) if hasattr(self.encoder, "no_weight_decay") else set()
        out = {
            f"encoder.{n}" for n, _ in self.encoder.named_parameters()
            if n in keys or any(n.endswith("." + k) for k in keys)
        }
        if self.family == "swin":
            out.add("mask_token")
        return out

    def encode(self, images: Tensor, token_mask: Tensor) -> Tensor:
        """Features (B, F, H/stride, W/stride) with masked tokens replaced by the mask token.

        token_mask: (B, gh, gw) float on the patch-embedding grid, 1 = masked.
        """
        enc = self.encoder
        if self.family == "vit":
            x = enc.patch_embed.proj(images)
            b, d, gh, gw = x.shape
            x = enc.patch_embed.norm(x.flatten(2).transpose(1, 2))
            w = token_mask.reshape(b, -1, 1).to(x.dtype)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
            pos = grid_pos_embed(enc.pos_embed, (gh, gw))
            x = torch.cat([enc.cls_token.expand(b, -1, -1), x], dim=1) + pos
            x = enc.norm_pre(enc.patch_drop(enc.pos_drop(x)))
            x = enc.norm(enc.blocks(x))
            return x[:, 1:].transpose(1, 2).reshape(b, d, gh, gw)
        x = enc.patch_embed(images)  # (B, h, w, C), channels-last
        w = token_mask.unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + self.mask_token.to(x.dtype).reshape(1, 1, 1, -1) * w
        x = enc.norm(enc.layers(x))
        return x.permute(0, 3, 1, 2)

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"simmim: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        if c.augment and self.training:
            images = random_resized_crop(images, (images.shape[2], images.shape[3]), c.crop_scale, c.crop_ratio, c.hflip)
        b, _, h, w = images.shape
        cell = c.mask_patch_size
        if h % cell or w % cell or h % self.stride or w % self.stride:
            raise ValueError(
                f"simmim: image size {h}x{w} must be a multiple of the mask cell ({cell} px) "
                f"and of the encoder stride ({self.stride} px)"
            )
        token_mask = block_mask(b, (h // cell, w // cell), c.mask_ratio, cell // self.model_patch, images.device)
        feats = self.encode(images, token_mask)
        rec = self.decoder(feats)
        pixel_mask = token_mask.repeat_interleave(self.model_patch, 1).repeat_interleave(self.model_patch, 2)
        pixel_mask = pixel_mask.unsqueeze(1)
        loss = masked_l1(rec.float(), images.float(), pixel_mask)
        logs = {"loss": float(loss.detach()), "mask_ratio": float(token_mask.mean())}
        return loss, logs
