"""`bench data` commands: synthetic data, dataset tables, prepared caches that stages really read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.data.labels import HARMONISED5
from tiny_matrix import tiny_matrix


def _one_finetune_matrix(tmp_path: Path, data: Path) -> Path:
    """A one-stage-chain matrix: a tiny ResNet fine-tuned on NIH for one epoch, evaluated on NIH test."""
    return tiny_matrix(tmp_path / "c.yaml", data, name="c", backbone="resnet_tiny_demo", experiments=[{"id": "a"}])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_data")
    assert main(["data", "synth", "--out", str(root), "--seed", "6", "--scale", "0.2", "--sites", "nih,chexpert"]) == 0
    return root


def test_stats_tables_match_the_index(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.data.index import load_index

    out = tmp_path / "tables"
    assert main(["data", "stats", "nih", "--data-root", str(data), "--out", str(out)]) == 0
    table = pd.read_csv(out / "nih_stats.csv", index_col=0)
    index = load_index("nih", str(data / "nih"), {}, None)
    assert int(table.loc["Scans [No.]", "All"]) == len(index)
    assert int(table.loc["Patients [No.]", "All"]) == index["patient_id"].nunique()
    for c in HARMONISED5:
        known = index[c].dropna()
        assert float(table.loc[f"{c} [% of scans]", "All"]) == pytest.approx(100 * known.mean(), abs=0.051)
    assert (out / "nih_stats.tex").read_text().count("\\toprule") == 1


@pytest.mark.slow
def test_prepared_cache_is_what_stages_read(data: Path, tmp_path: Path) -> None:
    results = tmp_path / "r"
    assert main(["data", "prepare", "nih", "--data-root", str(data), "--size", "32", "--cache-dir", str(results / "cache")]) == 0
    # break every source image after its header (size still readable, pixels not): a run that
    # still succeeds with no skipped image read its pixels from the cache
    for png in (data / "nih").rglob("*.png"):
        png.write_bytes(png.read_bytes()[:64])
    m = _one_finetune_matrix(tmp_path, data)
    assert main(["run", str(m), "--results", str(results), "--no-mlflow", "--executor", "inline", "--threads", "1"]) == 0
    (ft,) = list((results / "store").glob("finetune-*"))
    assert "reading pixels from the prepared cache" in (ft / "log.txt").read_text()
    status = json.loads((ft / "status.json").read_text())
    assert status["summary"]["bad_images"] == 0
    (ev,) = list((results / "store").glob("evaluate-*"))
    assert json.loads((ev / "status.json").read_text())["summary"]["bad_images"] == 0


def test_prepare_rejects_both_caches_at_once(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "prepare", "nih", "--data-root", str(data), "--size", "32", "--native", "--cache-dir", str(tmp_path)]) == 2
    assert "two calls" in capsys.readouterr().err


@pytest.mark.slow
def test_corrupt_image_is_skipped_and_reported_or_fails_by_policy(tmp_path: Path) -> None:
    from bench.data.synthetic import generate

    root = tmp_path / "d"
    generate(root, seed=7, scale=0.2, sites=["nih"])
    train_list = (root / "nih" / "train_val_list.txt").read_text().split()
    victim = root / "nih" / "images" / train_list[0]
    victim.write_bytes(b"garbage, not a PNG")  # header and pixels unreadable
    m = _one_finetune_matrix(tmp_path, root)
    results = tmp_path / "skip"
    assert main(["run", str(m), "--results", str(results), "--no-mlflow", "--executor", "inline"]) == 0
    (ft,) = list((results / "store").glob("finetune-*"))
    assert json.loads((ft / "status.json").read_text())["summary"]["bad_images"] == 1
    assert str(victim) in (ft / "log.txt").read_text()

    failing = tmp_path / "fail"
    rc = main(["run", str(m), "--results", str(failing), "--no-mlflow", "--executor", "inline", "--image-policy", "fail"])
    assert rc == 1
    (ft,) = list((failing / "store").glob("finetune-*"))
    status = json.loads((ft / "status.json").read_text())
    assert status["state"] == "failed" and str(victim) in status["error"]


def test_stats_index_each_site_once(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: `bench data stats` indexed every site twice (a CPU-minute of header reads on NIH)."""
    import shutil

    from bench.data.sites import get_site

    fresh = tmp_path / "data"  # a root no index memo of this process has seen
    for site in ("nih", "chexpert"):
        shutil.copytree(data / site, fresh / site)
    calls: list[str] = []
    for site in ("nih", "chexpert"):
        cls = type(get_site(site))
        real = cls.load_index

        def counted(self, root, _real=real, **options):  # type: ignore[no-untyped-def]
            calls.append(self.name)
            return _real(self, root, **options)

        monkeypatch.setattr(cls, "load_index", counted)
    out = tmp_path / "tables"
    assert main(["data", "stats", "nih", "chexpert", "--data-root", str(fresh), "--out", str(out)]) == 0
    assert sorted(calls) == ["chexpert", "nih"]
    assert (out / "datasets_summary.csv").is_file() and (out / "nih_stats.csv").is_file()
