"""Pixel IO against hand-made rasters and real radiograph DICOMs from pydicom-data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.io import ImageReadError, image_size, is_dicom, read_image, voi_output_range
from bench.data.errors import DataError

# ------------------------------------------------------------------------- rasters


def test_png8_round_trip(tmp_path: Path) -> None:
    values = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(out, values / 255.0, rtol=0, atol=1e-7)


def test_png16_container_bits_and_minmax(tmp_path: Path) -> None:
    # 12-bit content in a 16-bit container, as PadChest ships it.
    values = np.array([[0, 100, 2048], [3000, 4000, 4095]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), values / 65535.0, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", png16="bits"), values / 4095.0, atol=1e-7)
    np.testing.assert_allclose(
        read_image(tmp_path / "a.png", png16="minmax"), values / 4095.0, atol=1e-7
    )
    shifted = values + 1000  # max 5095 -> 13 bits, min 1000
    Image.fromarray(shifted).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_image(tmp_path / "b.png", png16="bits"), shifted / 8191.0, atol=1e-7)
    np.testing.assert_allclose(
        read_image(tmp_path / "b.png", png16="minmax"), (shifted - 1000) / 4095.0, atol=1e-7
    )
    with pytest.raises(ValueError, match="png16"):
        read_image(tmp_path / "a.png", png16="auto")  # type: ignore[arg-type]


def test_full_range_png16(tmp_path: Path) -> None:
    values = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), values / 65535.0, atol=1e-7)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def test_rgb_is_luminance(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 200, 30]]], dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), _luma(rgb.astype(float)), atol=1e-6)


def test_rgba_ignores_alpha(tmp_path: Path) -> None:
    rgb = np.full((2, 2, 3), 200, dtype=np.uint8)
    alpha = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), np.full((2, 2), 200 / 255.0), atol=1e-6)


def test_grey_with_alpha_and_palette(tmp_path: Path) -> None:
    la = np.dstack([np.array([[10, 20]], np.uint8), np.array([[0, 255]], np.uint8)])
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), [[10 / 255, 20 / 255]], atol=1e-7)

    pal = Image.new("P", (3, 1))
    colours = [0, 0, 0, 255, 255, 255, 50, 100, 150]
    pal.putpalette(colours + [0] * (768 - len(colours)))
    pal.putdata([2, 1, 0])
    pal.save(tmp_path / "p.png")
    expected = _luma(np.array([[[50, 100, 150], [255, 255, 255], [0, 0, 0]]], dtype=float))
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), expected, atol=1e-6)


def test_jpeg_grey_and_colour(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    grey = (2 * xx + yy).astype(np.uint8)  # smooth ramp: JPEG error stays tiny
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=100)
    out = read_image(tmp_path / "g.jpg")
    assert out.shape == (64, 64)
    assert np.abs(out - grey / 255.0).max() < 3 / 255.0
    Image.fromarray(np.dstack([grey] * 3)).save(tmp_path / "c.jpeg", quality=100)
    assert np.abs(read_image(tmp_path / "c.jpeg") - grey / 255.0).max() < 3 / 255.0
    assert image_size(tmp_path / "g.jpg") == (64, 64)


def test_image_size_reads_header_only(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 65535, size=(37, 53), dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.png") == (37, 53)
    # A file cut after its header still reports its size: no pixel decode happened.
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.png") == (37, 53)


def test_truncated_png_raises_naming_file(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 255, size=(64, 64), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    bad = tmp_path / "truncated_case.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    assert info.value.path == bad
    assert "truncated_case.png" in str(info.value)
    assert isinstance(info.value, DataError)


def test_garbage_missing_and_directory(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(junk)
    with pytest.raises(ImageReadError, match="junk.png"):
        image_size(junk)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="does not exist"):
        image_size(tmp_path / "nope.dcm")
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path)
    fake_dcm = tmp_path / "fake.dcm"
    fake_dcm.write_bytes(b"\x00" * 10)
    with pytest.raises(ImageReadError, match="fake.dcm"):
        read_image(fake_dcm)


# --------------------------------------------------------------------------- DICOM


def _testdata(name: str) -> Path:
    # The pydicom-data distribution installs the module `data_store`, which pydicom
    # finds through its external-sources entry point; never download.
    pytest.importorskip("data_store", reason="pydicom-data (test extra) provides the real CR DICOMs")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not found in the installed pydicom-data")
    return Path(path)


def _windowed(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out independently of pydicom."""
    c, w = center - 0.5, width - 1.0
    y = ((x - c) / w + 0.5) * (y_max - y_min) + y_min
    y = np.where(x <= c - w / 2, y_min, y)
    return np.where(x > c + w / 2, y_max, y)


