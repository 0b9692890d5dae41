"""Prediction / projection heads used by the SSL methods (never exported with the encoder).

* `RECHead` - GMML/SiT pixel reconstruction: 3 x (Linear + GELU) per token, then a
  ConvTranspose2d(D, in_chans, patch, stride patch) back to pixels.
* `bn_mlp` - BatchNorm MLPs: SiT's CLSHead and MoCo v3's projector/predictor.
* `DINOHead` - 3-layer MLP, L2-normalised bottleneck, weight-normalised last layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def _trunc_normal_init(module: nn.Module) -> None:
    """Linear weights ~ N(0, 0.02) truncated at +-2 std, zero bias (DINO/GMML/SiT)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class RECHead(nn.Module):
    """Tokens (B, L, D) on a (gh, gw) grid -> image (B, in_chans, gh*patch, gw*patch)."""

    def __init__(self, dim: int, in_chans: int, patch: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU()
        )
        self.mlp.apply(_trunc_normal_init)
        # PyTorch default init for the transposed conv, as the reference
        self.conv = nn.ConvTranspose2d(dim, in_chans, kernel_size=patch, stride=patch)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        x = self.mlp(tokens)
        b, _, d = x.shape
        x = x.transpose(1, 2).reshape(b, d, grid[0], grid[1])
        return self.conv(x)


def bn_mlp(dims: Sequence[int], acts: Sequence[str], bias: bool = True, last_bn: bool = True) -> nn.Sequential:
    """Linear -> BN -> act blocks; the last Linear is followed by BN(affine=False) when
    `last_bn` (SimCLR's design, MoCo v3 `_build_mlp(last_bn=True)`), else by nothing.

    `dims` = (in, hidden..., out); `acts` names the activation after each hidden BN
    (`relu` or `gelu`), so len(acts) == len(dims) - 2.
    """
    if len(acts) != len(dims) - 2:
        raise ValueError(f"bn_mlp: {len(dims)} dims need {len(dims) - 2} activations, got {len(acts)}")
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < len(dims) - 2:
            layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True) if acts[i] == "relu" else nn.GELU())
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """in -> hidden -> hidden -> bottleneck (GELU between), L2 normalise, then a
    weight-normalised bias-free Linear(bottleneck, out_dim). With `norm_last_layer`
    the weight-norm gain g is fixed to 1 (frozen), as in the reference."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256, norm_last_layer: bool = True
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.mlp.apply(_trunc_normal_init)
        self.last_layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        if norm_last_layer:
            g.requires_grad_(False)

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> Tensor:
        """`freeze_last_layer` detaches the last layer's weight, so its parameters get no
        gradient (grad stays None and AdamW skips them), like DINO's
        `cancel_gradients_last_layer` during the first epoch(s)."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        if freeze_last_layer:
            return F.linear(x, self.last_layer.weight.detach())
        return self.last_layer(x)
