"""Preprocessing cache: fixed-size and native arrays against known pixels, the
corrupt-image policies, reuse, and the synthetic PadChest site end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.cache import MANIFEST, REPORT, CacheReader, prepare, resize_square
from bench.data.io import ImageReadError, read_image


def _png(path: Path, values: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    return str(path)


def _index(tmp_path: Path, *, corrupt: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        ("exact8", _png(tmp_path / "src" / "exact8.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))),
        ("const16", _png(tmp_path / "src" / "const16.png", np.full((50, 70), 30000, dtype=np.uint16))),
        ("ramp", _png(tmp_path / "src" / "ramp.png", np.tile(np.arange(0, 256, 2, dtype=np.uint8), (40, 1)))),
    ]
    if corrupt:
        whole = _png(tmp_path / "src" / "whole.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
        data = Path(whole).read_bytes()
        (tmp_path / "src" / "cut.png").write_bytes(data[: len(data) // 2])
        rows.insert(1, ("cut", str(tmp_path / "src" / "cut.png")))
        rows.append(("gone", str(tmp_path / "src" / "gone.png")))
    return pd.DataFrame({"image_id": [r[0] for r in rows], "path": [r[1] for r in rows], "split": "train"})


def test_fixed_size_values_and_skip_report(tmp_path: Path) -> None:
    index = _index(tmp_path)
    manifest = prepare(index, tmp_path / "cache", size=32)
    assert (manifest["rows"], manifest["cached"], manifest["skipped"]) == (5, 3, 2)
    report = json.loads((tmp_path / "cache" / REPORT).read_text())
    assert [s["image_id"] for s in report["skipped_images"]] == ["cut", "gone"]
    assert "truncated" in report["skipped_images"][0]["reason"]
    assert "does not exist" in report["skipped_images"][1]["reason"]

    reader = CacheReader(tmp_path / "cache")
    assert len(reader) == 3 and list(reader.index["image_id"]) == ["exact8", "const16", "ramp"]
    assert list(reader.index["cache_row"]) == [0, 2, 3]  # rows keep their position
    exact = np.asarray(Image.open(index["path"][0]), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(reader[0], exact)  # already 32x32: stored exactly
    assert reader[0].dtype == np.float32
    # A constant image stays constant under any resampling: round(255 * 30000/65535).
    np.testing.assert_array_equal(reader[1], np.full((32, 32), round(255 * 30000 / 65535) / 255, np.float32))
    # A horizontal ramp stays a ramp: constant down columns, increasing along rows.
    ramp = reader[2]
    assert np.all(ramp == ramp[0]) and np.all(np.diff(ramp[0]) >= 0) and ramp[0, -1] > ramp[0, 0] + 0.9
    np.testing.assert_array_equal(reader.batch([2, 0]), np.stack([reader[2], reader[0]]))


def test_resize_policies() -> None:
    img = np.zeros((40, 120), dtype=np.float32)
    img[:, 40:80] = 1.0  # a centre square of ones between two squares of zeros
    np.testing.assert_allclose(resize_square(img, 20, "crop"), np.ones((20, 20)), atol=1e-6)
    padded = resize_square(np.ones((40, 80), np.float32), 20, "pad")
    assert np.all(padded[:5] == 0) and np.all(padded[15:] == 0) and np.allclose(padded[5:15], 1.0)
    squashed = resize_square(img, 20, "squash")
    assert squashed.shape == (20, 20) and np.allclose(squashed[:, 8:12], 1.0) and np.allclose(squashed[:, :5], 0.0)
    with pytest.raises(ValueError, match="resize policy"):
        resize_square(img, 20, "stretch")


def test_fail_policy_names_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="cut.png"):
        prepare(_index(tmp_path), tmp_path / "cache", size=16, on_error="fail")
    assert not (tmp_path / "cache" / MANIFEST).exists()
    # only the shard plan is left: the failing shard's temporaries are removed, no final files
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shards"]
    assert sorted(p.name for p in (tmp_path / "cache" / "shards").iterdir()) == ["plan.json"]
    with pytest.raises(FileNotFoundError, match="not a complete cache"):
        CacheReader(tmp_path / "cache")


def test_native_cache(tmp_path: Path) -> None:
    index = _index(tmp_path)
    prepare(index, tmp_path / "n16", size=None, native=True)
    reader = CacheReader(tmp_path / "n16")
    for i, image_id in enumerate(reader.index["image_id"]):
        source = read_image(index.set_index("image_id").loc[image_id, "path"])
        np.testing.assert_array_equal(reader.native(i), np.round(source * 65535) / np.float32(65535))
    sizes = reader.native_sizes()
    assert sizes[["height", "width"]].to_numpy().tolist() == [[32, 32], [50, 70], [40, 128]]
    with pytest.raises(ValueError, match="no fixed-size array"):
        reader[0]

    prepare(index, tmp_path / "capped", size=24, native=True, native_dtype="uint8", native_max_side=35)
    capped = CacheReader(tmp_path / "capped")
    assert capped.native_sizes()[["height", "width"]].to_numpy().tolist() == [[32, 32], [25, 35], [11, 35]]
    np.testing.assert_array_equal(capped.native(1), np.full((25, 35), round(255 * 30000 / 65535) / 255, np.float32))
    assert capped[0].shape == (24, 24)


def test_reuse_and_conflict(tmp_path: Path) -> None:
    index = _index(tmp_path, corrupt=False)
    first = prepare(index, tmp_path / "c", size=16)
    stamp = (tmp_path / "c" / "images_16.npy").stat().st_mtime_ns
    assert prepare(index, tmp_path / "c", size=16) == first
    assert (tmp_path / "c" / "images_16.npy").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        prepare(index, tmp_path / "c", size=16, resize="pad")
    with pytest.raises(FileExistsError):
        prepare(index.iloc[:2], tmp_path / "c", size=16)
    with pytest.raises(ValueError, match="on_error"):
        prepare(index, tmp_path / "d", on_error="ignore")


def test_reader_pickles_without_pixels(tmp_path: Path) -> None:
    index = _index(tmp_path, corrupt=False)
    prepare(index, tmp_path / "c", size=64, native=True)
    reader = CacheReader(tmp_path / "c")
    before = reader[1].copy()
    blob = pickle.dumps(reader)
    assert len(blob) < 20_000  # paths and the small index only, not 3 x 64 x 64 + native pixels
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone[1], before)
    np.testing.assert_array_equal(clone.native(2), reader.native(2))


def test_workers_match_serial(tmp_path: Path) -> None:
    index = _index(tmp_path)
    prepare(index, tmp_path / "serial", size=20, native=True)
    prepare(index, tmp_path / "pool", size=20, native=True, workers=2)
    a, b = CacheReader(tmp_path / "serial"), CacheReader(tmp_path / "pool")
    np.testing.assert_array_equal(a.batch(range(len(a))), b.batch(range(len(b))))
    assert (tmp_path / "serial" / "native.bin").read_bytes() == (tmp_path / "pool" / "native.bin").read_bytes()


def test_synthetic_padchest_known_bad_is_skipped(tmp_path: Path) -> None:
    from bench.data.sites import get_site
    from bench.data.sites.padchest import KNOWN_BAD_IMAGES
    from bench.data.synthetic.padchest import write

    write(tmp_path / "pc", seed=5, scale=0.03)
    index = get_site("padchest").load_index(tmp_path / "pc", skip_known_bad=False)
    manifest = prepare(index, tmp_path / "cache", size=32, native=True)
    assert manifest["skipped"] == 1
    report = json.loads((tmp_path / "cache" / REPORT).read_text())
    assert report["skipped_images"][0]["image_id"] in KNOWN_BAD_IMAGES
    reader = CacheReader(tmp_path / "cache")
    assert len(reader) == len(index) - 1
    for i in range(len(reader)):
        assert reader.native(i).shape == (reader.index["height"][i], reader.index["width"][i])


def test_fail_policy_with_workers(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="cut.png"):
        prepare(_index(tmp_path), tmp_path / "cache", size=16, on_error="fail", workers=2, n_shards=5)
    assert not (tmp_path / "cache" / MANIFEST).exists()
    left = sorted(p.name for p in (tmp_path / "cache" / "shards").iterdir())
    # finished shards stay for a resume; the corrupt image's shard (row 1) never completes
    assert "shard-00001-of-00005" not in left and not any(name.startswith(".") for name in left)