@pytest.mark.parametrize("stem", ["RG1", "RG3"])
def test_lossless_j2k_equals_uncompressed(stem: str) -> None:
    unc = read_image(_testdata(f"{stem}_UNCR.dcm"))
    j2k = read_image(_testdata(f"{stem}_J2KR.dcm"))
    assert unc.dtype == np.float32 and unc.ndim == 2
    np.testing.assert_array_equal(unc, j2k)


def test_rle_equals_uncompressed() -> None:
    np.testing.assert_array_equal(
        read_image(_testdata("MR_small_RLE.dcm")), read_image(_testdata("MR_small.dcm"))
    )


def test_rg3_window_and_monochrome1_by_formula() -> None:
    import pydicom

    path = _testdata("RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and int(ds.BitsStored) == 10
    raw = ds.pixel_array.astype(np.float64)
    y_max = 2.0**10 - 1
    expected = 1.0 - _windowed(raw, float(ds.WindowCenter), float(ds.WindowWidth), 0.0, y_max) / y_max
    out = read_image(path)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert voi_output_range(ds) == (0.0, y_max)


def test_chest_cr_lungs_dark_after_inversion() -> None:
    """RG1 is a PA chest film (MONOCHROME1): after inversion lungs are darker than the mediastinum."""
    img = read_image(_testdata("RG1_UNCR.dcm"))
    h, w = img.shape
    rows = slice(int(0.25 * h), int(0.55 * h))
    right_lung = img[rows, int(0.15 * w) : int(0.35 * w)].mean()
    left_lung = img[rows, int(0.65 * w) : int(0.85 * w)].mean()
    mediastinum = img[rows, int(0.45 * w) : int(0.55 * w)].mean()
    assert right_lung < mediastinum - 0.1
    assert left_lung < mediastinum - 0.1
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_extremity_cr_air_dark_collimation_bright() -> None:
    """RG3 is a lower-leg film: exposed air beside the leg is dark, bone bright, the
    unexposed collimated border bright (as on a lightbox)."""
    img = read_image(_testdata("RG3_UNCR.dcm"))
    h, w = img.shape
    rows = slice(int(0.2 * h), int(0.8 * h))
    air = img[rows, int(0.28 * w) : int(0.34 * w)].mean()
    leg = img[rows, int(0.45 * w) : int(0.6 * w)].mean()
    border = img[rows, : int(0.15 * w)].mean()
    assert air < 0.15
    assert leg > air + 0.3
    assert border > 0.9


def test_voi_lut_sequence_by_hand() -> None:
    import pydicom

    path = _testdata("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    item = ds.VOILUTSequence[0]
    n, first, _ = (int(v) for v in item.LUTDescriptor)
    lut = np.asarray(item.LUTData, dtype=np.float64)
    raw = ds.pixel_array.astype(np.int64)
    mapped = lut[np.clip(raw - first, 0, (n or 65536) - 1)]
    expected = (mapped - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_no_window_falls_back_to_minmax() -> None:
    import pydicom

    path = _testdata("JPEG-LL.dcm")  # JPEG lossless, signed, no window, no rescale
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    raw = ds.pixel_array.astype(np.float64)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_dicom_detected_by_content_and_header_size(tmp_path: Path) -> None:
    src = _testdata("RG3_J2KR.dcm")
    anon = tmp_path / "no_extension"
    shutil.copyfile(src, anon)
    assert is_dicom(anon) and not is_dicom(Path(__file__))
    np.testing.assert_array_equal(read_image(anon), read_image(src))
    assert image_size(anon) == (1760, 1760)
    assert image_size(_testdata("RG1_UNCR.dcm")) == (1955, 1841)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(_testdata("RG3_UNCR.dcm"))
    del ds.PixelData
    out = tmp_path / "header_only.dcm"
    ds.save_as(out)
    with pytest.raises(ImageReadError, match="header_only.dcm.*no pixel data"):
        read_image(out)


def test_truncated_dicom(tmp_path: Path) -> None:
    data = _testdata("RG3_UNCR.dcm").read_bytes()
    out = tmp_path / "cut.dcm"
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.dcm"):
        read_image(out)


def test_no_window_minmax_then_inversion(tmp_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(_testdata("RG3_UNCR.dcm"))
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(tmp_path / "nowindow.dcm")
    raw = ds.pixel_array.astype(np.float64)
    expected = 1.0 - (raw - raw.min()) / (raw.max() - raw.min())  # MONOCHROME1: inverted
    np.testing.assert_allclose(read_image(tmp_path / "nowindow.dcm"), expected, atol=1e-6)


def test_rescale_then_window_range(tmp_path: Path) -> None:
    """Rescale slope/intercept moves both the values and the window's output range."""
    import pydicom

    ds = pydicom.dcmread(_testdata("RG3_UNCR.dcm"))
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 1000, 2048
    ds.save_as(tmp_path / "rescaled.dcm")
    ds = pydicom.dcmread(tmp_path / "rescaled.dcm")
    values = 2.0 * ds.pixel_array.astype(np.float64) - 100.0
    y_min, y_max = -100.0, 2.0 * 1023 - 100.0
    assert voi_output_range(ds) == (y_min, y_max)
    expected = 1.0 - (_windowed(values, 1000.0, 2048.0, y_min, y_max) - y_min) / (y_max - y_min)
    np.testing.assert_allclose(read_image(tmp_path / "rescaled.dcm"), expected, atol=1e-5)


@pytest.mark.parametrize("content", [b"\x00" * 200, b"hello, a text file misnamed\n" * 10], ids=["zeros", "text"])
def test_a_dcm_that_is_not_dicom_is_called_so(tmp_path: Path, content: bytes) -> None:
    """Issue 14.9: 200 zero bytes named .dcm used to be 'DICOM file has no pixel data'."""
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(content)
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError) as info:
            read(fake)
        assert info.value.path == fake and str(fake) in str(info.value)
        assert "not a DICOM file: no 'DICM' marker at byte 128" in info.value.reason
        assert "InvalidDicomError" in info.value.reason and "pixel data" not in info.value.reason


def test_dicom_without_preamble_still_reads(tmp_path: Path) -> None:
    """The not-DICOM check must not reject files that lack only the preamble (read by suffix)."""
    import pydicom

    src = _testdata("RG3_UNCR.dcm")
    stripped = tmp_path / "stripped.dcm"
    stripped.write_bytes(src.read_bytes()[132:])  # no preamble, no 'DICM': starts at the file meta group
    np.testing.assert_array_equal(read_image(stripped), read_image(src))
    ds = pydicom.dcmread(src)
    ds.preamble = None
    del ds.file_meta
    raw = tmp_path / "raw.dcm"  # a bare dataset, implicit VR: no preamble and no file meta at all
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert image_size(raw) == image_size(src) == (1760, 1760)


def test_a_header_with_an_empty_size_is_unreadable(tmp_path: Path) -> None:
    """Issue 12/14.7: a size-0 header must count as unreadable (the DBB sampler cannot bin it)."""
    import pydicom

    ds = pydicom.dcmread(_testdata("RG3_UNCR.dcm"))
    ds.Rows = 0
    ds.PixelData = b""
    out = tmp_path / "rows0.dcm"
    ds.save_as(out)
    with pytest.raises(ImageReadError, match=r"rows0.dcm: header gives an empty image size \(0 x 1760 px\)"):
        image_size(out)
    with pytest.raises(ImageReadError, match="rows0.dcm"):
        read_image(out)
