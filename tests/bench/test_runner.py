"""Report building from the store after a DBB pre-training that met an image with no usable size.

Issues 12 and 14.7: an image whose header gives no size (size -1 in the index) was skipped
by the pre-training but crashed report building (`ValueError: image sizes must be
positive` in the token table), and `bench report` re-read the site index, so it failed
once the data folder was gone. The pre-training now stores the sizes it binned
(`sizes.parquet`) and the token table is built from the store.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from tiny_matrix import run_args, tiny_matrix


def _empty_png(path: Path) -> None:
    """A PNG whose IHDR says 0 x 0 pixels: no reader can give it a size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """`bench run` of a DBB MAE pre-training on NIH with one empty-header training image."""
    from bench.data.sites import get_site
    from bench.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("runner")
    data = tmp / "data"
    generate(data, seed=4, scale=0.1, sites=["nih"])
    index = get_site("nih").load_index(data / "nih")
    victim = Path(index.loc[index["split"] == "train", "path"].iloc[0])
    _empty_png(victim)
    matrix = tiny_matrix(tmp / "dbb.yaml", data, name="dbb", experiments=[{
        "id": "x",
        "pretrain": {"method": "mae", "dataset": "nih", "splits": ["train"], "epochs": 1, "batch_size": 8,
                     "batching": {"mode": "dbb", "max_side": 64, "options": {"min_batches": 1}}},
    }])
    results = tmp / "results"
    rc = main(run_args(matrix, results, "--image-policy", "skip", "--executor", "inline"))
    return {"rc": str(rc), "data": data, "matrix": matrix, "results": results, "victim": victim,
            "n_train": str(int((index["split"] == "train").sum()))}  # fmt: skip


def _tokens(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "reports" / "dbb" / "table_tokens_compute.csv")


@pytest.mark.slow
def test_empty_header_image_is_skipped_counted_and_reports_are_written(run: dict) -> None:
    assert run["rc"] == "0"
    (pre,) = (run["results"] / "store").glob("pretrain-*")
    status = json.loads((pre / "status.json").read_text())
    assert status["state"] == "done" and status["summary"]["bad_images"] == 1
    assert "sizes.parquet" in status["outputs"]
    assert str(run["victim"]) in (pre / "log.txt").read_text()
    sizes = pd.read_parquet(pre / "sizes.parquet")
    assert len(sizes) == int(run["n_train"]) - 1 and (sizes[["height", "width"]] > 0).all().all()
    assert run["victim"].stem not in set(sizes["image_id"])
    assert len(_tokens(run["results"])) > 0


@pytest.mark.slow
def test_bench_report_needs_only_the_store(run: dict, tmp_path: Path) -> None:
    """With the data folder gone, `bench report` rebuilds the same token table from `sizes.parquet`."""
    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    shutil.rmtree(results / "reports")
    away = tmp_path / "data_moved_away"
    shutil.move(run["data"], away)
    try:
        assert main(["report", str(run["matrix"]), "--results", str(results), "--no-mlflow"]) == 0
    finally:
        shutil.move(away, run["data"])
    pd.testing.assert_frame_equal(_tokens(results), _tokens(run["results"]))


@pytest.mark.slow
def test_old_store_falls_back_to_the_index_without_unusable_sizes(run: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store written before `sizes.parquet` existed: the index is read and the size -1 image left out."""
    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    shutil.rmtree(results / "reports")
    (pre,) = (results / "store").glob("pretrain-*")
    (pre / "sizes.parquet").unlink()
    with caplog.at_level("WARNING"):
        assert main(["report", str(run["matrix"]), "--results", str(results), "--no-mlflow"]) == 0
    assert "token table: 1 of" in caplog.text and "no usable size" in caplog.text
    pd.testing.assert_frame_equal(_tokens(results), _tokens(run["results"]))
