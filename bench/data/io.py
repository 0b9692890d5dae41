"""Pixel IO: one function turns any radiograph file the sites ship into a float image.

`read_image(path)` returns a 2-D float32 array with values in [0, 1] and air dark,
whatever the container: 8-bit or 16-bit PNG, JPEG, RGB/RGBA/palette images, or DICOM
(uncompressed, JPEG 2000, JPEG lossless, RLE through pydicom's pixel handlers,
which pylibjpeg / pylibjpeg-openjpeg / pylibjpeg-libjpeg provide).

Normalisation rules (the values downstream code sees):

* 8-bit greyscale: ``x / 255``.
* RGB / RGBA / palette / CMYK: converted to RGB first (the alpha channel is dropped,
  never averaged in; NIH ships a few RGBA files), then ITU-R BT.601 luminance
  ``0.299 R + 0.587 G + 0.114 B``, divided by 255.
* 16-bit greyscale PNG (PadChest): the *container* depth by default, ``x / 65535``.
  PadChest stores 10- or 12-bit detector values (`BitsStored_DICOM` 10 or 12) in
  16-bit PNGs, so this default yields dark, low-contrast images (max 1023/65535 or
  4095/65535). ``png16="bits"`` divides by ``2**b - 1`` where ``b`` is the bit length
  of the image's maximum (the stored depth the data actually uses; 12 for a 12-bit
  film whose brightest pixel is above 2047), and ``png16="minmax"`` stretches each
  image to its own min/max.
* DICOM, in this order: the modality LUT (Rescale Slope/Intercept or Modality LUT
  Sequence) -> the first VOI LUT or window (VOI LUT Sequence preferred over Window
  Center/Width, both through pydicom) -> scaled to [0, 1] by the *output range of the
  VOI transform*, not by the image's own min/max: for a window that is pydicom's
  windowing output range (``[0, 2**BitsStored - 1]`` for unsigned data, passed
  through the rescale when one is present), for a VOI LUT Sequence it is the range
  of the LUT's entries. Only when the file carries neither a window nor a VOI LUT
  is the image stretched to its own min/max after the modality LUT. Finally
  MONOCHROME1 images (where larger values are darker) are inverted, ``1 - x``, so
  that air is dark for every file.

Failures (missing, truncated, corrupt, DICOM without pixel data, a `.dcm` that is not
DICOM at all, an unknown image mode) raise `ImageReadError`, a `DataError` carrying
`.path` and `.reason`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.errors import DataError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

Png16Scaling = Literal["container", "bits", "minmax"]
PNG16_SCALINGS: tuple[str, ...] = ("container", "bits", "minmax")

# ITU-R BT.601 luma weights, the same ones PIL's RGB -> "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(DataError):
    """An image file that cannot be decoded; `.path` is the file, `.reason` why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def is_dicom(path: str | Path) -> bool:
    """True when the file is DICOM, by extension or by the `DICM` magic at byte 128.

    Content detection matters because some archives ship DICOM without an extension
    (or with a vendor one); the extension alone catches DICOM files written without
    the 128-byte preamble.
    """
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with p.open("rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC
    except OSError:
        return False


def read_image(path: str | Path, *, png16: Png16Scaling = "container") -> np.ndarray:
    """Decode one image file to float32 (H, W) in [0, 1], air dark.

    `png16` picks the divisor for 16-bit greyscale raster files (see module
    docstring); it has no effect on 8-bit files or DICOM.
    """
    if png16 not in PNG16_SCALINGS:
        raise ValueError(f"png16 must be one of {PNG16_SCALINGS}, got {png16!r}")
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "file does not exist" if not p.exists() else "not a regular file")
    if is_dicom(p):
        return _read_dicom(p)
    return _read_raster(p, png16)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) in pixels from the file header alone, without decoding pixels."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "file does not exist" if not p.exists() else "not a regular file")
    if is_dicom(p):
        ds = _dcmread(p, stop_before_pixels=True)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        if rows is None or cols is None:
            raise ImageReadError(p, "DICOM header has no Rows/Columns (no image in this file)")
        height, width = int(rows), int(cols)
    else:
        try:
            with Image.open(p) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(p, f"unreadable image header ({exc})") from exc
    if height < 1 or width < 1:
        # an empty image cannot be resized or binned: unreadable, like any other broken header
        raise ImageReadError(p, f"header gives an empty image size ({height} x {width} px)")
    return int(height), int(width)


# ----------------------------------------------------------------------------- raster


def _read_raster(path: Path, png16: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            arr = _pil_to_float(img, png16)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports truncation as OSError("image file is truncated ...") and broken
        # PNG chunks as SyntaxError / OSError("broken data stream").
        raise ImageReadError(path, f"corrupt or truncated image data ({exc})") from exc
    if arr.ndim != 2 or arr.size == 0:
        raise ImageReadError(path, f"decoded to an empty or non-2-D array of shape {arr.shape}")
    return arr


def _pil_to_float(img: Image.Image, png16: str) -> np.ndarray:
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.float32) / np.float32(255.0)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        raw = np.asarray(img)
        if mode == "I" and raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ImageReadError(
                getattr(img, "filename", "?"),
                f"32-bit integer image with values outside 0..65535 ({raw.min()}..{raw.max()})",
            )
        return _scale_uint16(raw.astype(np.float32), png16)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode != "RGB":
            img = img.convert("RGBA" if mode in ("P", "PA") else "RGB")
        rgb = np.asarray(img, dtype=np.float32)[..., :3]  # drop alpha, never average it in
        return (rgb @ _LUMA) / np.float32(255.0)
    raise ImageReadError(getattr(img, "filename", "?"), f"unsupported image mode {mode!r}")


