"""Fine-tuning modes through the CLI: multi-class (softmax) tasks, linear probing, few-label subsets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.train.finetune import cross_entropy_onehot, selection_score


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("ft")
    generate(root, seed=5, scale=0.25, sites=["oct"])
    return root


@pytest.mark.slow
def test_multiclass_linear_probe_end_to_end(tmp_path: Path, data: Path) -> None:
    m = tmp_path / "mc.yaml"
    m.write_text(textwrap.dedent(f"""
        name: mc
        data: {{root: {data}}}
        defaults:
          backbone: resnet_tiny_demo
          image_size: 32
          finetune: {{dataset: oct, classes: site, task: multiclass, seeds: [0], epochs: 2, batch_size: 16, lr: 3.0e-3}}
          evaluate: [{{column: "OCT test (top-1)", site: oct, split: test, classes: site}}]
        experiments:
          - {{id: ft}}
          - {{id: lp, finetune: {{mode: linear_probe}}}}
    """))
    results = tmp_path / "r"
    assert main(["run", str(m), "--results", str(results), "--no-mlflow", "--threads", "1"]) == 0
    preds = list((results / "store").glob("evaluate-*/predictions.parquet"))
    assert len(preds) == 2
    for p in preds:
        df = pd.read_parquet(p)
        probs = df[[c for c in df.columns if c.startswith("prob:")]].to_numpy()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)  # softmax
        labels = df[[c for c in df.columns if c.startswith("label:")]].to_numpy()
        assert np.all(labels.sum(1) == 1)
    reports = results / "reports" / "mc"
    assert any("top1" in f.name for f in reports.iterdir()), sorted(f.name for f in reports.iterdir())


def test_cross_entropy_onehot_matches_definition() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    y = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [float("nan")] * 3])
    p = torch.softmax(logits[:2], 1)
    expected = -(torch.log(p[0, 1]) + torch.log(p[1, 0])) / 2
    assert torch.allclose(cross_entropy_onehot(logits, y), expected)


def test_selection_score_balanced_accuracy_by_hand() -> None:
    y = np.eye(3)[[0, 0, 0, 1, 2]]
    probs = np.eye(3)[[0, 0, 1, 1, 1]]  # recalls: class0 2/3, class1 1, class2 0
    assert selection_score(y, probs, True) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_all_nan_validation_score_names_the_cause(tmp_path: Path) -> None:
    """Every validation image is negative for the only class, so AUC is undefined in every
    epoch: the stage fails saying so (not with a missing best.tmp.pt)."""
    from bench.data.synthetic.files import save_png

    site = tmp_path / "site"
    rows = []
    rng = np.random.default_rng(0)
    for i in range(32):
        split = "train" if i < 16 else ("val" if i < 24 else "test")
        save_png(rng.random((32, 32)), site / f"img{i:02d}.png")
        rows.append({"image": f"img{i:02d}.png", "patient": f"p{i}", "split": split, "Finding": float(split == "train" and i % 2)})
    pd.DataFrame(rows).to_csv(site / "labels.csv", index=False)
    m = tmp_path / "nan.yaml"
    m.write_text(textwrap.dedent(f"""
        name: nanval
        data: {{root: {tmp_path}, sites: {{generic: {site}}}}}
        defaults:
          backbone: resnet_tiny_demo
          image_size: 32
          finetune:
            dataset: generic
            site_options: {{labels_csv: labels.csv, patient_col: patient, split_col: split}}
            classes: [Finding]
            epochs: 2
            batch_size: 8
          evaluate: [{{column: "test", site: generic, split: test, classes: [Finding], site_options: {{labels_csv: labels.csv, patient_col: patient, split_col: split}}}}]
        experiments:
          - {{id: ft}}
    """))
    results = tmp_path / "r"
    main(["run", str(m), "--results", str(results), "--no-mlflow", "--threads", "1", "--executor", "inline", "--no-report"])
    (status,) = [json.loads(p.read_text()) for p in (results / "store").glob("finetune-*/status.json")]
    assert status["state"] == "failed"
    assert "NaN in every epoch" in status["error"] and "no class has both positive and negative" in status["error"]
    assert "best.tmp.pt" not in status["error"]


def test_best_score_state_from_old_checkpoints_is_read() -> None:
    """Checkpoints written before the rename hold the best validation score as `best_auc`."""
    from bench.train.finetune import _migrate_state

    state = {"best_auc": 0.7, "best_epoch": 3, "bad_epochs": 0}
    _migrate_state(state)
    assert state == {"best_score": 0.7, "best_epoch": 3, "bad_epochs": 0}


def test_why_no_score_explains_each_case() -> None:
    from bench.train.finetune import why_no_score

    assert "both positive and negative" in why_no_score(np.zeros((5, 2)), np.full((5, 2), 0.5), False)
    assert "not finite" in why_no_score(np.eye(2)[[0, 1, 0]], np.full((3, 2), np.nan), False)
    assert "no validation image has a known class" in why_no_score(np.full((3, 2), np.nan), np.full((3, 2), 0.5), True)
    assert "could be read" in why_no_score(np.zeros((0, 2)), np.zeros((0, 0)), True)
