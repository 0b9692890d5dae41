"""The image-size cache behind `attach_sizes`: reused while files are unchanged, refreshed when they change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.sites import generic


def test_sizes_are_cached_and_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for i, (h, w) in enumerate([(10, 20), (30, 40)]):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((h, w), np.uint8)).save(p)
        paths.append(str(p))
    df = pd.DataFrame({"path": paths})
    first = generic.attach_sizes(df)
    assert first[["height", "width"]].values.tolist() == [[10, 20], [30, 40]]
    assert len(list((tmp_path / "cache" / "sizes").glob("*.parquet"))) == 1

    reads: list[str] = []
    real = generic.image_size
    monkeypatch.setattr(generic, "image_size", lambda p: reads.append(str(p)) or real(p))
    again = generic.attach_sizes(df)
    assert again[["height", "width"]].values.tolist() == [[10, 20], [30, 40]] and reads == []

    # a replaced file (new size, new mtime) is read again
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(paths[1])
    os.utime(paths[1], ns=(1, 2_000_000_000_000_000_000))
    third = generic.attach_sizes(df)
    assert third[["height", "width"]].values.tolist() == [[10, 20], [50, 60]] and reads == [paths[1]]
