"""GMML group masking by invariants (the reference cannot be seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ssl_methods.corruption import gmml_corrupt, group_mask, masked_l1_mean


def test_coverage_reached_with_at_most_one_rectangle_overshoot() -> None:
    torch.manual_seed(0)
    cov = torch.empty(64).uniform_(0.5, 0.75)
    mask = group_mask(cov, (64, 64), max_side_frac=0.3)
    got = mask.float().sum(dim=(1, 2))
    assert torch.all(got >= cov * 4096)
    assert torch.all(got < cov * 4096 + 19 * 19)  # max side floor(0.3 * 64) = 19, exclusive


def test_single_rectangle_shape_rules() -> None:
    """With a tiny target exactly one rectangle is drawn: a filled, aligned box."""
    torch.manual_seed(1)
    align, h, w = 4, 64, 48
    mask = group_mask(torch.full((300,), 1e-4), (h, w), max_side_frac=0.3, align=align).numpy()
    for m in mask:
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        assert m[r0:r1, c0:c1].all() and m.sum() == (r1 - r0) * (c1 - c0)  # one connected box
        assert r0 % align == 0 and c0 % align == 0
        assert (r1 - r0) % align == 0 and (c1 - c0) % align == 0
        assert align <= r1 - r0 <= int(0.3 * h) and align <= c1 - c0 <= int(0.3 * w)
        assert r0 <= h - align - 1 and c0 <= w - align - 1


def test_corrupt_fills_and_keeps_clean_pixels() -> None:
    torch.manual_seed(2)
    images = torch.rand(400, 1, 32, 32)
    out = gmml_corrupt(images, coverage=(0.5, 0.75), fill="noise", replace_prob=0.5)
    keep = out.mask == 0
    assert torch.equal(out.corrupted[keep.expand_as(images)], images[keep.expand_as(images)])
    repl = out.replaced
    assert 0.4 < repl.float().mean() < 0.6
    # replaced images copy the partner at the same coordinates
    for i in torch.nonzero(repl).flatten()[:20].tolist():
        m = out.mask[i, 0].bool()
        assert torch.equal(out.corrupted[i, 0][m], images[out.partner[i], 0][m])
    # noise-filled pixels are N(0, 1)
    noise_px = out.corrupted[~repl][out.mask[~repl].bool().expand(-1, 1, -1, -1)]
    assert stats.kstest(noise_px.numpy()[:5000], "norm").pvalue > 1e-3
    # coverage per mode: >= 0.5 for noise, ~0.3 for replacement
    frac = out.mask.mean(dim=(1, 2, 3))
    assert torch.all(frac[~repl] >= 0.5) and torch.all((frac[repl] >= 0.3) & (frac[repl] < 0.45))


def test_zero_fill() -> None:
    torch.manual_seed(3)
    images = torch.rand(8, 2, 32, 32) + 1.0
    out = gmml_corrupt(images, coverage=(0.5, 0.5), fill="zeros", replace_prob=0.0)
    assert torch.all(out.corrupted[out.mask.bool().expand_as(images)] == 0)


def test_masked_l1_mean_definition() -> None:
    torch.manual_seed(4)
    rec, clean = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    mask = (torch.rand(3, 1, 8, 8) < 0.4).float()
    sel = mask.bool().expand_as(clean)
    expect = (rec[sel] - clean[sel]).abs().double().mean().item()
    assert masked_l1_mean(rec, clean, mask).item() == pytest.approx(expect, rel=1e-6)


def test_bad_fill_is_rejected() -> None:
    with pytest.raises(ValueError, match="fill"):
        gmml_corrupt(torch.rand(2, 1, 16, 16), fill="blur")  # type: ignore[arg-type]


def test_replace_partner_comes_from_the_same_view() -> None:
    """The references' GMML_replace_list runs once per crop list, so a partner is an image of
    the same view (possibly the image itself: randint over the view's batch)."""
    torch.manual_seed(4)
    views, n = 3, 40
    images = torch.rand(views * n, 1, 32, 32)
    out = gmml_corrupt(images, replace_prob=1.0, groups=views)
    view_of = torch.arange(views * n) // n
    assert torch.equal(view_of[out.partner], view_of)
    assert len(set(out.partner[:n].tolist())) > n // 2  # spread over the view, not fixed
    for i in range(0, views * n, 7):  # the copied pixels are the partner's, at the same place
        m = out.mask[i, 0].bool()
        assert torch.equal(out.corrupted[i, 0][m], images[out.partner[i], 0][m])
    with pytest.raises(ValueError, match="views"):
        gmml_corrupt(images[:-1], groups=views)
