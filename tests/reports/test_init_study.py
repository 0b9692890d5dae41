"""The DINOv2-initialisation study's tables (`reports.init_study`) built through `build_reports`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.sites import DataError
from reports.build import build_reports
from reports.init_study import analyse, format_p, init_row_label
from reports.aggregate import run_metrics
from reports.statistics import paired_bootstrap_difference
from tests.reports.conftest import check_latex_structure, write_predictions

CLASSES = ["Cardiomegaly", "Effusion"]
META = {
    "DINOv2": {"meta:Initialisation": "DINOv2", "meta:Pre-training": "None", "meta:Pre-training dataset": "-"},
    "IN21k": {"meta:Initialisation": "ImageNet-21k", "meta:Pre-training": "None", "meta:Pre-training dataset": "-"},
    "MIMIC": {"meta:Initialisation": "ImageNet-21k", "meta:Pre-training": "Supervised", "meta:Pre-training dataset": "MIMIC-CXR"},
}


def _scores(y: np.ndarray, signal: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(0.5 + signal * (y - 0.5) + rng.normal(0, 0.2, y.shape), 0, 1)


def study_manifest(tmp_path: Path, columns: list[str], n: int = 300, classes: list[str] = CLASSES) -> pd.DataFrame:
    """DINOv2 strong, ImageNet-21k weak, MIMIC identical to DINOv2 (same scores), on each column."""
    rows = []
    for d, col in enumerate(columns):
        rng = np.random.default_rng(d)
        y = rng.integers(0, 2, (n, len(classes))).astype(float)
        y[:5, 1] = np.nan  # unknown labels are masked
        yv = rng.integers(0, 2, (n // 2, len(classes))).astype(float)
        strong, strong_v = _scores(np.nan_to_num(y), 0.6, rng), _scores(yv, 0.6, rng)
        weak, weak_v = _scores(np.nan_to_num(y), 0.1, rng), _scores(yv, 0.1, rng)
        for exp, (s, sv) in {"DINOv2": (strong, strong_v), "IN21k": (weak, weak_v), "MIMIC": (strong, strong_v)}.items():
            e = f"{col}/{exp}"
            f = write_predictions(tmp_path / f"{d}_{exp}.parquet", y, s, classes)
            v = write_predictions(tmp_path / f"{d}_{exp}_val.parquet", yv, sv, classes, split="val")
            rows.append({"experiment": e, "seed": 0, "column": col, "site": col, "split": "test", "classes": classes,
                         "predictions": str(f), "val_predictions": str(v), "stage_key": f"evaluate-{d}{exp}",
                         "run_id": f"r{d}{exp}", **META[exp]})
    return pd.DataFrame(rows)


@pytest.fixture
def manifest(tmp_path: Path) -> pd.DataFrame:
    """Two datasets (see `study_manifest`)."""
    return study_manifest(tmp_path, ["VinDr-CXR", "ChestX-ray14"])


def test_row_labels_are_initialisations(manifest: pd.DataFrame) -> None:
    labels = [init_row_label(manifest[manifest["experiment"] == e], e) for e in manifest["experiment"]]
    assert labels[:3] == ["DINOv2", "ImageNet-21k", "MIMIC-CXR (supervised)"]


def test_p_values_identical_scores_one_and_a_clearly_better_model_small(manifest: pd.DataFrame) -> None:
    ml = run_metrics(manifest)
    st = analyse(ml, manifest, reference="DINOv2", n_boot=300, seed=7)
    assert st.rows == ["DINOv2", "ImageNet-21k", "MIMIC-CXR (supervised)"]
    for col in ("VinDr-CXR", "ChestX-ray14"):
        same = st.comparisons[("MIMIC-CXR (supervised)", col)].diff
        assert same.p_value == 1.0 and same.estimate == 0.0
        worse = st.comparisons[("ImageNet-21k", col)].diff
        assert worse.estimate < -0.2 and worse.p_value < 0.01
    # the bootstrap is seeded: same seed, same p-values; and it is the statistics module's paired bootstrap
    again = analyse(ml, manifest, reference="DINOv2", n_boot=300, seed=7)
    c = st.comparisons[("ImageNet-21k", "VinDr-CXR")]
    assert again.comparisons[("ImageNet-21k", "VinDr-CXR")].diff == c.diff
    preds = {e: pd.read_parquet(p) for e, p in zip(manifest["experiment"], manifest["predictions"])}
    y = preds["VinDr-CXR/DINOv2"][[f"label:{k}" for k in CLASSES]].to_numpy()
    ref = paired_bootstrap_difference(
        y,
        preds["VinDr-CXR/IN21k"][[f"prob:{k}" for k in CLASSES]].to_numpy(),
        preds["VinDr-CXR/DINOv2"][[f"prob:{k}" for k in CLASSES]].to_numpy(),
        n_boot=300,
        seed=7,
    )
    assert c.diff.p_value == ref.p_value and c.diff.low == pytest.approx(ref.low)


def test_youden_metrics_use_the_validation_threshold(manifest: pd.DataFrame) -> None:
    from reports.youden import rates_at, youden_thresholds

    st = analyse(run_metrics(manifest), manifest, reference="DINOv2", n_boot=50)
    fm = st.findings[("DINOv2", "VinDr-CXR")][0]
    row = manifest.iloc[0]
    val, test = pd.read_parquet(row["val_predictions"]), pd.read_parquet(row["predictions"])
    cols = lambda df, p: df[[f"{p}:{k}" for k in CLASSES]].to_numpy()  # noqa: E731
    thr = youden_thresholds(cols(val, "label"), cols(val, "prob"))
    np.testing.assert_array_equal(fm.youden_threshold, thr)
    np.testing.assert_array_equal(fm.at_youden["sensitivity"], rates_at(cols(test, "label"), cols(test, "prob"), thr)["sensitivity"])
    np.testing.assert_array_equal(fm.at_fixed["specificity"], rates_at(cols(test, "label"), cols(test, "prob"), 0.5)["specificity"])


def test_build_reports_writes_the_study_tables(manifest: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = build_reports(manifest, out, title="t", init_reference="DINOv2", n_boot=200, make_figures=False)
    names = {p.name for p in written}
    for stem in ("init_study_auc", "init_study_summary", "init_study_findings_vindr_cxr", "init_study_findings_chestx_ray14"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= names
    md = (out / "init_study_auc.md").read_text()
    head, vindr = md.splitlines()[2], next(line for line in md.splitlines() if line.startswith("| VinDr-CXR"))
    assert head.startswith("| Dataset | DINOv2 AUC | ImageNet-21k AUC | ImageNet-21k p | MIMIC-CXR (supervised) AUC |")
    # ImageNet-21k clearly worse: p below the resolution of B = 200; MIMIC identical to DINOv2: p = 1, both bold
    assert vindr.count("<0.005") == 1 and vindr.endswith("| 1.000 |") and vindr.count("**") == 4
    lines = list(csv.DictReader((out / "init_study_pvalues.csv").open()))
    assert len(lines) == 4 and {r["row"] for r in lines} == {"ImageNet-21k", "MIMIC-CXR (supervised)"}
    assert {float(r["p_value"]) for r in lines if r["row"] == "MIMIC-CXR (supervised)"} == {1.0}
    for tex in out.glob("init_study_*.tex"):
        check_latex_structure(tex.read_text())
    findings = (out / "init_study_findings_vindr_cxr.md").read_text()
    assert "Sensitivity (Youden)" in findings and "Specificity (0.5)" in findings and "Effusion" in findings


def test_missing_validation_predictions_leave_youden_empty_and_say_so(manifest: pd.DataFrame, tmp_path: Path) -> None:
    m = manifest.drop(columns=["val_predictions"])
    st = analyse(run_metrics(m), m, reference="DINOv2", n_boot=20)
    assert len(st.no_validation) == 6
    assert np.isnan(st.findings[("DINOv2", "VinDr-CXR")][0].at_youden["accuracy"]).all()
    assert not np.isnan(st.findings[("DINOv2", "VinDr-CXR")][0].at_fixed["accuracy"]).any()


def test_errors_name_the_problem(manifest: pd.DataFrame) -> None:
    ml = run_metrics(manifest)
    with pytest.raises(DataError, match="reference row 'SimCLR'"):
        analyse(ml, manifest, reference="SimCLR")
    two = manifest.copy()
    two.loc[two["experiment"] == "VinDr-CXR/MIMIC", "meta:Pre-training"] = "None"  # now a second ImageNet-21k row
    with pytest.raises(DataError, match="init_row"):
        analyse(run_metrics(two), two, reference="DINOv2")


def test_format_p() -> None:
    assert format_p(0.0, 1000) == "<0.001" and format_p(0.0, 200) == "<0.005"
    assert format_p(0.0234, 1000) == "0.023" and format_p(float("nan"), 10) == "-"


@pytest.mark.slow  # pdflatex per table (~15 s)
@pytest.mark.skipif(not __import__("reports.latex").latex.pdflatex_available(), reason="pdflatex not installed")
def test_the_study_shaped_tables_compile_and_fit_a_page(tmp_path: Path) -> None:
    """Six datasets (the AUC table has 12 number columns) and 14 findings (CheXpert's count)."""
    from reports.latex import compile_tables

    findings = [f"Finding {i}" for i in range(14)]
    cols = ["VinDr-CXR", "ChestX-ray14", "CheXpert", "MIMIC-CXR", "PadChest", "Private (UKA-CXR)"]
    m = study_manifest(tmp_path / "p", cols, n=80, classes=findings)
    out = tmp_path / "out"
    build_reports(m, out, title="t", init_reference="DINOv2", n_boot=20, make_figures=False)
    tex = sorted(out.glob("init_study_*.tex"))
    assert len(tex) == 2 + len(cols)
    results = compile_tables(tex, tmp_path / "latex")
    assert all(r.ok for r in results), [r.name for r in results if not r.ok]
    assert not {r.name: r.worst_pt for r in results if r.worst_pt > 1.0}
