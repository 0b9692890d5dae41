"""Encoding rendered float images into the files sites ship, plus per-site seeding.

Kept apart from the writers so every writer encodes the same way: values in [0, 1]
are rounded (not truncated) to the container's integer range, and encoders get
fixed parameters so the same array always gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 92


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats (any shape) -> uint8 by rounding; values outside are clipped."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_uint16(img: np.ndarray, bits: int = 16) -> np.ndarray:
    """[0, 1] floats -> uint16 using only the low `bits` bits (e.g. 12 for 12-bit data)."""
    top = (1 << bits) - 1
    return np.round(np.clip(img, 0.0, 1.0) * top).astype(np.uint16)


def save_png(img: np.ndarray, path: Path) -> None:
    """Write an 8-bit greyscale PNG (2-D float input in [0, 1])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, format="PNG", optimize=False, compress_level=6)


def save_jpeg(img: np.ndarray, path: Path, quality: int = JPEG_QUALITY) -> None:
    """Write an 8-bit greyscale (2-D) or RGB (H, W, 3) baseline JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, format="JPEG", quality=quality, optimize=False, subsampling=0)


def site_rng(seed: int, site: str) -> np.random.Generator:
    """Generator for one site: depends on (seed, site name) only.

    Adding or removing other sites therefore never changes this site's files.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(site.encode())]))


def child_seed(rng: np.random.Generator) -> int:
    """Draw a seed for an independent child generator (one per patient or image)."""
    return int(rng.integers(0, 2**63))


def write_gzip_text(text: str, path: Path) -> None:
    """Gzip `text` deterministically (no file name, mtime 0 in the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def hex_id(rng: np.random.Generator, groups: int = 5, width: int = 8) -> str:
    """A MIMIC-style dicom_id: `groups` blocks of `width` lowercase hex digits."""
    return "-".join(f"{int(rng.integers(0, 16**width)):0{width}x}" for _ in range(groups))
