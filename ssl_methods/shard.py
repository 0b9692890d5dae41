"""Per-sample random draws that do not depend on how a batch is split across processes.

Why: under data-parallel training each rank holds rows [offset, offset + b) of a global
batch of `total` images. If every rank drew its masks and crop parameters for its own
`b` rows, sample i would get different randomness with 1 or 2 processes, and a 2-process
run could never reproduce a 1-process run. Instead, inside `sample_rows(...)`, each
per-sample draw is made for the *global* batch on every rank from the same (seeded)
generator and the rank keeps its rows: sample i gets the same draw whatever the world
size, and the generator advances identically on every rank. The cost is drawing
`world_size` times more random numbers (masks and crop boxes: negligible next to a step).

Outside `sample_rows` (one process, or code that never enters it) every helper is the
plain torch draw, so single-process results are bit-identical to calling torch directly.
A draw whose leading size is not the rank's batch (e.g. views concatenated along the
batch) also falls back to the plain draw: correct, but not split-invariant.
`split_invariant_drop_path` does the same for timm's stochastic depth.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from timm.layers import DropPath
from torch import Tensor

# (offset, local, total) of the batch being processed, or None outside `sample_rows`
_rows: tuple[int, int, int] | None = None


@contextmanager
def sample_rows(offset: int, local: int, total: int) -> Iterator[None]:
    """Within this block, per-sample draws of `local` rows are rows [offset, offset+local) of a `total` draw."""
    global _rows
    if not (0 <= offset and offset + local <= total):
        raise ValueError(f"rows [{offset}, {offset + local}) do not fit in a global batch of {total}")
    previous, _rows = _rows, (int(offset), int(local), int(total))
    try:
        yield
    finally:
        _rows = previous


def _global(b: int) -> tuple[int, slice] | None:
    if _rows is None or _rows[1] == _rows[2] or b != _rows[1]:
        return None
    offset, local, total = _rows
    return total, slice(offset, offset + local)


def rand(b: int, *shape: int, device: torch.device | str | None = None) -> Tensor:
    """`torch.rand(b, *shape)`, split-invariant over the batch dimension."""
    g = _global(b)
    if g is None:
        return torch.rand(b, *shape, device=device)
    return torch.rand(g[0], *shape, device=device)[g[1]]


def uniform(b: int, low: float, high: float, *shape: int, device: torch.device | str | None = None) -> Tensor:
    """`torch.empty(b, *shape).uniform_(low, high)`, split-invariant."""
    g = _global(b)
    if g is None:
        return torch.empty(b, *shape, device=device).uniform_(low, high)
    return torch.empty(g[0], *shape, device=device).uniform_(low, high)[g[1]]


def drop_path(x: Tensor, drop_prob: float, training: bool, scale_by_keep: bool = True) -> Tensor:
    """timm's `drop_path` (stochastic depth) with its per-sample keep mask drawn split-invariantly.

    Outside `sample_rows` (or for a batch that is not the rank's share) this is timm's
    function call for call: the same `bernoulli_` draw on the same generator.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    tail = (1,) * (x.ndim - 1)
    g = _global(x.shape[0])
    if g is None:
        mask = x.new_empty((x.shape[0], *tail)).bernoulli_(keep)
    else:
        mask = x.new_empty((g[0], *tail)).bernoulli_(keep)[g[1]]
    if keep > 0.0 and scale_by_keep:
        mask.div_(keep)
    return x * mask


def split_invariant_drop_path(module: torch.nn.Module) -> int:
    """Make every timm `DropPath` inside `module` draw through `drop_path` above; returns how many.

    The modules keep their class's state (drop_prob, scale_by_keep) and only change how
    the mask is drawn, so single-process training is unchanged bit for bit.
    """
    n = 0
    for m in module.modules():
        if type(m) is DropPath:
            m.__class__ = SplitInvariantDropPath
            n += 1
    return n


class SplitInvariantDropPath(DropPath):
    """timm's DropPath drawing its mask with `drop_path` (split-invariant under `sample_rows`)."""

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)
