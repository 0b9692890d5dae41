"""Heads: DINO weight-normalised last layer, BN MLP layout, RECHead geometry."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_methods.heads import DINOHead, RECHead, bn_mlp


def test_dino_head_last_layer_is_unit_norm_rows_and_g_frozen() -> None:
    torch.manual_seed(0)
    head = DINOHead(16, 32, hidden=24, bottleneck=8, norm_last_layer=True)
    g = head.last_layer.parametrizations.weight.original0
    v = head.last_layer.parametrizations.weight.original1
    assert not g.requires_grad and torch.all(g == 1)
    x = torch.randn(5, 16)
    z = F.normalize(head.mlp(x), dim=-1)
    expect = z @ (v / v.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(head(x), expect, rtol=1e-5, atol=1e-6)
    assert DINOHead(16, 32, 24, 8, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_bn_mlp_layout() -> None:
    mlp = bn_mlp([8, 16, 16, 4], ["relu", "gelu"], bias=False)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d"]
    assert mlp[0].bias is None and not mlp[-1].affine
    assert mlp(torch.randn(6, 8)).shape == (6, 4)


def test_rec_head_maps_tokens_to_pixels() -> None:
    head = RECHead(12, 1, 4)
    out = head(torch.randn(2, 3 * 5, 12), (3, 5))
    assert out.shape == (2, 1, 12, 20)
    assert isinstance(head.conv, nn.ConvTranspose2d) and head.conv.bias.shape == (1,)
