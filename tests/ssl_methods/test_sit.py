"""SiT v2: contrastive + reconstruction from the definition, views routing, EMA, export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
import ssl_methods.sit as sit_mod
from ssl_methods.sit import SiT


def _sit(**cfg: object) -> SiT:
    torch.manual_seed(0)
    cfg.setdefault("augment", False)
    cfg.setdefault("drop_path_rate", 0.0)
    return ssl_methods.create("sit", backbone="vit_tiny_demo", img_size=64, **cfg)  # type: ignore[return-value]


def _np_info_nce(q: np.ndarray, k: np.ndarray, tau: float) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
        1, keepdims=True
    )
    return float(-np.mean(np.diag(logp)) * 2 * tau)


def test_total_loss_from_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _sit(lmbda=2.5)
    seen: dict[str, object] = {}
    real = sit_mod.gmml_corrupt

    def wrapped(clean: torch.Tensor, **kw: object):  # type: ignore[no-untyped-def]
        out = real(clean, **kw)
        seen["clean"], seen["out"] = clean, out
        return out

    monkeypatch.setattr(sit_mod, "gmml_corrupt", wrapped)
    cap: dict[str, torch.Tensor] = {}
    hooks = [
        model.cls_head.register_forward_hook(lambda m, a, o: cap.__setitem__("s", o)),
        model.teacher_cls_head.register_forward_hook(lambda m, a, o: cap.__setitem__("t", o)),
        model.rec_head.register_forward_hook(lambda m, a, o: cap.__setitem__("rec", o)),
        model.teacher.patch_embed.proj.register_forward_pre_hook(lambda m, a: cap.__setitem__("t_in", a[0])),
        model.encoder.patch_embed.proj.register_forward_pre_hook(lambda m, a: cap.__setitem__("s_in", a[0])),
    ]
    images = torch.rand(4, 1, 64, 64)
    loss, logs = model(images)
    for h in hooks:
        h.remove()
    clean, out = seen["clean"], seen["out"]
    assert torch.equal(out.partner // 4, torch.arange(8) // 4)  # replace partners from the same view
    # the teacher sees the clean views, the student the corrupted ones
    assert torch.equal(cap["t_in"], clean) and torch.equal(cap["s_in"], out.corrupted)
    s = cap["s"].detach().double().numpy()
    t = cap["t"].detach().double().numpy()
    c = _np_info_nce(s[:4], t[4:], 0.2) + _np_info_nce(s[4:], t[:4], 0.2)
    sel = out.mask.bool().expand_as(clean).numpy()
    r = float(np.abs(cap["rec"].detach().double().numpy() - clean.double().numpy())[sel].mean())
    assert logs["contrastive"] == pytest.approx(c, rel=1e-5)
    assert logs["reconstruction"] == pytest.approx(r, rel=1e-5)
    assert loss.item() == pytest.approx(c + 2.5 * r, rel=1e-5)


def test_teacher_ema_matches_formula() -> None:
    model = _sit()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    t_before = model.teacher.blocks[0].attn.qkv.weight.detach().clone()
    s_w = model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    h_before = model.teacher_cls_head[0].weight.detach().clone()
    model.after_step(0.3)
    m = 1 - (1 - 0.996) * (1 + math.cos(math.pi * 0.3)) / 2
    torch.testing.assert_close(model.teacher.blocks[0].attn.qkv.weight, m * t_before + (1 - m) * s_w)
    torch.testing.assert_close(model.teacher_cls_head[0].weight, m * h_before + (1 - m) * model.cls_head[0].weight)
    assert model.momentum == pytest.approx(m)
    model.after_step(1.0)
    assert model.momentum == pytest.approx(1.0)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    trainable = {id(p) for g in model.param_groups(0.04) for p in g["params"]}
    assert not trainable & {id(p) for p in model.teacher.parameters()}


def test_export_teacher_or_student(tmp_path: Path) -> None:
    model = _sit()
    with torch.no_grad():
        model.encoder.cls_token.add_(1.0)
    sd = model.encoder_state_dict()
    torch.testing.assert_close(sd["cls_token"], model.teacher.cls_token.detach())
    path = tmp_path / "sit.safetensors"
    save_file(sd, str(path))
    clf = backbones.create("vit_tiny_demo", num_classes=14, init=path)
    assert sorted(clf.bench_init.missing) == ["head.bias", "head.weight"]
    student = _sit(export="student")
    torch.testing.assert_close(student.encoder_state_dict()["cls_token"], student.encoder.cls_token.detach())
    with pytest.raises(ssl_methods.ConfigError, match="export"):
        _sit(export="ema")
