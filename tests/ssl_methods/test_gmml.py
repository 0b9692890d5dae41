"""GMML: block averaging against timm, masked L1 from the definition, export, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
import ssl_methods.gmml as gmml_mod
from ssl_methods.corruption import Corruption
from ssl_methods.gmml import GMML, default_recons_blocks


def _gmml(**cfg: object) -> GMML:
    torch.manual_seed(0)
    cfg.setdefault("augment", False)
    return ssl_methods.create("gmml", backbone="vit_tiny_demo", img_size=64, **cfg)  # type: ignore[return-value]


def test_default_recons_blocks() -> None:
    assert default_recons_blocks(12) == (6, 8, 10, 12)
    assert default_recons_blocks(4) == (2, 3, 4)


def test_features_average_the_chosen_blocks_like_timm_intermediates() -> None:
    model = _gmml(recons_blocks=(2, 4)).eval()
    x = torch.rand(2, 1, 64, 64)
    captured: dict[str, torch.Tensor] = {}
    h = model.rec_head.mlp.register_forward_pre_hook(lambda m, a: captured.__setitem__("feats", a[0]))
    model.reconstruct(x)
    h.remove()
    enc = model.encoder
    inter = enc.forward_intermediates(x, indices=[1, 3], norm=False, output_fmt="NLC", return_prefix_tokens=False,
                                      intermediates_only=True)
    expect = enc.norm(torch.stack(inter).mean(0))
    torch.testing.assert_close(captured["feats"], expect, rtol=1e-5, atol=1e-5)


def _capture_corruption(monkeypatch: pytest.MonkeyPatch, module: object) -> dict[str, object]:
    seen: dict[str, object] = {}
    real = module.gmml_corrupt  # type: ignore[attr-defined]

    def wrapped(clean: torch.Tensor, **kw: object) -> Corruption:
        out = real(clean, **kw)
        seen["clean"], seen["out"] = clean, out
        return out

    monkeypatch.setattr(module, "gmml_corrupt", wrapped)
    return seen


def test_loss_is_l1_over_corrupted_pixels_only(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _gmml(drop_path_rate=0.0)
    seen = _capture_corruption(monkeypatch, gmml_mod)
    rec: dict[str, torch.Tensor] = {}
    h = model.rec_head.register_forward_hook(lambda m, a, o: rec.__setitem__("x", o))
    images = torch.rand(3, 1, 64, 64)
    loss, logs = model(images)
    h.remove()
    clean = seen["clean"]
    out = seen["out"]
    assert clean.shape == (6, 1, 64, 64)  # two views, view-major
    assert torch.equal(out.partner // 3, torch.arange(6) // 3)  # replace partners from the same view
    sel = out.mask.bool().expand_as(clean).numpy()
    diff = np.abs(rec["x"].detach().double().numpy() - clean.double().numpy())
    assert loss.item() == pytest.approx(float(diff[sel].mean()), rel=1e-5)
    # errors on clean pixels do not count
    m = out.mask
    h = model.rec_head.register_forward_hook(lambda mod, a, o: o + 7.0 * (1 - m))
    torch.manual_seed(0)
    monkeypatch.setattr(gmml_mod, "gmml_corrupt", lambda clean, **kw: out)
    loss2, _ = model(images)
    h.remove()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_export_loads_with_only_head_missing(tmp_path: Path) -> None:
    model = _gmml()
    path = tmp_path / "gmml.safetensors"
    save_file(model.encoder_state_dict(), str(path))
    clf = backbones.create("vit_tiny_demo", num_classes=14, init=path)
    assert sorted(clf.bench_init.missing) == ["head.bias", "head.weight"]
