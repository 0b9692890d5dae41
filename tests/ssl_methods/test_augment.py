"""Batched view augmentations: exact special cases."""

from __future__ import annotations

import torch

from ssl_methods.augment import color_jitter, gaussian_blur, random_resized_crop, solarize


def test_full_crop_without_flip_is_identity() -> None:
    x = torch.rand(3, 1, 16, 16)
    out = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_full_crop_with_flip_mirrors() -> None:
    x = torch.rand(2, 2, 8, 10)
    out = random_resized_crop(x, (8, 10), scale=(1.0, 1.0), ratio=(1.25, 1.25), hflip=1.0)
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_is_a_sub_image_and_per_sample() -> None:
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32).expand(32, 32)  # value = column position
    x = ramp.expand(8, 1, 32, 32).contiguous()
    out = random_resized_crop(x, 16, scale=(0.1, 0.3), hflip=0.0)
    spans = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert torch.all(spans > 0) and torch.all(spans < 0.8)  # a strict sub-range, increasing
    assert len({round(v, 4) for v in out[:, 0, 0, 0].tolist()}) == 8


def test_solarize_and_jitter_ranges() -> None:
    x = torch.tensor([0.2, 0.7]).reshape(1, 1, 1, 2)
    torch.testing.assert_close(solarize(x, p=1.0), torch.tensor([0.2, 0.3]).reshape(1, 1, 1, 2))
    y = torch.rand(16, 1, 8, 8)
    j = color_jitter(y, p=1.0)
    assert j.min() >= y.min() and j.max() <= y.max()
    torch.testing.assert_close(color_jitter(y, p=0.0), y)


def test_blur_preserves_constant_images_and_mean() -> None:
    x = torch.full((2, 1, 32, 32), 0.3)
    torch.testing.assert_close(gaussian_blur(x, p=1.0), x)
    y = torch.rand(2, 1, 32, 32)
    b = gaussian_blur(y, p=1.0, ref_size=32)
    assert b.std() < y.std()
