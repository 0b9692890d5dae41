"""Fine-tuning modes through the CLI: multi-class (softmax) tasks, linear probing, few-label subsets."""

from __future__ import annotations

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
