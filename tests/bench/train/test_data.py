"""DBB batches over an index whose sizes include unusable ones (issue 12: skipped and counted, never a crash)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data.sites import DataError, get_site
from bench.train.data import BinnedBatches


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
