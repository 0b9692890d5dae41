"""SimMIM: aligned block masks, mask-token replacement, L1 from the definition, export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
from ssl_methods.simmim import SimMIM, block_mask


def _simmim(backbone: str = "vit_tiny_demo", img_size: int = 64, in_chans: int = 1, **cfg: object) -> SimMIM:
    torch.manual_seed(0)
    cfg.setdefault("augment", False)
    return ssl_methods.create(  # type: ignore[return-value]
        "simmim", backbone=backbone, img_size=img_size, in_chans=in_chans, **cfg
    )


def test_block_mask_count_and_32px_alignment() -> None:
    torch.manual_seed(0)
    # ViT-S/16 at 224: 7x7 cells of 32 px, each 2x2 tokens
    m = block_mask(8, (7, 7), 0.6, 2, torch.device("cpu"))
    assert m.shape == (8, 14, 14)
    assert torch.all(m.sum(dim=(1, 2)) == 4 * math.ceil(49 * 0.6))  # 120 tokens
    cells = m.reshape(8, 7, 2, 7, 2)
    assert torch.all(cells.amin(dim=(2, 4)) == cells.amax(dim=(2, 4)))  # each 2x2 cell uniform
    assert len({tuple(r.flatten().tolist()) for r in m}) == 8


def test_pixel_mask_is_aligned_to_32px_cells_in_forward() -> None:
    model = _simmim(img_size=128)
    captured: dict[str, torch.Tensor] = {}
    orig = model.encode

    def spy(images: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        captured["m"] = token_mask
        return orig(images, token_mask)

    model.encode = spy  # type: ignore[method-assign]
    model(torch.rand(2, 1, 128, 128))
    px = captured["m"].repeat_interleave(8, 1).repeat_interleave(8, 2)  # 8-px patches -> pixels
    blocks = px.reshape(2, 4, 32, 4, 32)
    assert torch.all(blocks.amin(dim=(2, 4)) == blocks.amax(dim=(2, 4)))
    assert torch.all(captured["m"].sum(dim=(1, 2)) == 16 * math.ceil(16 * 0.6))  # 4x4 tokens per cell


@pytest.mark.parametrize("in_chans", [1, 3])
def test_loss_equals_definition_and_is_not_tripled(in_chans: int) -> None:
    model = _simmim(in_chans=in_chans)
    out: dict[str, torch.Tensor] = {}
    h = model.decoder.register_forward_hook(lambda m, i, o: out.__setitem__("rec", o))
    images = torch.rand(3, in_chans, 64, 64)
    torch.manual_seed(11)
    loss, _ = model(images)
    h.remove()
    torch.manual_seed(11)
    order = torch.argsort(torch.rand(3, 4), dim=1)[:, :3]  # ceil(4 * 0.6) = 3 of 2x2 cells
    rec = out["rec"].detach().double().numpy()
    x = images.double().numpy()
    diffs = []
    for n in range(3):
        for cell in order[n].tolist():
            r, c = divmod(cell, 2)
            sl = (n, slice(None), slice(r * 32, r * 32 + 32), slice(c * 32, c * 32 + 32))
            diffs.append(np.abs(rec[sl] - x[sl]).reshape(-1))
    expect = float(np.concatenate(diffs).mean())  # mean over masked pixel x channel elements
    assert loss.item() == pytest.approx(expect, rel=1e-4)


def test_masked_content_is_replaced_and_visible_errors_do_not_count() -> None:
    model = _simmim().eval()
    images = torch.rand(2, 1, 64, 64)
    out: dict[str, torch.Tensor] = {}
    h = model.decoder.register_forward_hook(lambda m, i, o: out.__setitem__("rec", o.clone()))
    torch.manual_seed(4)
    base, _ = model(images)
    rec0 = out["rec"]
    torch.manual_seed(4)
    order = torch.argsort(torch.rand(2, 4), dim=1)[:, :3]
    pix = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    for n in range(2):
        for cell in order[n].tolist():
            r, c = divmod(cell, 2)
            pix[n, :, r * 32 : r * 32 + 32, c * 32 : c * 32 + 32] = True
    # scrambling the masked pixels changes nothing the encoder sees
    scrambled = torch.where(pix, torch.rand_like(images), images)
    torch.manual_seed(4)
    model(scrambled)
    torch.testing.assert_close(out["rec"], rec0)
    h.remove()
    # reconstruction errors on visible pixels are not in the loss
    h = model.decoder.register_forward_hook(lambda m, i, o: torch.where(pix, o, o + 5.0))
    torch.manual_seed(4)
    loss, _ = model(images)
    h.remove()
    assert loss.item() == pytest.approx(base.item(), rel=1e-6)


def test_swin_backbone_runs_and_exports(tmp_path: Path) -> None:
    model = _simmim(backbone="swin_tiny_demo")
    assert model.stride == 32
    loss, logs = model(torch.rand(2, 1, 64, 64))
    loss.backward()
    assert logs["mask_ratio"] == pytest.approx(0.75)
    assert model.mask_token.grad is not None
    path = tmp_path / "swin.safetensors"
    save_file(model.encoder_state_dict(), str(path))
    clf = backbones.create("swin_tiny_demo", num_classes=14, init=path)
    assert sorted(clf.bench_init.missing) == ["head.fc.bias", "head.fc.weight"]
    no_decay = model.no_weight_decay_names()
    assert "mask_token" in no_decay and any("relative_position_bias_table" in n for n in no_decay)


def test_vit_export_loads_with_only_head_missing(tmp_path: Path) -> None:
    model = _simmim()
    path = tmp_path / "vit.safetensors"
    save_file(model.encoder_state_dict(), str(path))
    clf = backbones.create("vit_tiny_demo", num_classes=14, init=path)
    assert sorted(clf.bench_init.missing) == ["head.bias", "head.weight"]
    groups = model.param_groups(0.05)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.encoder.pos_embed) in no_decay and id(model.encoder.cls_token) in no_decay
    assert id(model.mask_token) not in no_decay  # decayed for ViT, as in the reference


def test_bad_geometry_is_a_clear_error() -> None:
    with pytest.raises(ssl_methods.ConfigError, match="mask_patch_size 12 must be a multiple"):
        ssl_methods.create("simmim", backbone="vit_tiny_demo", img_size=64, mask_patch_size=12)
    model = _simmim()
    with pytest.raises(ValueError, match="multiple of the mask cell"):
        model(torch.rand(1, 1, 48, 48))
