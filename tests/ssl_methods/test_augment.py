"""Batched view augmentations: exact special cases."""

from __future__ import annotations

import torch

import pytest
import torchvision.transforms.v2.functional as TF

from bench.data.transforms import GREY_MEAN, GREY_STD
from ssl_methods.augment import (
    SOLARIZE_THRESHOLD,
    apply_jitter,
    color_jitter,
    from_unit,
    gaussian_blur,
    photometric,
    random_resized_crop,
    sample_jitter,
    solarize,
    to_unit,
)


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
    assert j.min() >= 0.0 and j.max() <= 1.0 and not torch.equal(j, y)
    torch.testing.assert_close(color_jitter(y, p=0.0), y)


def test_blur_preserves_constant_images_and_mean() -> None:
    x = torch.full((2, 1, 32, 32), 0.3)
    torch.testing.assert_close(gaussian_blur(x, p=1.0), x)
    y = torch.rand(2, 1, 32, 32)
    b = gaussian_blur(y, p=1.0, ref_size=32)
    assert b.std() < y.std()


@pytest.mark.parametrize("chans", [1, 3])
def test_jitter_equals_torchvision_functional_with_the_same_parameters(chans: int) -> None:
    """Brightness/contrast on [0, 1] pixels, per sample, in the drawn order, equal to
    torchvision's adjust_brightness / adjust_contrast with the same factors."""
    torch.manual_seed(0)
    grey = torch.rand(12, 1, 16, 16)
    x = grey.expand(-1, chans, -1, -1).contiguous()
    params = sample_jitter(12, 0.4, 0.4, p=0.8, device="cpu")
    assert params.apply.any() and (~params.apply).any()
    assert params.brightness_first.any() and (~params.brightness_first).any()
    got = apply_jitter(x, params)
    for i in range(12):
        img = x[i]
        if bool(params.apply[i]):
            fb, fc = float(params.brightness[i]), float(params.contrast[i])
            if bool(params.brightness_first[i]):
                img = TF.adjust_contrast(TF.adjust_brightness(img, fb), fc)
            else:
                img = TF.adjust_brightness(TF.adjust_contrast(img, fc), fb)
        torch.testing.assert_close(got[i], img, atol=1e-6, rtol=0)


def test_saturation_and_hue_are_identity_on_grey_images() -> None:
    """Why the grey pipeline omits the references' saturation/hue jitter and RandomGrayscale."""
    torch.manual_seed(1)
    x = torch.rand(1, 16, 16).expand(3, -1, -1).contiguous()  # a radiograph replicated to RGB
    # torchvision's luminance weights sum to 0.9999, so the grey image comes back within 1e-4
    # (well under one 8-bit level, 1/255)
    for f in (0.0, 0.8, 1.2):
        torch.testing.assert_close(TF.adjust_saturation(x, f), x, atol=2e-4, rtol=0)
    for h in (-0.1, 0.01, 0.1):
        torch.testing.assert_close(TF.adjust_hue(x, h), x, atol=2e-4, rtol=0)
    torch.testing.assert_close(TF.rgb_to_grayscale(x, num_output_channels=3), x, atol=2e-4, rtol=0)


def test_solarize_equals_torchvision_in_unit_range() -> None:
    x = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(solarize(x, p=1.0), TF.solarize(x, SOLARIZE_THRESHOLD))
    assert SOLARIZE_THRESHOLD == pytest.approx(128 / 255)  # PIL ImageOps.solarize(img) default


def test_photometric_runs_in_unit_range_before_normalisation() -> None:
    """The regression of the normalised-tensor bug: on the loop's normalised input, brightness
    must scale intensities about black (not about the mean grey 0.449) and solarisation fold at
    128/255 in [0, 1] (not at 0.562), exactly as torchvision on the un-normalised image."""
    torch.manual_seed(2)
    pixels = torch.rand(6, 1, 16, 16)
    pixels[0] = GREY_MEAN  # a mean-grey image: unchanged by the old bug, darkened/brightened now
    normed = from_unit(pixels)
    torch.testing.assert_close(to_unit(normed), pixels, atol=1e-6, rtol=0)
    torch.manual_seed(3)
    got = photometric(normed, jitter_p=1.0, brightness=0.4, contrast=0.0, blur_p=0.0, solarize_p=1.0)
    torch.manual_seed(3)
    params = sample_jitter(6, 0.4, 0.0, p=1.0, device="cpu")
    for i in range(6):
        ref = TF.solarize(TF.adjust_brightness(pixels[i], float(params.brightness[i])), SOLARIZE_THRESHOLD)
        torch.testing.assert_close(got[i], (ref - GREY_MEAN) / GREY_STD, atol=1e-5, rtol=0)
    assert not torch.allclose(got[0], normed[0])  # the mean-grey image changed
