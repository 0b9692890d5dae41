"""Channel adaptation: the exact relations of `mean` and `sum` on a real patch embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import backbones
from backbones.channels import adapt_conv_weight


@pytest.fixture()
def rgb_patch_embed() -> torch.nn.Conv2d:
    torch.manual_seed(0)
    model = backbones.create("vit_tiny_demo", in_chans=3)
    conv = model.patch_embed.proj
    with torch.no_grad():
        conv.bias.normal_()  # a non-zero bias shows it is left untouched
    return conv


def _conv(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, bias, stride=weight.shape[-1])


def test_mean_equals_rgb_response_on_grey_divided_by_three(rgb_patch_embed: torch.nn.Conv2d) -> None:
    # conv(mean_c W_c, g) + b = sum_c W_c * g / 3 + b = conv(W, [g, g, g] / 3) + b
    w, b = rgb_patch_embed.weight.detach(), rgb_patch_embed.bias.detach()
    grey = torch.rand(2, 1, 64, 64)
    w1 = adapt_conv_weight(w, 1, "mean")
    assert w1.shape == (w.shape[0], 1, 8, 8)
    torch.testing.assert_close(_conv(w1, b, grey), _conv(w, b, grey.repeat(1, 3, 1, 1) / 3), rtol=1e-5, atol=1e-5)
    # and the pre-bias response is one third of the RGB model's on replicated grey
    torch.testing.assert_close(
        _conv(w1, None, grey) * 3, _conv(w, None, grey.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5
    )


def test_sum_equals_rgb_response_on_replicated_grey(rgb_patch_embed: torch.nn.Conv2d) -> None:
    w, b = rgb_patch_embed.weight.detach(), rgb_patch_embed.bias.detach()
    grey = torch.rand(2, 1, 64, 64)
    w1 = adapt_conv_weight(w, 1, "sum")
    torch.testing.assert_close(_conv(w1, b, grey), _conv(w, b, grey.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_expand_then_reduce_is_identity(mode: str) -> None:
    w1 = torch.randn(5, 1, 4, 4)
    w3 = adapt_conv_weight(w1, 3, mode)
    assert w3.shape == (5, 3, 4, 4)
    torch.testing.assert_close(adapt_conv_weight(w3, 1, mode), w1)
    grey = torch.rand(1, 1, 8, 8)
    if mode == "sum":  # the 3-channel model sees replicated grey exactly like the 1-channel one
        torch.testing.assert_close(_conv(w3, None, grey.repeat(1, 3, 1, 1)), _conv(w1, None, grey))
    else:  # Krones "duplicate": each channel carries the full kernel
        for c in range(3):
            torch.testing.assert_close(w3[:, c : c + 1], w1)


def test_unsupported_adaptation_raises() -> None:
    with pytest.raises(ValueError, match="chans_adapt"):
        adapt_conv_weight(torch.randn(2, 3, 4, 4), 1, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 input channels to 2"):
        adapt_conv_weight(torch.randn(2, 3, 4, 4), 2)
