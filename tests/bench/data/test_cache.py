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

from bench.data.cache import (
    MANIFEST,
    REPORT,
    CacheReader,
    merge,
    missing_shards,
    prepare,
    prepare_shard,
    resize_square,
    shard_rows,
)
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


# ------------------------------------------------------------- shards and resume


def _many(tmp_path: Path, n: int = 9) -> pd.DataFrame:
    """`n` 16-bit images of varied sizes plus one truncated file (row 3)."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        rows.append((f"im{i}", _png(tmp_path / "src" / f"im{i}.png", rng.integers(0, 65535, (h, w), dtype=np.uint16))))
    data = Path(rows[3][1]).read_bytes()
    Path(rows[3][1]).write_bytes(data[: len(data) // 3])
    return pd.DataFrame({"image_id": [r[0] for r in rows], "path": [r[1] for r in rows], "split": "train"})


def _same_cache(a: Path, b: Path) -> None:
    """Bit-for-bit equal pixel files, equal index and report, equal manifest."""
    for name in ("images_24.npy", "native.bin", REPORT, MANIFEST):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(a / "index.parquet"), pd.read_parquet(b / "index.parquet"))
    assert not (a / "shards").exists() and not (b / "shards").exists()


def test_interrupted_prepare_resumes_to_the_one_shot_cache(tmp_path: Path) -> None:
    index = _many(tmp_path)
    kw = dict(size=24, native=True)
    one_shot = prepare(index, tmp_path / "one", n_shards=1, **kw)
    # a run stopped after 2 of 4 shards, plus the temporaries of a shard killed mid-write
    assert prepare(index, tmp_path / "res", n_shards=4, max_shards=2, **kw) is None
    stray = tmp_path / "res" / "shards" / ".shard-00002-of-00004.tmp-99999"
    stray.mkdir()
    (stray / "fixed.npy").write_bytes(b"half written")
    assert missing_shards(tmp_path / "res") == [2, 3]
    assert not (tmp_path / "res" / MANIFEST).exists() and not (tmp_path / "res" / "images_24.npy").exists()
    with pytest.raises(FileNotFoundError, match="not a complete cache"):
        CacheReader(tmp_path / "res")
    resumed = prepare(index, tmp_path / "res", n_shards=4, workers=2, **kw)
    assert resumed == one_shot
    _same_cache(tmp_path / "res", tmp_path / "one")
    reader = CacheReader(tmp_path / "res")
    assert len(reader) == 8 and "im3" not in set(reader.index["image_id"])


def test_shards_as_a_job_array_then_merge(tmp_path: Path) -> None:
    index = _many(tmp_path, n=7)
    kw = dict(size=24, native=True)
    prepare(index, tmp_path / "one", **kw)
    out = tmp_path / "array"
    for shard in (2, 0):  # tasks finish in any order
        prepare_shard(index, out, shard=shard, n_shards=3, **kw)
    with pytest.raises(RuntimeError, match="1 of 3 shards are not finished"):
        merge(index, out)
    with pytest.raises(ValueError, match="planned with 3 shards"):
        prepare_shard(index, out, shard=1, n_shards=4, **kw)
    with pytest.raises(FileExistsError, match="other rows or parameters"):
        prepare_shard(index, out, shard=1, n_shards=3, size=32, native=True)
    prepare_shard(index, out, shard=1, n_shards=3, **kw)
    prepare_shard(index, out, shard=1, n_shards=3, **kw)  # a re-run task is a no-op
    merge(index, out)
    _same_cache(out, tmp_path / "one")
    assert [len(shard_rows(10, s, 3)) for s in range(3)] == [3, 3, 4]


def test_stage_finds_committed_cache_only(tmp_path: Path) -> None:
    from bench.data.sources import cache_dir_for, open_cache

    index = _many(tmp_path, n=5)
    root = tmp_path / "caches"
    d = cache_dir_for(root, "nih", {})
    prepare(index, d / "size24", size=24, n_shards=3, max_shards=1)
    assert open_cache(root, "nih", {}, 24) is None  # partial: stages decode from source
    prepare(index, d / "size24", size=24, n_shards=3)
    reader = open_cache(root, "nih", {}, 24)
    assert reader is not None and len(reader) == 4
    src = read_image(index["path"][0])
    np.testing.assert_array_equal(reader.raw(0), np.round(resize_square(src, 24) * 255).astype(np.uint8))
    prepare(index, d / "native", size=None, native=True, n_shards=2)
    native = open_cache(root, "nih", {}, 0)
    assert native is not None and native.native(1).shape == read_image(index["path"][1]).shape


@pytest.mark.slow
def test_killed_process_resumes(tmp_path: Path) -> None:
    """A real SIGKILL mid-prepare: the rerun completes and equals a one-shot cache."""
    import os
    import signal
    import subprocess
    import sys
    import time

    index = _many(tmp_path, n=24)
    index.to_parquet(tmp_path / "index.parquet")
    out = tmp_path / "killed"
    code = (
        "import pandas as pd; from bench.data.cache import prepare; "
        f"prepare(pd.read_parquet({str(tmp_path / 'index.parquet')!r}), {str(out)!r}, size=24, native=True, n_shards=24)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "shards").is_dir() and any(p.name.startswith("shard-") for p in (out / "shards").iterdir()):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists(), "the run finished before it could be killed"
    prepare(index, out, size=24, native=True, n_shards=24)
    prepare(index, tmp_path / "one", size=24, native=True)
    _same_cache(out, tmp_path / "one")


@pytest.mark.slow
def test_cli_job_array_tasks_commit_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench data prepare SITE --n-shards N --shard I --merge`: the last task to finish commits."""
    from bench.cli import main
    from bench.data.synthetic.padchest import write
    from bench.data.sources import cache_dir_for, open_cache

    write(tmp_path / "pc", seed=2, scale=0.02)
    args = ["data", "prepare", "padchest", "--root", str(tmp_path / "pc"), "--size", "16", "--cache-dir", str(tmp_path / "c")]
    for shard in (1, 0, 2):
        assert main([*args, "--n-shards", "3", "--shard", str(shard), "--merge"]) == 0
        committed = open_cache(tmp_path / "c", "padchest", {}, 16) is not None
        assert committed == (shard == 2)  # a stage sees the cache only once every shard is in
    assert "cache committed" in capsys.readouterr().out
    assert main([*args, "--shard", "0"]) == 2  # --shard without --n-shards
    one = tmp_path / "one"
    assert main(["data", "prepare", "padchest", "--root", str(tmp_path / "pc"), "--size", "16", "--cache-dir", str(one), "--workers", "1"]) == 0
    a = cache_dir_for(tmp_path / "c", "padchest", {}) / "size16"
    b = cache_dir_for(one, "padchest", {}) / "size16"
    assert (a / "images_16.npy").read_bytes() == (b / "images_16.npy").read_bytes()


