"""Token and FLOP model for plain ViT encoders.

Why this module exists: batching strategies for variable-size radiographs are compared
by the compute they spend, and the Dynamic Batch Binning poster reports "compute" as a
*squared token ratio* (119% tokens -> 142% "compute"). That is wrong for a ViT: the
attention term is quadratic in the length of each *sequence*, not of the whole
epoch, and the linear terms dominate at radiograph sequence lengths. Here compute is
always accumulated per sequence.

Conventions
- One multiply-add (MAC) = 2 FLOPs, the convention of
  `torch.utils.flop_counter.FlopCounterMode`. timm's model tables report GMACs.
- `n` is the sequence length seen by the transformer blocks, *including* prefix tokens
  (the class token): `n = n_patches + num_prefix_tokens`.
- Per block, with width `d` and MLP ratio `r`:
  QKV `6nd²`, logits `QKᵀ` `2n²d`, `attn·V` `2n²d`, output projection `2nd²`,
  MLP `4r·nd²`. Total `(8 + 4r)·n·d² + 4·n²·d`, i.e. `24nd² + 4n²d` for `r = 4`.
- LayerNorm, softmax, GELU, residual adds, bias adds and the attention scaling are
  O(nd) element-wise work and are not counted (FlopCounterMode does not count them
  either).
- Patch embedding (a strided conv) costs `2·n_patches·p²·C·d`; a linear head `2·d·K`.

"Real" tokens are patches that contain image pixels; "processed" tokens are the
patches the encoder actually runs on (real + padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

ArrayLike = Union[int, float, np.ndarray]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a plain ViT encoder; only what the FLOP model needs."""

    name: str
    width: int  # embedding dimension d
    depth: int  # number of transformer blocks L
    heads: int  # does not change FLOPs; kept so the config can build a model
    mlp_ratio: float = 4.0


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_small": ViTConfig("vit_small", width=384, depth=12, heads=6),
    "vit_base": ViTConfig("vit_base", width=768, depth=12, heads=12),
    "vit_large": ViTConfig("vit_large", width=1024, depth=24, heads=16),
}

_ALIASES = {"s": "vit_small", "b": "vit_base", "l": "vit_large", "vit-s": "vit_small", "vit-b": "vit_base", "vit-l": "vit_large"}


def get_vit_config(name: str | ViTConfig) -> ViTConfig:
    """Resolve `vit_small|vit_base|vit_large` (or `S|B|L`, `ViT-B`) to its config."""
    if isinstance(name, ViTConfig):
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    try:
        return VIT_CONFIGS[key]
    except KeyError:
        raise KeyError(f"unknown ViT config {name!r}; known: {', '.join(VIT_CONFIGS)} (or S, B, L)") from None


def block_flops(n: ArrayLike, width: int, mlp_ratio: float = 4.0) -> ArrayLike:
    """Forward FLOPs of one transformer block on one sequence of `n` tokens.

    `(8 + 4r)·n·d² + 4·n²·d`; vectorised over `n` (float64 to avoid int overflow).
    """
    n = np.asarray(n, dtype=np.float64)
    d = float(width)
    out = (8.0 + 4.0 * mlp_ratio) * n * d * d + 4.0 * n * n * d
    return out if out.ndim else float(out)


def encoder_flops(n: ArrayLike, cfg: ViTConfig | str) -> ArrayLike:
    """Forward FLOPs of the transformer blocks for one sequence of `n` tokens (incl. prefix).

    This is the per-sequence model `L·(24nd² + 4n²d)` used for every strategy comparison.
    """
    cfg = get_vit_config(cfg)
    return cfg.depth * block_flops(n, cfg.width, cfg.mlp_ratio)


def patch_embed_flops(n_patches: ArrayLike, *, width: int, patch: int, in_chans: int) -> ArrayLike:
    """FLOPs of the patch-embedding conv: one `p²·C -> d` projection per patch."""
    n = np.asarray(n_patches, dtype=np.float64)
    out = 2.0 * n * patch * patch * in_chans * width
    return out if out.ndim else float(out)


def head_flops(width: int, num_classes: int) -> float:
    """FLOPs of a linear classification head on the pooled token (0 when there is none)."""
    return 2.0 * width * num_classes


def model_forward_flops(
    n_patches: int,
    cfg: ViTConfig | str,
    *,
    patch: int,
    in_chans: int,
    num_prefix_tokens: int = 1,
    num_classes: int = 0,
) -> float:
    """Matmul/conv FLOPs of a whole timm ViT forward on one image of `n_patches` patches.

    Encoder blocks on `n_patches + num_prefix_tokens` tokens, plus patch embedding,
    plus the head. This is what FlopCounterMode reports for a timm ViT with fused
    attention disabled (fused SDPA is invisible to the counter on CPU).
    """
    cfg = get_vit_config(cfg)
    return (
        float(encoder_flops(n_patches + num_prefix_tokens, cfg))
        + float(patch_embed_flops(n_patches, width=cfg.width, patch=patch, in_chans=in_chans))
        + head_flops(cfg.width, num_classes)
    )


@dataclass(frozen=True)
class EpochCost:
    """Tokens and forward FLOPs of one epoch under one batching strategy.

    `real` counts patches holding image pixels, `processed` the patches the encoder
    runs on. `flops` maps a ViT config name to the summed per-sequence encoder FLOPs.
    """

    n_sequences: int
    real: int
    processed: int
    flops: dict[str, float]

    @property
    def padding_fraction(self) -> float:
        """Share of processed tokens that are padding, in [0, 1]."""
        return 1.0 - self.real / self.processed if self.processed else 0.0


def epoch_cost(
    real_tokens: np.ndarray,
    processed_tokens: np.ndarray,
    *,
    models: tuple[str, ...] = ("vit_small", "vit_base", "vit_large"),
    num_prefix_tokens: int = 1,
) -> EpochCost:
    """Sum tokens and encoder FLOPs over sequences.

    `real_tokens[j]`, `processed_tokens[j]`: patch counts of sequence `j` (one image per
    sequence for padded/bucketed batching; a batch of B images is B sequences).
    FLOPs are `Σ_j L·(24·n_j·d² + 4·n_j²·d)` with `n_j = processed_tokens[j] + prefix`.
    """
    real = np.asarray(real_tokens, dtype=np.int64)
    proc = np.asarray(processed_tokens, dtype=np.int64)
    if real.shape != proc.shape:
        raise ValueError(f"real_tokens shape {real.shape} != processed_tokens shape {proc.shape}")
    if np.any(real > proc):
        raise ValueError("a sequence has more real than processed tokens")
    n = proc.astype(np.float64) + num_prefix_tokens
    flops = {m: float(np.sum(encoder_flops(n, m))) for m in models}
    return EpochCost(n_sequences=int(proc.size), real=int(real.sum()), processed=int(proc.sum()), flops=flops)
