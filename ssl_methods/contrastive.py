"""InfoNCE in the MoCo v3 form, shared by SiT (v2) and MoCo v3.

C(q, k) = CrossEntropy(normalize(q) @ normalize(k).T / tau, labels = arange(N)) * 2 * tau.
The positives are the diagonal; the other N - 1 keys of the batch are negatives.
The 2*tau factor only rescales the loss (moco-v3#31). Under data parallelism the keys
of every rank are gathered (the reference's `concat_all_gather`), so each query is
contrasted with the negatives of the global batch and its positive sits at row
`rank * N + i`; with one process the gather is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(q: Tensor, k: Tensor, tau: float) -> Tensor:
    """q, k: (N, D); k is treated as a constant (detach it at the call site if needed)."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    k, offset = _gather_keys(k)
    logits = q @ k.t() / tau
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * tau)


def _gather_keys(k: Tensor) -> tuple[Tensor, int]:
    """(keys of all ranks concatenated in rank order, this rank's first row); no gradient
    flows through the gather, as in the reference (keys come from the momentum network)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return k, 0
    parts = [torch.empty_like(k) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, k.detach().contiguous())
    return torch.cat(parts), dist.get_rank() * k.shape[0]
