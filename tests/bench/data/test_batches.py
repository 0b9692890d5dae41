"""Batches over an index: DBB sizes that are unusable are skipped and counted, never a crash (issue 12)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.sites import DataError, get_site
from bench.data.batches import BinnedBatches, ImageBatches


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from bench.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("dbb"), seed=2, sites=["nih"], scale=0.05)["nih"]
    return get_site("nih").load_index(root).head(12).copy()


def test_sizes_minus_one_zero_or_missing_are_skipped_and_counted(index) -> None:  # type: ignore[no-untyped-def]
    idx = index.astype({"height": float})
    idx.loc[0, "height"] = -1  # header unreadable at indexing time
    idx.loc[1, "width"] = 0  # header gives an empty image
    idx.loc[2, "height"] = np.nan  # no size at all
    batches = BinnedBatches(idx, patch=8, max_side=64, in_chans=1, seed=0, batch_size=4, min_batches=1)
    assert sorted(batches.bad.paths) == sorted(idx["path"].iloc[:3])
    assert all("no usable size" in why for why in batches.bad.paths.values())
    seen = np.concatenate([kept for _, kept, _, _ in batches.epoch_batches(0)])
    assert sorted(batches.paths[i] for i in seen) == sorted(idx["path"].iloc[3:])


def test_policy_fail_names_the_file(index) -> None:  # type: ignore[no-untyped-def]
    idx = index.copy()
    idx.loc[5, "width"] = 0
    with pytest.raises(DataError, match=rf"{Path(idx.loc[5, 'path']).name}: no usable size in its header \(1 such images\)"):
        BinnedBatches(idx, patch=8, max_side=64, in_chans=1, seed=0, batch_size=4, policy="fail", min_batches=1)


def _one_good_one_truncated(tmp_path: Path) -> pd.DataFrame:
    from PIL import Image

    good = tmp_path / "g.png"
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(good.read_bytes()[:40])  # header intact (sizes known), pixels truncated
    return pd.DataFrame([{"image_id": k, "path": str(p), "height": 16, "width": 16} for k, p in (("g", good), ("b", bad))])


def _fixed(index: pd.DataFrame, policy: str) -> ImageBatches:
    return ImageBatches(index, image_size=16, in_chans=1, classes=None, batch_size=2, seed=0, shuffle=False, policy=policy)


def _binned(index: pd.DataFrame, policy: str) -> BinnedBatches:
    return BinnedBatches(index, patch=8, max_side=16, in_chans=1, seed=0, batch_size=2, min_batches=1, policy=policy)


@pytest.mark.parametrize("make", [_fixed, _binned], ids=["ImageBatches", "BinnedBatches"])
def test_both_batch_classes_skip_count_and_log_an_undecodable_image(make, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """One decode-or-skip path (`PixelSource.read`): the two batch classes used to differ (only one logged)."""
    index = _one_good_one_truncated(tmp_path)
    batches = make(index, "skip")
    with caplog.at_level(logging.WARNING, logger="bench.data.sources"):
        ((_, rows, x, _),) = list(batches.epoch_batches(0))
    assert [batches.paths[i] for i in rows] == [index.loc[0, "path"]] and x.shape[0] == 1
    assert list(batches.bad.paths) == [index.loc[1, "path"]]
    assert any("skipping unreadable image" in r.getMessage() and "b.png" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="b.png"):
        list(make(index, "fail").epoch_batches(0))


def test_binned_batches_pad_each_step_to_its_planned_shape_and_mask_exactly_the_image_patches(index) -> None:  # type: ignore[no-untyped-def]
    from bench.data.dbb import grid_size

    patch, max_side = 8, 48
    batches = BinnedBatches(index, patch=patch, max_side=max_side, in_chans=1, seed=1, batch_size=3, min_batches=1)
    plan = batches.sampler.plan(0)
    seen = []
    for step, rows, x, valid in batches.epoch_batches(0):
        H, W = (int(v) for v in plan.shape[step])
        assert x.shape == (len(rows), 1, H * patch, W * patch) and valid.shape == (len(rows), H * W)
        gh, gw = grid_size(index["height"].to_numpy(int)[rows], index["width"].to_numpy(int)[rows], patch=patch, max_side=max_side)
        assert valid.sum(1).tolist() == (gh * gw).tolist()
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(index)))
