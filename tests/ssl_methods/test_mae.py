"""MAE: masking, loss from the definition, export, variable grids, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import backbones
import ssl_methods
from ssl_methods.mae import MAE, masked_mse, random_masking


def _mae(**cfg: object) -> MAE:
    torch.manual_seed(0)
    cfg.setdefault("augment", False)
    return ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=64, **cfg)  # type: ignore[return-value]


def test_masking_ratio_and_per_sample_independence() -> None:
    torch.manual_seed(0)
    m = random_masking(16, 196, 0.75, None, torch.device("cpu"))
    assert m.mask.shape == (16, 196)
    assert torch.all(m.mask.sum(1) == 147)  # int(196 * 0.25) = 49 kept
    assert m.ids_keep.shape == (16, 49) and bool(m.keep_real.all())
    # kept ids are exactly the unmasked positions
    for i in range(16):
        assert set(m.ids_keep[i].tolist()) == set(torch.nonzero(m.mask[i] == 0).flatten().tolist())
    # different samples get different masks; ids_restore inverts the shuffle
    assert len({tuple(row.tolist()) for row in m.mask.int()}) == 16
    noise_order = torch.argsort(m.ids_restore, dim=1)
    torch.testing.assert_close(torch.gather(m.ids_restore, 1, noise_order), torch.arange(196).expand(16, -1))


def test_masking_is_uniform_over_positions() -> None:
    torch.manual_seed(1)
    m = random_masking(4000, 16, 0.75, None, torch.device("cpu"))
    freq = m.mask.mean(0)
    assert torch.all((freq - 0.75).abs() < 0.03)


def test_masking_with_padding_keeps_only_valid_tokens() -> None:
    torch.manual_seed(2)
    valid = torch.ones(3, 64, dtype=torch.bool)
    valid[1, 40:] = False
    valid[2, 10:] = False
    m = random_masking(3, 64, 0.75, valid, torch.device("cpu"))
    kept_counts = [16, 10, 2]
    assert m.ids_keep.shape == (3, 16)
    for i, k in enumerate(kept_counts):
        assert int(m.keep_real[i].sum()) == k
        real = m.ids_keep[i][m.keep_real[i]]
        assert bool(valid[i, real].all())  # padded tokens never visible
        assert int((m.mask[i] == 0).sum()) == k
    assert bool((m.mask[~valid] == 1).all())


def _reference_loss(images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, norm_pix: bool) -> float:
    """Loss from the MAE definition, with loops in float64 numpy."""
    x = images.double().numpy()
    b, c, h, w = x.shape
    pr = pred.detach().double().numpy()
    total, count = 0.0, 0
    for n in range(b):
        for t in range(mask.shape[1]):
            if mask[n, t] != 1:
                continue
            r, col = divmod(t, w // p)
            patch = x[n, :, r * p : (r + 1) * p, col * p : (col + 1) * p]  # (c, p, p)
            target = patch.transpose(1, 2, 0).reshape(-1)  # (row, col, channel), channel fastest
            if norm_pix:
                target = (target - target.mean()) / np.sqrt(target.var(ddof=1) + 1e-6)
            total += float(np.mean((pr[n, t] - target) ** 2))
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_loss_equals_definition(norm_pix: bool, in_chans: int) -> None:
    model = _mae(norm_pix_loss=norm_pix) if in_chans == 1 else None
    if model is None:
        torch.manual_seed(0)
        model = ssl_methods.create(
            "mae", backbone="vit_tiny_demo", img_size=64, in_chans=3, augment=False, norm_pix_loss=norm_pix
        )
    captured: dict[str, torch.Tensor] = {}
    hook = model.decoder_pred.register_forward_hook(lambda mod, inp, out: captured.__setitem__("pred", out))
    images = torch.rand(3, in_chans, 64, 64)
    torch.manual_seed(123)
    loss, logs = model(images)
    hook.remove()
    torch.manual_seed(123)
    noise = torch.rand(3, 64)  # the forward's first RNG call
    keep = torch.argsort(noise, dim=1)[:, :16]
    mask = torch.ones(3, 64)
    mask.scatter_(1, keep, 0.0)
    expect = _reference_loss(images, captured["pred"][:, 1:], mask, 8, norm_pix)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert logs["mask_ratio"] == pytest.approx(0.75)


def test_unmasked_predictions_do_not_change_the_loss() -> None:
    model = _mae()
    images = torch.rand(2, 1, 64, 64)
    torch.manual_seed(5)
    noise = torch.rand(2, 64)
    keep = torch.argsort(noise, dim=1)[:, :16]
    visible = torch.zeros(2, 64, dtype=torch.bool)
    visible.scatter_(1, keep, True)

    def run(offset_where: torch.Tensor | None) -> float:
        def hook(mod: torch.nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            if offset_where is None:
                return out
            out = out.clone()
            out[:, 1:][offset_where] += 100.0
            return out

        h = model.decoder_pred.register_forward_hook(hook)
        torch.manual_seed(5)
        loss, _ = model(images)
        h.remove()
        return loss.item()

    base = run(None)
    assert run(visible) == pytest.approx(base, rel=1e-6)
    assert run(~visible) > base + 100


def test_norm_pix_uses_unbiased_variance() -> None:
    torch.manual_seed(0)
    target = torch.rand(1, 1, 4)
    pred = torch.zeros(1, 1, 4)
    weight = torch.ones(1, 1)
    t = target.flatten().numpy().astype(np.float64)
    unbiased = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
    biased = (t - t.mean()) / np.sqrt(t.var(ddof=0) + 1e-6)
    got = masked_mse(pred, target, weight, norm_pix=True).item()
    assert got == pytest.approx(float(np.mean(unbiased**2)), rel=1e-5)
    assert abs(got - float(np.mean(biased**2))) > 1e-2  # 4-element patches: (n-1)/n = 0.75


def test_encoder_export_loads_with_only_head_missing(tmp_path: Path) -> None:
    model = _mae()
    sd = model.encoder_state_dict()
    ref_keys = set(backbones.create("vit_tiny_demo", num_classes=0, img_size=64, in_chans=1).state_dict())
    assert set(sd) == ref_keys
    path = tmp_path / "mae_encoder.safetensors"
    save_file(sd, str(path))
    clf = backbones.create("vit_tiny_demo", num_classes=14, img_size=64, in_chans=1, init=path)
    assert sorted(clf.bench_init.missing) == ["head.bias", "head.weight"]
    assert clf.bench_init.unexpected == []
    for k, v in sd.items():
        torch.testing.assert_close(clf.state_dict()[k], v)
    torch.save(sd, tmp_path / "mae_encoder.pth")
    clf2 = backbones.create("vit_tiny_demo", num_classes=14, init=tmp_path / "mae_encoder.pth")
    torch.testing.assert_close(clf2.pos_embed, clf.pos_embed)


def test_encoder_pos_embed_is_fixed_sincos_and_frozen() -> None:
    from ssl_methods.patches import sincos_2d

    model = _mae()
    torch.testing.assert_close(model.encoder.pos_embed.detach(), sincos_2d(96, (8, 8)))
    assert not model.encoder.pos_embed.requires_grad
    groups = model.param_groups(0.05)
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(model.encoder.pos_embed) not in ids and id(model.decoder_pos_embed) not in ids
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.encoder.blocks[0].attn.qkv.bias) in no_decay
    assert id(model.mask_token) not in no_decay  # 3-D tokens are decayed, as in the reference


def test_padded_tokens_never_influence_the_loss() -> None:
    model = _mae()
    images = torch.rand(2, 1, 64, 80)  # 8x10 grid, non-square
    valid = torch.ones(2, 8, 10, dtype=torch.bool)
    valid[0, :, 7:] = False  # image 0 is 8x7 tokens, padded on the right
    valid[1, 6:, :] = False  # image 1 is 6x10 tokens, padded at the bottom
    flat = valid.reshape(2, 80)
    pix = valid.repeat_interleave(8, 1).repeat_interleave(8, 2).unsqueeze(1)
    torch.manual_seed(9)
    loss_a, logs = model(images, valid=flat)
    scrambled = torch.where(pix, images, torch.rand_like(images) * 50)
    torch.manual_seed(9)
    loss_b, _ = model(scrambled, valid=flat)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)
    assert logs["mask_ratio"] == pytest.approx(1 - (int(56 * 0.25) + int(60 * 0.25)) / 116)
    loss_a.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_unknown_config_key_lists_valid_keys() -> None:
    with pytest.raises(ssl_methods.ConfigError, match="valid keys: .*mask_ratio"):
        ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=64, mask_ration=0.5)


def test_padded_and_filler_tokens_are_not_attended() -> None:
    """Perturbing the padded decoder tokens / the encoder filler slots leaves the loss unchanged."""
    model = _mae()
    images = torch.rand(2, 1, 64, 64)
    valid = torch.ones(2, 64, dtype=torch.bool)
    valid[1, 32:] = False  # image 1 keeps 8 tokens, image 0 keeps 16: 8 filler slots
    torch.manual_seed(3)
    base, _ = model(images, valid=valid)
    gen = torch.Generator().manual_seed(0)

    def perturb_decoder(mod: torch.nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[1, 1 + 32 :] += 10.0 * torch.randn(x[1, 1 + 32 :].shape, generator=gen)  # padded positions
        return (x,)

    def perturb_encoder(mod: torch.nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[1, 1 + 8 :] += 10.0 * torch.randn(x[1, 1 + 8 :].shape, generator=gen)  # filler slots of image 1
        return (x,)

    for block, fn in ((model.decoder_blocks[0], perturb_decoder), (model.encoder.blocks[0], perturb_encoder)):
        h = block.register_forward_pre_hook(fn)
        torch.manual_seed(3)
        loss, _ = model(images, valid=valid)
        h.remove()
        assert loss.item() == pytest.approx(base.item(), rel=1e-5)
    # and the perturbation is not a no-op on real tokens
    h = model.decoder_blocks[0].register_forward_pre_hook(
        lambda m, a: (a[0] + 10.0 * torch.randn(a[0].shape, generator=gen),)
    )
    torch.manual_seed(3)
    loss, _ = model(images, valid=valid)
    h.remove()
    assert abs(loss.item() - base.item()) > 1e-3
