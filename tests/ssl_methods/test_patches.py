"""Patch layout and sin-cos tables against explicit definitions."""

from __future__ import annotations

import math

import torch

from ssl_methods.patches import grid_pos_embed, patchify, sincos_2d, unpatchify


def test_patchify_order_row_col_channel() -> None:
    x = torch.rand(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    for t in range(6):
        r, c = divmod(t, 3)
        for py in range(4):
            for px in range(4):
                for ch in range(3):
                    assert tokens[1, t, (py * 4 + px) * 3 + ch] == x[1, ch, r * 4 + py, c * 4 + px]
    torch.testing.assert_close(unpatchify(tokens, 4, (2, 3), 3), x)


def test_sincos_matches_formula() -> None:
    dim, gh, gw = 16, 3, 5
    table = sincos_2d(dim, (gh, gw))
    assert table.shape == (1, 1 + gh * gw, dim)
    assert torch.all(table[0, 0] == 0)
    q = dim // 4
    for t in range(gh * gw):
        row, col = divmod(t, gw)
        for k in range(q):
            om = 1.0 / 10000 ** (k / q)
            got = table[0, 1 + t]
            assert math.isclose(got[k], math.sin(col * om), abs_tol=1e-6)
            assert math.isclose(got[q + k], math.cos(col * om), abs_tol=1e-6)
            assert math.isclose(got[2 * q + k], math.sin(row * om), abs_tol=1e-6)
            assert math.isclose(got[3 * q + k], math.cos(row * om), abs_tol=1e-6)


def test_grid_pos_embed_identity_on_same_grid_and_keeps_cls() -> None:
    table = torch.randn(1, 17, 8)
    assert grid_pos_embed(table, (4, 4)) is table
    other = grid_pos_embed(table, (3, 6))
    assert other.shape == (1, 19, 8)
    torch.testing.assert_close(other[:, :1], table[:, :1])


def test_dino_interpolation_uses_scale_factor_formula() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    table = torch.randn(1, 1 + 14 * 14, 8)
    out = grid_pos_embed(table, (6, 6), mode="dino")
    assert out.shape == (1, 37, 8)
    torch.testing.assert_close(out[:, :1], table[:, :1])
    grid = table[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    # F.interpolate with a scale factor samples source x = (dst + 0.5) * 14 / 6.1 - 0.5
    expect = F.interpolate(grid, scale_factor=(6.1 / 14, 6.1 / 14), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 1:], expect.permute(0, 2, 3, 1).reshape(1, 36, 8))
    timm_style = grid_pos_embed(table, (6, 6), mode="timm")
    assert (timm_style - out).abs().max() > 1e-3  # antialiased size-based resampling differs
    non_square = grid_pos_embed(table, (6, 9), mode="dino")
    assert non_square.shape == (1, 1 + 54, 8)
