"""MoCo v3: symmetric InfoNCE from the definition, momentum network, backbones, export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
from ssl_methods.mocov3 import MoCoV3


def _moco(backbone: str = "vit_tiny_demo", **cfg: object) -> MoCoV3:
    torch.manual_seed(0)
    return ssl_methods.create("mocov3", backbone=backbone, img_size=64, **cfg)  # type: ignore[return-value]


def _np_c(q: np.ndarray, k: np.ndarray, tau: float) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    return float(-np.mean(np.diag(logp)) * 2 * tau)


def test_symmetric_loss_from_the_definition() -> None:
    model = _moco()
    qs: list[torch.Tensor] = []
    ks: list[torch.Tensor] = []
    h1 = model.predictor.register_forward_hook(lambda m, a, o: qs.append(o))
    h2 = model.momentum_projector.register_forward_hook(lambda m, a, o: ks.append(o))
    loss, _ = model(torch.rand(5, 1, 64, 64))
    h1.remove()
    h2.remove()
    q1, q2 = (q.detach().double().numpy() for q in qs)
    k1, k2 = (k.detach().double().numpy() for k in ks)
    expect = _np_c(q1, k2, 0.2) + _np_c(q2, k1, 0.2)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert not ks[0].requires_grad


def test_momentum_update_formula_and_groups() -> None:
    model = _moco()
    with torch.no_grad():
        for p in model.projector.parameters():
            p.add_(1.0)
    before = model.momentum_projector[0].weight.detach().clone()
    model.after_step(0.4)
    m = 1 - (1 + math.cos(math.pi * 0.4)) / 2 * (1 - 0.99)
    torch.testing.assert_close(model.momentum_projector[0].weight, m * before + (1 - m) * model.projector[0].weight)
    groups = model.param_groups(0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1  # every parameter decayed
    ids = {id(p) for p in groups[0]["params"]}
    assert ids == {id(p) for n, p in model.named_parameters() if not n.startswith("momentum_") and p.requires_grad}
    # the frozen random patch projection (--stop-grad-conv1) is the only trainable-looking tensor left out
    left_out = {n for n, p in model.named_parameters() if not n.startswith("momentum_") and id(p) not in ids}
    assert left_out == {"encoder.patch_embed.proj.weight", "encoder.patch_embed.proj.bias"}


def test_vit_patch_projection_gets_no_gradient_and_stays_fixed() -> None:
    """--stop-grad-conv1 (every reference ViT command): the patch projection keeps its random
    init through training, while the blocks after it learn."""
    model = _moco()
    proj = model.encoder.patch_embed.proj
    assert not proj.weight.requires_grad and not proj.bias.requires_grad
    before = proj.weight.detach().clone()
    block = model.encoder.blocks[0].attn.qkv.weight
    block_before = block.detach().clone()
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    for _ in range(2):
        loss, _ = model(torch.rand(4, 1, 64, 64))
        opt.zero_grad()
        loss.backward()
        assert proj.weight.grad is None and block.grad is not None and block.grad.abs().sum() > 0
        opt.step()
        model.after_step(0.5)
    torch.testing.assert_close(proj.weight.detach(), before, rtol=0, atol=0)
    torch.testing.assert_close(model.momentum_encoder.patch_embed.proj.weight, before, rtol=0, atol=1e-7)  # EMA rounding
    assert not torch.equal(block.detach(), block_before)
    # opting out trains it
    free = _moco(stop_grad_patch=False)
    assert free.encoder.patch_embed.proj.weight.requires_grad


def test_resnet_heads_follow_moco_resnet() -> None:
    """MoCo_ResNet: projector 2 layers (Linear-BN-ReLU-Linear-BN), predictor without the final BN;
    temperature 1.0 and crop-min 0.2 (the reference's ResNet-50 defaults)."""
    model = _moco("resnet_tiny_demo")
    kinds = [type(m).__name__ for m in model.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not model.projector[-1].affine
    assert [type(m).__name__ for m in model.predictor] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert model.temperature == 1.0 and model.crop_scale == (0.2, 1.0)
    vit = _moco()
    assert [type(m).__name__ for m in vit.projector].count("Linear") == 3
    assert type(vit.predictor[-1]).__name__ == "BatchNorm1d"
    assert vit.temperature == 0.2 and vit.crop_scale == (0.08, 1.0)


@pytest.mark.parametrize(("backbone", "head"), [
    ("vit_tiny_demo", ["head.bias", "head.weight"]),
    ("resnet_tiny_demo", ["fc.bias", "fc.weight"]),
    ("swin_tiny_demo", ["head.fc.bias", "head.fc.weight"]),
])
def test_backbones_run_and_export(backbone: str, head: list[str], tmp_path: Path) -> None:
    model = _moco(backbone)
    loss, _ = model(torch.rand(4, 1, 64, 64))
    loss.backward()
    path = tmp_path / "moco.safetensors"
    save_file(model.encoder_state_dict(), str(path))
    clf = backbones.create(backbone, num_classes=2, init=path)
    assert sorted(clf.bench_init.missing) == head


def test_batch_of_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        _moco()(torch.rand(1, 1, 64, 64))
