"""Input-channel adaptation of a first convolution (RGB <-> grayscale).

Two conventions exist and they differ by exactly a factor of 3:

* `sum` (timm's `adapt_input_conv`): W1 = sum_c W_c. For a grey image g replicated
  to three channels the response is unchanged: conv(W1, g) = conv(W3, [g, g, g]).
  The inverse direction (1 -> 3) replicates and divides by 3, so that
  conv(W3, [g, g, g]) = conv(W1, g) again.
* `mean` (the Krones paper: "we averaged the weights of patch_embed.proj.weight";
  grayscale -> RGB "duplicated the layer"): W1 = mean_c W_c, so
  conv(W1, g) = conv(W3, [g, g, g] / 3), i.e. the pre-bias response is one third of
  the RGB model's. The inverse replicates without scaling.

In both conventions reducing after expanding returns the original kernel. The bias
is never touched. Only 3 <-> 1 and n -> n are defined; other channel counts raise.
"""

from __future__ import annotations

from typing import Literal

import torch

ChansAdapt = Literal["mean", "sum"]
CHANS_ADAPT_MODES: tuple[str, ...] = ("mean", "sum")


def adapt_conv_weight(weight: torch.Tensor, in_chans: int, mode: ChansAdapt = "mean") -> torch.Tensor:
    """Return `weight` (O, I, kh, kw) adapted to `in_chans` input channels.

    `mode` is `mean` or `sum` (see the module docstring for the exact relations).
    The dtype is preserved; the computation runs in float32.
    """
    if mode not in CHANS_ADAPT_MODES:
        raise ValueError(f"chans_adapt must be one of {CHANS_ADAPT_MODES}, got {mode!r}")
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D conv weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    src = weight.shape[1]
    if src == in_chans:
        return weight
    w = weight.float()
    if in_chans == 1:
        out = w.mean(dim=1, keepdim=True) if mode == "mean" else w.sum(dim=1, keepdim=True)
    elif src == 1:
        out = w.repeat(1, in_chans, 1, 1)
        if mode == "sum":
            out = out / in_chans
    else:
        raise ValueError(
            f"cannot adapt a first conv with {src} input channels to {in_chans}; "
            "only n -> 1 and 1 -> n are defined"
        )
    return out.to(weight.dtype)
