"""InfoNCE (MoCo v3 form) against a numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_methods.contrastive import info_nce


def _numpy_info_nce(q: np.ndarray, k: np.ndarray, tau: float) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(np.diag(logp)) * 2 * tau)


def test_info_nce_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    got = info_nce(torch.tensor(q), torch.tensor(k), 0.2).item()
    assert got == pytest.approx(_numpy_info_nce(q, k, 0.2), rel=1e-9)


def test_info_nce_is_low_for_matching_pairs() -> None:
    x = torch.eye(8)
    assert info_nce(x, x, 0.2).item() < info_nce(x, x.roll(1, 0), 0.2).item()
