"""End to end through the `bench` CLI: a miniature matrix, inline and local executors.

Checks what a user relies on: reports exist and hold the numbers that scikit-learn
computes from the stored predictions, every stage is an MLflow run under one parent,
and a second `bench run` executes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bench.cli import main
from bench.data.labels import HARMONISED5, NIH14

MINI = """
name: mini
description: "miniature end-to-end matrix"
data:
  root: {data}
  synthetic: {{seed: 1, scale: 0.25}}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  pretrain: {{epochs: 1, batch_size: 16, lr: 1.0e-3}}
  finetune: {{dataset: nih, classes: nih14, seeds: [0, 1], epochs: 1, batch_size: 16, lr: 1.0e-3}}
  evaluate:
    - {{column: "NIH 14 class avg.", site: nih, split: test, classes: nih14, location: "Bethesda (USA)"}}
    - {{column: "NIH 5 class avg.", site: nih, split: test, classes: harmonised5}}
    - {{column: "CheXpert vali", site: chexpert, split: val, site_options: {{split: valid}}, classes: harmonised5}}
experiments:
  - {{id: "2.1"}}
  - {{id: "3.1", pretrain: {{method: mae, dataset: nih}}}}
"""


def _matrix(tmp_path: Path, data: Path) -> Path:
    p = tmp_path / "mini.yaml"
    p.write_text(textwrap.dedent(MINI).format(data=data))
    return p


def _mean_auc(pred: pd.DataFrame, classes: tuple[str, ...]) -> float:
    aucs = []
    for c in classes:
        y, s = pred[f"label:{c}"], pred[f"prob:{c}"]
        keep = y.notna()
        if keep.sum() and y[keep].nunique() == 2:
            aucs.append(roc_auc_score(y[keep], s[keep]))
    return float(np.mean(aucs))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root, seed=1, scale=0.25, sites=["nih", "chexpert"])
    return root


@pytest.mark.slow
def test_inline_run_report_mlflow_and_rerun(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = _matrix(tmp_path, data_root)
    results = tmp_path / "results"
    assert main(["run", str(m), "--results", str(results), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    # 1 pretrain + 4 finetune + 8 evaluate
    assert "13 stages" in out and "ran 13" in out

    rep = results / "reports" / "mini"
    md = (rep / "table2_multisite.md").read_text()
    tex = (rep / "table2_multisite.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    if shutil.which("pdflatex"):  # the generated table compiles as-is in a standard article
        doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\n\\end{document}\n"
        (tmp_path / "t.tex").write_text(doc)
        r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stdout.decode(errors="replace")[-1500:]
    # the table's numbers are what sklearn gives on the stored predictions
    store = results / "store"
    per_seed: dict[tuple[str, str], list[float]] = {}
    from bench.matrix import load_matrix
    from bench.plan import build_plan

    plan = build_plan(load_matrix(m))
    for cell in plan.cells:
        pred = pd.read_parquet(store / cell.evaluate_key / "predictions.parquet")
        classes = NIH14 if cell.target.classes == "nih14" else HARMONISED5
        per_seed.setdefault((cell.experiment, cell.target.column), []).append(_mean_auc(pred, classes))
    for (exp, col), vals in per_seed.items():
        cell_text = f"{np.mean(vals):.4f} ({np.std(vals, ddof=1):.4f})"
        assert cell_text in md, (exp, col, cell_text)

    # MLflow: one parent run, one child per stage, each with the stage key
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mini")  # one MLflow experiment per matrix
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kind") == "matrix"]
    children = [r for r in runs if "stage_key" in r.data.tags]
    assert len(parents) == 1 and len(children) == 13
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert {r.data.tags["stage_key"] for r in children} == set(plan.stages)
    ft = [r for r in children if r.data.tags["stage_kind"] == "finetune"]
    assert all("val_mean_auc" in r.data.metrics for r in ft)
    # every run carries the axes it is compared by, and run names are readable and distinct
    for r in children:
        assert r.data.tags["matrix"] == "mini" and r.data.tags["experiments"]
        assert {"backbone", "init", "pretrain_method", "pretrain_dataset"} <= set(r.data.tags)
    assert len({r.info.run_name for r in children}) == len(children)
    ev = [r for r in children if r.data.tags["stage_kind"] == "evaluate"]
    assert all(" · eval " in r.info.run_name and r.data.tags["site"] for r in ev)

    # second run: zero stages executed, nothing overwritten
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("predictions.parquet")}
    assert main(["run", str(m), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "ran 0, skipped 13" in out and "nothing to do" in out
    assert {p: p.stat().st_mtime_ns for p in store.rglob("predictions.parquet")} == mtimes

    # report regenerates without training
    (rep / "table2_multisite.md").unlink()
    assert main(["report", str(m), "--results", str(results)]) == 0
    assert (rep / "table2_multisite.md").read_text() == md


@pytest.mark.slow
def test_local_executor_subprocesses(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = _matrix(tmp_path, data_root)
    results = tmp_path / "results"
    text = m.read_text().replace('  - {id: "3.1", pretrain: {method: mae, dataset: nih}}\n', "")
    text = text.replace("seeds: [0, 1]", "seeds: [0]")
    m.write_text(text)
    rc = main(["run", str(m), "--results", str(results), "--executor", "local", "--max-parallel", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ran 3" in out
    # the stages really ran in other processes (submitit job folders with their logs)
    job_logs = list((results / "submitit").rglob("*_log.out"))
    assert len(job_logs) == 1  # the fine-tune job also ran its two evaluations (a chain)
    pids = {json.loads(p.read_text())["pid"] for p in (results / "store").glob("*/status.json")}
    assert os.getpid() not in pids and len(pids) >= 1
    assert (results / "reports" / "mini" / "table2_multisite.md").exists()


def test_bad_matrix_exit_code_and_message(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nexperiments:\n  - {id: a, backbone: nope, evaluate: [{column: c, site: nih}]}\n")
    r = subprocess.run([sys.executable, "-m", "bench.cli", "plan", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{p}: experiments[0].backbone: 'nope' is not one of" in r.stderr


def test_missing_data_root_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(f"""
        name: m
        data: {{root: {tmp_path / 'nowhere'}}}
        defaults:
          backbone: vit_tiny_demo
          image_size: 32
          finetune: {{dataset: nih, epochs: 1}}
          evaluate: [{{column: c, site: nih}}]
        experiments: [{{id: a}}]
    """))
    rc = main(["run", str(p), "--results", str(tmp_path / "r"), "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{p}: data root does not exist: site 'nih' expected at {tmp_path / 'nowhere' / 'nih'}" in err
    assert not (tmp_path / "r" / "store").exists() or not any((tmp_path / "r" / "store").iterdir())
