"""MAE (He et al. 2022; facebookresearch/mae `models_mae.py`) on a timm ViT.

Per sample, a uniform-noise argsort keeps int(L * (1 - mask_ratio)) random tokens;
the encoder (the timm ViT's patch_embed, pos_embed, cls_token, blocks, norm) sees
only those; a light ViT decoder with a shared mask token and its own fixed 2-D
sin-cos positions predicts every patch; the loss is the MSE on masked patches
only, optionally against per-patch normalised pixels (unbiased variance, as the
reference's `Tensor.var`).

Variable resolution (Dynamic Batch Binning): `forward(images, valid)` accepts any
H, W that are multiples of the patch size and an optional (B, L) bool mask of
real tokens in a padded batch. Padded tokens are never kept, never attended to
(key mask in encoder and decoder) and never in the loss; each image keeps
int(n_valid * (1 - mask_ratio)) tokens. When those counts differ within a batch
the shorter visible sets are filled with slots excluded by the attention mask.
Positions for a non-default grid are the stored tables resampled with timm's
`resample_abs_pos_embed`, as timm's `dynamic_img_size` does at fine-tuning.
No crop augmentation is applied when `valid` is given (padding geometry is fixed).

Deviations from the reference: views are made on-device with a bilinear
(not bicubic) batched RandomResizedCrop; inputs are used as given (no ImageNet
normalisation inside the method; the loop normalises pre-training and fine-tuning
alike); the default decoder (`decoder: auto`) is lighter than the reference's 512-d x 8
for ViT-S and the CPU demo ViT (`default_decoder`); `decoder: reference` restores it.
The optimiser recipe (AdamW betas (0.9, 0.95), wd 0.05, no clipping, blr 1.5e-4 per
256, 40 warm-up epochs) is `RECIPE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

import backbones
from ssl_methods import shard
from ssl_methods.augment import random_resized_crop
from ssl_methods.base import ConfigError, SSLMethod, parse_config
from ssl_methods.patches import grid_pos_embed, patchify, sincos_2d
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method


# (width, depth, heads) of the named decoders
DECODERS: dict[str, tuple[int, int, int]] = {
    # the reference decoder shared by MAE's ViT-B/L/H (models_mae.py mae_vit_*: decoder_embed_dim 512,
    # decoder_depth 8, decoder_num_heads 16)
    "reference": (512, 8, 16),
    # the project's ViT-S choice (docs: MAE has no ViT-S recipe, mae#150): 256-d / 4 blocks / 8 heads
    "light": (256, 4, 8),
    # CPU demo encoders (< 384-d)
    "tiny": (128, 2, 4),
}


def default_decoder(encoder_dim: int, decoder: str = "auto") -> tuple[int, int, int]:
    """(width, depth, heads) of the decoder when the config leaves them `None`.

    `decoder: auto` picks by encoder width: the reference 512-d / 8 blocks / 16 heads
    (shared by MAE's ViT-B/L/H) for encoders >= 768-d. MAE has no ViT-S recipe; with the
    512x8 decoder a ViT-S step costs more than SimMIM's full-token encoder (the decoder
    runs on all 197 tokens), which defeats MAE's point, so ViT-S (384-d) gets the `light`
    256-d / 4 blocks / 8 heads decoder (MAE Table 1: shallow decoders cost little
    fine-tuning accuracy). Narrower (CPU demo) encoders get `tiny`, 128-d / 2 / 4.
    `decoder: reference` (or `light`, `tiny`) asks for that decoder at any width.
    """
    if decoder != "auto":
        if decoder not in DECODERS:
            raise ConfigError(f"mae: decoder must be 'auto' or one of {', '.join(DECODERS)}, got {decoder!r}")
        return DECODERS[decoder]
    if encoder_dim >= 768:
        return DECODERS["reference"]
    if encoder_dim >= 384:
        return DECODERS["light"]
    return DECODERS["tiny"]


@dataclass
class MAEConfig:
    """MAE options; decoder fields left `None` follow `default_decoder(dim, decoder)`."""

    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder: str = "auto"  # auto | reference (512x8) | light (256x4) | tiny (128x2)
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    # encoder pos_embed frozen (reference); with init=random it is set to the 2-D sin-cos table,
    # with a pretrained init the loaded table is kept
    fixed_pos_embed: bool = True
    drop_path_rate: float = 0.0
    augment: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"mae: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.decoder != "auto" and self.decoder not in DECODERS:
            raise ConfigError(f"mae: decoder must be 'auto' or one of {', '.join(DECODERS)}, got {self.decoder!r}")


_MAE = "facebookresearch/mae"
RECIPE = Recipe(
    method="mae",
    family="vit",
    optimizer="adamw",
    betas=(0.9, 0.95),
    base_lr=1.5e-4,
    lr_batch=256,
    min_lr=0.0,
    weight_decay=0.05,
    weight_decay_end=None,
    clip_grad=None,
    clip_mode="global",
    warmup_epochs=40,
    epochs=800,
    batch_size=4096,
    lr_schedule="linear warm-up from 0, then half-cosine to min_lr, per iteration (util/lr_sched.py)",
    sources={
        "betas": f"{_MAE}:main_pretrain.py AdamW(param_groups, lr, betas=(0.9, 0.95))",
        "base_lr": f"{_MAE}:PRETRAIN.md --blr 1.5e-4; main_pretrain.py lr = blr * eff_batch_size / 256",
        "min_lr": f"{_MAE}:main_pretrain.py --min_lr default 0.",
        "weight_decay": f"{_MAE}:PRETRAIN.md --weight_decay 0.05 (constant; add_weight_decay groups)",
        "clip_grad": f"{_MAE}:engine_pretrain.py loss_scaler(..., clip_grad=None): no clipping",
        "warmup_epochs": f"{_MAE}:PRETRAIN.md --epochs 800 --warmup_epochs 40",
        "lr_schedule": f"{_MAE}:util/lr_sched.py adjust_learning_rate",
        "mask_ratio": f"{_MAE}:PRETRAIN.md --mask_ratio 0.75",
        "norm_pix_loss": f"{_MAE}:PRETRAIN.md --norm_pix_loss",
        "decoder": f"{_MAE}:models_mae.py decoder 512-d x 8 blocks x 16 heads (ViT-B/L/H); no ViT-S recipe",
        "fixed_pos_embed": f"{_MAE}:models_mae.py pos_embed requires_grad=False (sin-cos)",
        "drop_path_rate": f"{_MAE}:models_mae.py (no drop path in pre-training)",
        "crop_scale": f"{_MAE}:main_pretrain.py RandomResizedCrop(input_size, scale=(0.2, 1.0))",
        "hflip": f"{_MAE}:main_pretrain.py RandomHorizontalFlip()",
    },
    notes=(
        "ViT-S decoder: `decoder: auto` gives the project's light 256x4 for 384-d encoders; "
        "`decoder: reference` gives the published 512x8x16",
        "AMP: bf16 autocast (reference: fp16 + GradScaler)",
    ),
)


class Masking(NamedTuple):
    """Result of `random_masking` for a batch of B images with L tokens each.

    mask: (B, L) float, 1 = hidden from the encoder (padded tokens are 1 too);
    ids_keep: (B, K) token indices fed to the encoder, K = max kept count;
    ids_restore: (B, L) inverse permutation of the shuffle;
    keep_real: (B, K) bool, False for filler slots of images that keep fewer than K.
    """

    mask: Tensor
    ids_keep: Tensor
    ids_restore: Tensor
    keep_real: Tensor


def random_masking(batch: int, length: int, ratio: float, valid: Tensor | None, device: torch.device) -> Masking:
    """Per-sample random masking by argsort of U[0,1) noise (the reference's only RNG call).

    Image i keeps int(n_valid_i * (1 - ratio)) tokens (at least 1); padded tokens get
    noise 2.0 so they sort last and are never kept.
    """
    noise = shard.rand(batch, length, device=device)  # split-invariant under data parallelism
    if valid is None:
        n_valid = [length] * batch
    else:
        noise = noise.masked_fill(~valid, 2.0)
        n_valid = valid.sum(dim=1).tolist()
        if min(n_valid) == 0:
            raise ValueError("mae: an image in the batch has no valid tokens")
    keep_counts = [max(1, int(n * (1 - ratio))) for n in n_valid]
    k = max(keep_counts)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :k]
    counts = torch.tensor(keep_counts, device=device)
    keep_real = torch.arange(k, device=device)[None, :] < counts[:, None]
    mask_shuffled = torch.ones(batch, length, device=device)
    mask_shuffled[:, :k] = (~keep_real).float()
    mask = torch.gather(mask_shuffled, 1, ids_restore)
    return Masking(mask, ids_keep, ids_restore, keep_real)


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor, norm_pix: bool) -> Tensor:
    """Mean over weighted tokens of the per-token mean squared error.

    pred/target: (B, L, P); weight: (B, L) with 1 on the tokens that count.
    With `norm_pix`, each target patch is standardised with its mean and unbiased
    variance (eps 1e-6 inside the square root).
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_token = ((pred - target) ** 2).mean(dim=-1)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)


