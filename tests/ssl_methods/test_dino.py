"""DINO: loss and centering from the definition, schedules, multi-crop, teacher export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
from ssl_methods.dino import DINO, dino_loss


def _dino(backbone: str = "vit_tiny_demo", **cfg: object) -> DINO:
    torch.manual_seed(0)
    cfg.setdefault("drop_path_rate", 0.0)
    cfg.setdefault("n_local", 2)
    cfg.setdefault("out_dim", 64)
    return ssl_methods.create("dino", backbone=backbone, img_size=64, **cfg)  # type: ignore[return-value]


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_dino_loss_matches_explicit_pairs() -> None:
    rng = np.random.default_rng(0)
    b, k, n_crops = 3, 7, 4
    s = rng.normal(size=(n_crops * b, k))
    t = rng.normal(size=(2 * b, k))
    center = rng.normal(size=(1, k)) * 0.1
    tau_s, tau_t = 0.1, 0.05
    terms = []
    for i in range(2):
        q = _np_softmax((t[i * b : (i + 1) * b] - center) / tau_t)
        for v in range(n_crops):
            if v == i:
                continue
            logp = np.log(_np_softmax(s[v * b : (v + 1) * b] / tau_s))
            terms.append(np.mean(-(q * logp).sum(axis=1)))
    assert len(terms) == 2 * n_crops - 2
    got = dino_loss(torch.tensor(s), torch.tensor(t), torch.tensor(center), n_crops, tau_s, tau_t)
    assert got.item() == pytest.approx(float(np.mean(terms)), rel=1e-9)


def test_forward_routes_crops_and_updates_center() -> None:
    model = _dino()
    cap: dict[str, torch.Tensor] = {}
    h1 = model.head.register_forward_hook(lambda m, a, o: cap.__setitem__("s", o))
    h2 = model.teacher_head.register_forward_hook(lambda m, a, o: cap.__setitem__("t", o))
    sizes: list[tuple[int, ...]] = []
    h3 = model.encoder.patch_embed.proj.register_forward_pre_hook(lambda m, a: sizes.append(tuple(a[0].shape)))
    old_center = model.center.clone()
    loss, logs = model(torch.rand(3, 1, 64, 64))
    for h in (h1, h2, h3):
        h.remove()
    # one student pass per crop size: 2 global crops of 64 px, 2 local crops of 24 px (96/224*64 -> 24)
    assert sizes == [(6, 1, 64, 64), (6, 1, 24, 24)]
    assert cap["s"].shape == (12, 64) and cap["t"].shape == (6, 64)
    expect = dino_loss(cap["s"].detach(), cap["t"].detach(), old_center, 4, 0.1, 0.04)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    torch.testing.assert_close(model.center, 0.9 * old_center + 0.1 * cap["t"].detach().mean(0, keepdim=True))
    assert logs["teacher_temp"] == pytest.approx(0.04)


def test_schedules_and_last_layer_freeze() -> None:
    """Teacher temperature per epoch as DINOLoss's linspace(0.04, 0.07, W) then 0.07, with the
    reference's 30-of-300 warm-up epochs shortened in proportion (100 epochs -> 10); the last
    layer is frozen during epoch 0 only (--freeze_last_layer 1)."""
    model = _dino()
    model.set_epochs(100)
    assert model.teacher_temp_warmup_epochs() == 10
    schedule = np.concatenate([np.linspace(0.04, 0.07, 10), np.full(90, 0.07)])
    for epoch in (0, 1, 5, 9, 10, 50, 99):
        for within in (0.0, 0.5, 0.99):
            progress = (epoch + within) / 100
            assert model.teacher_temp(progress) == pytest.approx(schedule[epoch], abs=1e-12), (epoch, within)
    assert model.last_layer_frozen  # progress 0: epoch 0
    t_before = model.teacher.blocks[1].mlp.fc1.weight.detach().clone()
    with torch.no_grad():
        model.encoder.blocks[1].mlp.fc1.weight.mul_(2.0)
    model.after_step(0.005)
    m = 1 - (1 - 0.996) * (1 + math.cos(math.pi * 0.005)) / 2
    torch.testing.assert_close(
        model.teacher.blocks[1].mlp.fc1.weight, m * t_before + (1 - m) * model.encoder.blocks[1].mlp.fc1.weight
    )
    assert model.last_layer_frozen  # still epoch 0
    model.after_step(0.01)  # the first step of epoch 1
    assert not model.last_layer_frozen
    assert float(model.state_dict()["progress"]) == pytest.approx(0.01)  # resumable
    # without a run length the reference's 100 epochs apply: 10 warm-up epochs; 300 or more: 30
    assert _dino().teacher_temp_warmup_epochs() == 10
    model.set_epochs(800)
    assert model.teacher_temp_warmup_epochs() == 30


def test_last_layer_gradient_is_zero_in_epoch_0_and_not_after() -> None:
    """One optimiser for the whole run (as the loop builds it): the last layer gets no gradient
    and no update during epoch 0 (cancel_gradients_last_layer) and is trained from epoch 1."""
    model = _dino()
    model.set_epochs(2)
    opt = torch.optim.AdamW(model.param_groups(0.04), lr=1e-2)
    v = model.head.last_layer.parametrizations.weight.original1
    assert any(p is v for g in opt.param_groups for p in g["params"])
    before = v.detach().clone()
    other = model.head.mlp[0].weight.detach().clone()
    loss, _ = model(torch.rand(4, 1, 64, 64))
    opt.zero_grad()
    loss.backward()
    assert v.grad is None or not v.grad.any()
    opt.step()
    torch.testing.assert_close(v.detach(), before)
    assert not torch.equal(model.head.mlp[0].weight.detach(), other)
    model.after_step(0.25)
    assert model.last_layer_frozen  # 0.25 of a 2-epoch run: still epoch 0
    model.after_step(0.5)  # epoch 1
    loss, _ = model(torch.rand(4, 1, 64, 64))
    opt.zero_grad()
    loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(v.detach(), before)


@pytest.mark.parametrize("backbone", ["vit_tiny_demo", "resnet_tiny_demo"])
def test_teacher_export_loads(backbone: str, tmp_path: Path) -> None:
    model = _dino(backbone)
    loss, _ = model(torch.rand(2, 1, 64, 64))
    loss.backward()
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    sd = model.encoder_state_dict()
    first = next(iter(model.teacher.state_dict()))
    torch.testing.assert_close(sd[first], model.teacher.state_dict()[first])
    path = tmp_path / "dino.safetensors"
    save_file(sd, str(path))
    clf = backbones.create(backbone, num_classes=3, init=path)
    head = {"vit_tiny_demo": ["head.bias", "head.weight"], "resnet_tiny_demo": ["fc.bias", "fc.weight"]}[backbone]
    assert sorted(clf.bench_init.missing) == head


def test_swin_is_rejected_with_the_supported_list() -> None:
    with pytest.raises(ssl_methods.ConfigError, match="supported backbones: .*resnet50.*vit_small"):
        ssl_methods.create("dino", backbone="swin_base", img_size=224)


@pytest.mark.slow
def test_student_learns_to_match_the_teacher() -> None:
    """The DINO loss is H(teacher) + KL(teacher || student); on a tiny low-diversity set the
    centred teacher drifts towards uniform (H -> log K), so the learning signal is the KL."""
    torch.manual_seed(0)
    model = ssl_methods.create("dino", backbone="vit_tiny_demo", img_size=64, n_local=2, out_dim=256,
                               drop_path_rate=0.0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    data = torch.stack([0.5 + 0.4 * torch.sin(6.28 * (f * xx + g * yy)) for f, g in torch.rand(32, 2) * 3])[:, None]
    opt = torch.optim.AdamW(model.param_groups(0.04), lr=1e-3)
    kl = []
    for step in range(25):
        loss, logs = model(data[torch.randint(0, 32, (8,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(step / 25)
        assert logs["loss"] == pytest.approx(logs["teacher_entropy"] + logs["kl"])
        kl.append(logs["kl"])
    assert np.mean(kl[-5:]) < 0.5 * np.mean(kl[:5])
