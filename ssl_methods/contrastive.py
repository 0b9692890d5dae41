"""InfoNCE in the MoCo v3 form, shared by SiT (v2) and MoCo v3.

C(q, k) = CrossEntropy(normalize(q) @ normalize(k).T / tau, labels = arange(N)) * 2 * tau.
The positives are the diagonal; the other N - 1 keys of the batch are negatives.
The 2*tau factor only rescales the loss (moco-v3#31). On one device the key
all-gather of the reference is the identity, so this needs no process group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(q: Tensor, k: Tensor, tau: float) -> Tensor:
    """q, k: (N, D); k is treated as a constant (detach it at the call site if needed)."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = q @ k.t() / tau
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2 * tau)