def _key_mask(keep: Tensor) -> Tensor:
    """(B, N) bool of attendable keys -> (B, 1, 1, N) bool mask for timm attention."""
    return keep[:, None, None, :]


@register_method("mae")
class MAE(SSLMethod):
    name = "mae"
    supported_families = ("vit",)
    supports_valid_mask = True
    recipes = {"vit": RECIPE}
    config_class = MAEConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        self.cfg = parse_config(MAEConfig, cfg, self.name)
        c = self.cfg
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=c.drop_path_rate
        )
        enc = self.encoder
        if getattr(enc, "no_embed_class", False) or enc.num_prefix_tokens != 1 or enc.cls_token is None:
            raise ConfigError(f"mae: backbone {backbone!r} must be a ViT with one cls token and a cls pos-embed row")
        self.patch = int(enc.patch_embed.patch_size[0])
        grid = tuple(enc.patch_embed.grid_size)
        dim = int(enc.embed_dim)
        auto_dim, auto_depth, auto_heads = default_decoder(dim, c.decoder)
        ddim = c.decoder_dim or auto_dim
        ddepth = c.decoder_depth or auto_depth
        dheads = c.decoder_heads or auto_heads
        norm = partial(nn.LayerNorm, eps=1e-6)

        self.decoder_embed = nn.Linear(dim, ddim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(ddim, grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(ddim, dheads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(ddepth)]
        )
        self.decoder_norm = norm(ddim)
        self.decoder_pred = nn.Linear(ddim, self.patch * self.patch * in_chans, bias=True)

        if str(init) == "random":
            self._init_reference(grid)
        else:
            self._init_decoder_only()
        if c.fixed_pos_embed:
            enc.pos_embed.requires_grad_(False)

    # -- initialisation (models_mae.py initialize_weights) ----------------------------
    def _init_reference(self, grid: tuple[int, int]) -> None:
        enc = self.encoder
        if self.cfg.fixed_pos_embed:
            enc.pos_embed.data.copy_(sincos_2d(enc.embed_dim, grid))
        w = enc.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(enc.cls_token, std=0.02)
        enc.apply(self._init_module)
        self._init_decoder_only()

    def _init_decoder_only(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for mod in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            mod.apply(self._init_module)

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- forward ----------------------------------------------------------------------
    def export_encoder(self) -> nn.Module:
        return self.encoder

    def forward_encoder(self, images: Tensor, masking: Masking, grid: tuple[int, int]) -> Tensor:
        """Visible tokens -> (B, 1 + K, D) latent (cls first), after the final norm."""
        enc = self.encoder
        x = enc.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = enc.patch_embed.norm(x)
        pos = grid_pos_embed(enc.pos_embed, grid)
        x = x + pos[:, 1:]
        idx = masking.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.gather(x, 1, idx)
        cls = (enc.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        attn_mask = None
        if not bool(masking.keep_real.all()):
            ones = torch.ones_like(masking.keep_real[:, :1])
            attn_mask = _key_mask(torch.cat([ones, masking.keep_real], dim=1))
        for blk in enc.blocks:
            x = blk(x, attn_mask=attn_mask)
        return enc.norm(x)

    def forward_decoder(
        self, latent: Tensor, masking: Masking, grid: tuple[int, int], valid: Tensor | None
    ) -> Tensor:
        """(B, 1 + K, D) latent -> (B, L, p*p*C) pixel predictions for every token."""
        y = self.decoder_embed(latent)
        b, _, ddim = y.shape
        length = masking.ids_restore.shape[1]
        vis = torch.where(masking.keep_real.unsqueeze(-1), y[:, 1:], self.mask_token.to(y.dtype))
        fill = self.mask_token.expand(b, length - vis.shape[1], ddim)
        full = torch.cat([vis, fill], dim=1)
        full = torch.gather(full, 1, masking.ids_restore.unsqueeze(-1).expand(-1, -1, ddim))
        y = torch.cat([y[:, :1], full], dim=1) + grid_pos_embed(self.decoder_pos_embed, grid)
        attn_mask = None
        if valid is not None and not bool(valid.all()):
            attn_mask = _key_mask(torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1))
        for blk in self.decoder_blocks:
            y = blk(y, attn_mask=attn_mask)
        return self.decoder_pred(self.decoder_norm(y))[:, 1:]

    def forward(self, images: Tensor, valid: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """images: (B, C, H, W), H and W multiples of the patch; valid: optional (B, L) bool."""
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"mae: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        if valid is None and c.augment and self.training:
            images = random_resized_crop(images, (images.shape[2], images.shape[3]), c.crop_scale, c.crop_ratio, c.hflip)
        b, _, h, w = images.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"mae: image size {h}x{w} is not a multiple of the patch size {self.patch}")
        grid = (h // self.patch, w // self.patch)
        length = grid[0] * grid[1]
        if valid is not None:
            valid = valid.to(device=images.device, dtype=torch.bool)
            if valid.shape != (b, length):
                raise ValueError(f"mae: valid must have shape {(b, length)}, got {tuple(valid.shape)}")
        masking = random_masking(b, length, c.mask_ratio, valid, images.device)
        latent = self.forward_encoder(images, masking, grid)
        pred = self.forward_decoder(latent, masking, grid, valid)
        target = patchify(images, self.patch)
        weight = masking.mask if valid is None else masking.mask * valid.float()
        loss = masked_mse(pred.float(), target.float(), weight, c.norm_pix_loss)
        n_tokens = float(length * b) if valid is None else float(valid.sum())
        logs = {"loss": float(loss.detach()), "mask_ratio": float(weight.sum()) / n_tokens}
        return loss, logs
