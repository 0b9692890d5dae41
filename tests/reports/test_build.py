"""build_reports end to end on real parquet files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data.errors import DataError
from reports import build_reports


def _manifest(make_row, rng, n=60) -> pd.DataFrame:
    classes = ["Atelectasis", "Edema"]
    y = (rng.random((n, 2)) < 0.4).astype(float)
    rows = []
    for exp, strength in (("1.1", 0.2), ("3.4", 0.6)):
        for seed in (0, 1, 2):
            s = np.clip(strength * y + rng.random((n, 2)) * (1 - strength), 0, 1)
            for col, loc in (("NIH 5 class avg.", "Bethesda (USA)"), ("CheXpert vali", "Stanford (USA)")):
                rows.append(make_row(exp, seed, col, y, s, classes, n=n, location=loc))
    return pd.DataFrame(rows)


def test_build_writes_table2_and_index(make_row, tmp_path) -> None:
    m = _manifest(make_row, np.random.default_rng(1))
    out = tmp_path / "out"
    paths = build_reports(m, out, title="Smoke")
    names = {p.name for p in paths}
    assert {"table2_multisite.tex", "table2_multisite.md", "table2_multisite.csv", "index.md"} <= names
    assert all(p.is_file() for p in paths)
    index = (out / "index.md").read_text()
    assert index.startswith("# Smoke")
    for rid in m["run_id"]:
        assert rid in index
    md = (out / "table2_multisite.md").read_text()
    assert "| 3.4 | **" in md  # the strong experiment is best in both columns
    again = build_reports(m, out, title="Smoke")
    assert [p.name for p in again] == [p.name for p in paths]
    assert (out / "table2_multisite.md").read_text() == md


def test_build_rejects_bad_manifest(tmp_path) -> None:
    with pytest.raises(DataError, match="lacks keys"):
        build_reports(pd.DataFrame({"experiment": ["a"]}), tmp_path, title="x")


def _full_manifest(make_row) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    classes = ["Atelectasis", "Edema"]
    y = (rng.random((100, 2)) < 0.35).astype(float)
    rows = []
    for i, (exp, strength) in enumerate((("2.1", 0.05), ("3.3", 0.5), ("3.4", 0.5))):
        for seed in (0, 11):
            s = np.clip(strength * y + (1 - strength) * rng.random((100, 2)), 0, 1)
            if exp == "3.4":
                s = np.clip(prev + 0.001 * rng.random((100, 2)), 0, 1)  # same model up to noise
            prev = s
            rows.append(
                make_row(exp, seed, "CheXpert vali", y, s, classes, n=202, location="Stanford (USA)",
                         **{"meta:Initialisation": ["Random", "Random", "ImageNet1k"][i]},
                         pretrain_size=[50000, 100000, 250000][i], series="GMML")
            )
    onehot = np.eye(3)[rng.integers(0, 3, 50)]
    for exp in ("Random", "MAE"):
        for seed in (0, 1):
            rows.append(make_row(exp, seed, "ARC", onehot, rng.random((50, 3)), ["a", "b", "c"], task="multiclass", n_train=1000))
    return pd.DataFrame(rows)


def test_full_build_writes_every_applicable_output(make_row, tmp_path, check_latex) -> None:
    m = _full_manifest(make_row)
    tokens = pd.DataFrame({"strategy": ["pad", "dbb"], "tokens_processed": [9.22e8, 1.1e9]})
    out = tmp_path / "full"
    paths = build_reports(
        m, out, title="Full", reliability_column="CheXpert vali", compat=True, token_frame=tokens,
        n_boot=200, make_figures=False,
    )
    stems = {p.stem for p in paths}
    assert {
        "table2_multisite", "table2_multisite_ci", "table5_options", "table3_per_class_chexpert_vali",
        "table6_pretrain_size_chexpert_vali", "table7_threshold_metrics", "table8_oracle_auc",
        "table8_oracle_auc_compat", "table8_oracle_auc_per_label", "table_calibration", "table_random_baselines",
        "table1_experiments", "table7_threshold_metrics_more", "degenerate_cells",
        "table_top1_accuracy", "table_downstream", "table_tokens_compute", "confusion_matrices", "index",
    } == stems
    t2 = (out / "table2_multisite.md").read_text()
    # 3.3 and 3.4 are the same model up to noise: each is bold (best) or carries the dagger; 2.1 neither
    line_21 = [l for l in t2.splitlines() if l.startswith("| 2.1 |")][0]
    lines_3x = [l for l in t2.splitlines() if l.startswith(("| 3.3 |", "| 3.4 |"))]
    assert "†" not in line_21 and "**" not in line_21
    assert all(("†" in l) != ("**" in l) for l in lines_3x)
    for tex in out.glob("*.tex"):
        check_latex(tex.read_text())
    index = (out / "index.md").read_text()
    assert "#provenance-table7_threshold_metrics" in index and "### provenance table7_threshold_metrics" in index
    assert (out / "confusion_matrices.csv").read_text().count("\n") == 1 + 2 * 9


def test_unknown_reliability_column(make_row, tmp_path) -> None:
    with pytest.raises(DataError, match="reliability_column 'nope'"):
        build_reports(_full_manifest(make_row), tmp_path, title="x", reliability_column="nope")


@pytest.mark.slow
def test_build_with_figures(make_row, tmp_path) -> None:
    paths = build_reports(_full_manifest(make_row), tmp_path, title="F", reliability_column="CheXpert vali", n_boot=100)
    names = {p.name for p in paths}
    assert {"figure2_reliability.pdf", "figure2_reliability.png", "figure3_pretrain_size_chexpert_vali.png"} <= names
    assert "figure2_reliability.png" in (tmp_path / "index.md").read_text()