def test_parallel_workers_share_shards_dynamically_and_match_one_process(tmp_path: Path) -> None:
    """Issue 13 §4: every process (this one included) claims the next unfinished shard;
    the cache is bit-identical to a one-process prepare whatever the shard count."""
    index = _many(tmp_path, n=12)
    kw = dict(size=24, native=True)
    one = prepare(index, tmp_path / "one", **kw)
    many = prepare(index, tmp_path / "many", workers=3, n_shards=12, **kw)
    assert many == one
    _same_cache(tmp_path / "many", tmp_path / "one")


def test_parallel_fail_policy_stops_every_worker(tmp_path: Path) -> None:
    index = _many(tmp_path, n=12)
    with pytest.raises(ImageReadError, match="im3.png"):
        prepare(index, tmp_path / "cache", size=24, on_error="fail", workers=2, n_shards=12)
    assert not (tmp_path / "cache" / MANIFEST).exists()
    # the failing shard left no temporaries and is not marked finished
    left = [p.name for p in (tmp_path / "cache" / "shards").iterdir()]
    assert not [n for n in left if n.startswith(".")] and "shard-00003-of-00012" not in left


def test_claims_hand_out_each_shard_once() -> None:
    import multiprocessing

    from bench.data.cache_shards import LocalClaims, SharedClaims

    for claims in (LocalClaims(), SharedClaims(multiprocessing.get_context("spawn"))):
        assert [claims.next() for _ in range(3)] == [0, 1, 2]
        claims.stop()
        assert claims.next() is None


def test_worker_module_does_not_import_pandas() -> None:
    """Shard workers fork from a server that imports only `bench.data.cache_shards`."""
    import subprocess
    import sys

    code = "import sys, bench.data.cache_shards; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plan_shards_fixes_the_count_and_lists_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.data import cache
    from bench.data.cache import plan_shards

    index = _many(tmp_path, n=7)
    assert plan_shards(index, tmp_path / "c", 24, n_shards=3) == (3, [0, 1, 2])
    prepare_shard(index, tmp_path / "c", 24, shard=1, n_shards=3)
    assert plan_shards(index, tmp_path / "c", 24, n_shards=5) == (3, [0, 2])  # the existing plan wins
    monkeypatch.setattr(cache, "DEFAULT_SHARD_ROWS", 3)
    assert plan_shards(index, tmp_path / "d", 24)[0] == 3  # 7 images, about DEFAULT_SHARD_ROWS a shard
    with pytest.raises(FileExistsError, match="other rows or parameters"):
        plan_shards(index, tmp_path / "c", 32, n_shards=3)
