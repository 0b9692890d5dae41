"""Pre-training stages through the CLI: DBB variable-resolution MAE and supervised pre-training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from tiny_matrix import run_args, tiny_matrix


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("pre")
    generate(root, seed=4, scale=0.2, sites=["nih", "chexpert"])
    return root


def _run(tmp_path: Path, data: Path, pretrain: str) -> tuple[int, Path]:
    m = tiny_matrix(tmp_path / "p.yaml", data, name="p", experiments=[f"{{id: x, pretrain: {pretrain}}}"])
    results = tmp_path / "r"
    return main(run_args(m, results, "--no-report")), results / "store"


@pytest.mark.slow
def test_dbb_pretraining_end_to_end(tmp_path: Path, data: Path) -> None:
    rc, store = _run(
        tmp_path,
        data,
        "{method: mae, dataset: chexpert, site_options: {split: train}, splits: [train], epochs: 1, batch_size: 8, "
        "batching: {mode: dbb, max_side: 64, options: {min_batches: 1}}}",
    )
    assert rc == 0
    (pre,) = list(store.glob("pretrain-*"))
    log = (pre / "log.txt").read_text()
    assert "DBB:" in log and "bins" in log
    enc = torch.load(pre / "encoder.pt", weights_only=True)
    assert "pos_embed" in enc and not any(k.startswith("decoder") for k in enc)
    assert list(store.glob("evaluate-*/predictions.parquet"))


@pytest.mark.slow
def test_supervised_pretraining_exports_headless_encoder(tmp_path: Path, data: Path) -> None:
    rc, store = _run(tmp_path, data, "{method: supervised, dataset: chexpert, site_options: {split: train}, splits: [train], classes: harmonised5, epochs: 1, batch_size: 16}")
    assert rc == 0
    (pre,) = list(store.glob("pretrain-*"))
    enc = torch.load(pre / "encoder.pt", weights_only=True)
    assert not any(k.startswith("head.") for k in enc) and "blocks.0.attn.qkv.weight" in enc


def test_dbb_with_a_method_that_cannot_pad_is_a_matrix_error(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _ = _run(tmp_path, data, "{method: dino, dataset: nih, batching: {mode: dbb}}")
    assert rc == 2
    assert "experiments[0].pretrain: batching.mode 'dbb' needs a method" in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_is_reproducible_across_processes(tmp_path: Path, data: Path) -> None:
    """The same pre-training stage run twice (local executor: fresh subprocesses) gives identical weights."""
    encoders = []
    for run in ("a", "b"):
        m = tiny_matrix(tmp_path / f"{run}.yaml", data, name="r", pretrain={"method": "mae", "dataset": "nih", "epochs": 1, "batch_size": 16})
        results = tmp_path / run
        assert main(["run", str(m), "--results", str(results), "--no-mlflow", "--no-report", "--executor", "local", "--max-parallel", "1"]) == 0
        (pre,) = list((results / "store").glob("pretrain-*"))
        encoders.append(torch.load(pre / "encoder.pt", weights_only=True))
    assert encoders[0].keys() == encoders[1].keys()
    for k in encoders[0]:
        assert torch.equal(encoders[0][k], encoders[1][k]), k