def _scale_uint16(arr: np.ndarray, png16: str) -> np.ndarray:
    if png16 == "container":
        return arr / np.float32(65535.0)
    hi = float(arr.max()) if arr.size else 0.0
    if png16 == "bits":
        bits = max(int(hi).bit_length(), 1)
        return arr / np.float32(2**bits - 1)
    lo = float(arr.min()) if arr.size else 0.0
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - np.float32(lo)) / np.float32(hi - lo)


# ------------------------------------------------------------------------------ DICOM


def _dcmread(path: Path, *, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # force=True accepts files without the 128-byte preamble (detected by suffix).
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a valid DICOM file ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(path, f"corrupt or truncated DICOM ({exc})") from exc
    if not _has_dicm_marker(path) and not _has_dicom_elements(ds):
        # force=True "reads" anything (200 zero bytes become one empty command element), so a
        # file with neither the preamble nor a single known data element is not DICOM at all.
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
            why = "no DICOM data elements"
        except Exception as exc:  # the strict reader says why (InvalidDicomError for a missing 'DICM')
            why = f"{type(exc).__name__}: {exc}"
        raise ImageReadError(
            path, f"not a DICOM file: no 'DICM' marker at byte {_DICOM_MAGIC_OFFSET} and no DICOM data elements ({why})"
        )
    return ds


def _has_dicm_marker(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC
    except OSError:
        return False


def _has_dicom_elements(ds: Any) -> bool:
    """True when a preamble-less read found at least one data element of the DICOM dictionary.

    Group 0 holds network command elements, never stored in files; garbage bytes parse into
    tags that are almost never in the dictionary.
    """
    from pydicom.datadict import dictionary_has_tag

    return any(tag.group >= 0x0002 and dictionary_has_tag(tag) for tag in ds.keys())


def _pixel_functions() -> tuple[Any, Any]:
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def _read_dicom(path: Path) -> np.ndarray:
    ds = _dcmread(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoders raise anything from RuntimeError to ValueError
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise ImageReadError(path, f"multi-frame DICOM ({frames} frames); expected one radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()

    if samples == 3:
        # pydicom converts YBR to RGB by default; no modality/VOI LUT applies to colour.
        bits = int(ds.get("BitsStored", 8))
        rgb = pixels.astype(np.float32)[..., :3]
        return np.clip((rgb @ _LUMA) / np.float32(2**bits - 1), 0.0, 1.0)
    if pixels.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D greyscale image, pixel array has shape {pixels.shape}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"unsupported PhotometricInterpretation {photometric!r}")

    apply_modality_lut, apply_voi_lut = _pixel_functions()
    try:
        values = np.asarray(apply_modality_lut(pixels, ds))
        out_range = voi_output_range(ds)
        if out_range is not None:
            if ds.get("VOILUTSequence") and values.dtype.kind == "f":
                # A LUT is indexed by integer modality values; a rescale with integral
                # slope/intercept yields floats that are whole numbers.
                values = np.rint(values).astype(np.int64)
            values = apply_voi_lut(values, ds, index=0)
        values = np.asarray(values, dtype=np.float64)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(path, f"cannot apply modality/VOI LUT ({type(exc).__name__}: {exc})") from exc

    if out_range is None:
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = out_range
    if hi <= lo:
        img = np.zeros(values.shape, dtype=np.float32)
    else:
        img = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        img = np.float32(1.0) - img
    if img.size == 0:
        raise ImageReadError(path, f"decoded to an empty image of shape {img.shape}")
    return img


def voi_output_range(ds: Any) -> tuple[float, float] | None:
    """(min, max) the file's first VOI transform can output, or None if it has none.

    A VOI LUT Sequence takes precedence (as in `apply_voi_lut(prefer_lut=True)`), and
    its range is that of the LUT entries. A window (Window Center/Width) outputs the
    range pydicom's `apply_windowing` maps into: the stored-value range given by
    BitsStored and PixelRepresentation (or the Modality LUT's bit depth), passed
    through Rescale Slope/Intercept when present (DICOM PS3.3 C.11.2.1.2).
    """
    lut_seq = ds.get("VOILUTSequence")
    if lut_seq:
        item = lut_seq[0]
        data = _lut_entries(item)
        return float(data.min()), float(data.max())
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        y_min, y_max = 0.0, float(2**depth - 1)
    else:
        bits = int(ds.BitsStored)
        if int(ds.get("PixelRepresentation", 0)) == 0:
            y_min, y_max = 0.0, float(2**bits - 1)
        else:
            y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None:
            y_min = y_min * float(slope) + float(intercept)
            y_max = y_max * float(slope) + float(intercept)
    return (min(y_min, y_max), max(y_min, y_max))


def _lut_entries(item: Any) -> np.ndarray:
    """The entries of one LUT item as an array, whether stored as US/SS words or OW bytes."""
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        bits = int(item.LUTDescriptor[2])
        dtype = np.uint8 if bits <= 8 and len(raw) == int(item.LUTDescriptor[0] or 65536) else np.uint16
        return np.frombuffer(raw, dtype=dtype)
    return np.asarray(raw if isinstance(raw, (list, tuple)) else [raw])
