"""Class-weighted BCE (`finetune.loss: weighted_bce`, the DINOv2-initialisation study) and the
fine-tune stage's validation predictions (`val_predictions.parquet`, for Youden thresholds)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.matrix import MatrixError, load_matrix
from bench.train.finetune import positive_weights, weighted_masked_bce
from bench.train.pretrain import masked_bce

NAN = float("nan")


def test_positive_weights_by_hand() -> None:
    y = np.array([[1, 0, 1, NAN], [0, 0, 1, NAN], [0, 1, 1, NAN], [0, NAN, 1, NAN]])
    # class 0: 1 positive, 3 negatives -> 3; class 1: 1 positive, 2 negatives (NaN ignored) -> 2;
    # class 2: only positives -> 1; class 3: no known label -> 1
    np.testing.assert_array_equal(positive_weights(y), [3.0, 2.0, 1.0, 1.0])


def test_weighted_bce_by_hand_with_masked_labels() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, NAN]])
    w = torch.tensor([3.0, 2.0])
    # known entries: (0,0) positive, z=0, weight 3: 3 ln 2; (0,1) negative, z=2: ln(1+e^2);
    # (1,0) negative, z=1: ln(1+e); (1,1) unknown: left out. Mean over the 3 known entries.
    want = (3 * math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e)) / 3
    assert weighted_masked_bce(logits, y, w).item() == pytest.approx(want, rel=1e-6)
    # unit weights: exactly the plain masked BCE
    assert weighted_masked_bce(logits, y, torch.ones(2)).item() == pytest.approx(masked_bce(logits, y).item(), rel=1e-7)
    z = logits.clone().requires_grad_(True)
    weighted_masked_bce(z, y, w).backward()
    assert z.grad is not None and z.grad[1, 1] == 0.0  # no gradient through an unknown label
    assert weighted_masked_bce(logits, torch.full_like(y, NAN), w).item() == 0.0


def test_loss_option_is_validated(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(textwrap.dedent("""
        name: t
        defaults:
          backbone: resnet_tiny_demo
          finetune: {dataset: oct, classes: site, task: multiclass, loss: weighted_bce}
          evaluate: [{column: c, site: oct, classes: site}]
        experiments: [{id: a}]
    """))
    with pytest.raises(MatrixError, match="finetune.loss.*multi-label loss"):
        load_matrix(m)
    m.write_text(m.read_text().replace("weighted_bce", "focal"))
    with pytest.raises(MatrixError, match="finetune.loss.*'focal'"):
        load_matrix(m)


@pytest.mark.slow  # ~18 s wall on 2 loaded cores (a CLI run of two stages)
def test_stage_logs_the_weights_and_writes_validation_predictions(tmp_path: Path) -> None:
    """A generic site with a known train prevalence (4 of 16 positive -> weight 3): the stage log
    states the weight, and `val_predictions.parquet` holds the kept model's probabilities on the
    val split, the same as an evaluate stage scoring that split with `model.pt`."""
    from bench.data.synthetic.files import save_png

    site = tmp_path / "site"
    rows = []
    rng = np.random.default_rng(0)
    for i in range(40):
        split = "train" if i < 16 else ("val" if i < 28 else "test")
        pos = float(i % 4 == 0)
        save_png(np.clip(rng.random((32, 32)) * 0.5 + 0.4 * pos, 0, 1), site / f"img{i:02d}.png")
        rows.append({"image": f"img{i:02d}.png", "patient": f"p{i}", "split": split, "Finding": pos})
    pd.DataFrame(rows).to_csv(site / "labels.csv", index=False)
    opts = "{labels_csv: labels.csv, patient_col: patient, split_col: split}"
    m = tmp_path / "w.yaml"
    m.write_text(textwrap.dedent(f"""
        name: wbce
        data: {{root: {tmp_path}, sites: {{generic: {site}}}}}
        defaults:
          backbone: resnet_tiny_demo
          image_size: 32
          finetune: {{dataset: generic, site_options: {opts}, classes: [Finding], loss: weighted_bce, epochs: 2, batch_size: 8, augment: false}}
          evaluate: [{{column: "val", site: generic, split: val, classes: [Finding], site_options: {opts}}}]
        experiments:
          - {{id: ft, allow_leakage: true}}  # scoring the fine-tuning val split on purpose
    """))
    results = tmp_path / "r"
    args = ["run", str(m), "--results", str(results), "--no-mlflow", "--threads", "1", "--executor", "inline", "--no-report"]
    assert main(args) == 0
    (ft,) = (results / "store").glob("finetune-*")
    assert "positive weight N_neg/N_pos of the train split per class: Finding 3" in (ft / "log.txt").read_text()
    val = pd.read_parquet(ft / "val_predictions.parquet")
    assert list(val["image_id"]) == [f"img{i:02d}" for i in range(16, 28)] and set(val["split"]) == {"val"}
    (ev,) = (results / "store").glob("evaluate-*/predictions.parquet")
    scored = pd.read_parquet(ev)
    np.testing.assert_allclose(val["prob:Finding"], scored["prob:Finding"], atol=1e-6)
    np.testing.assert_array_equal(val["label:Finding"], scored["label:Finding"])


@pytest.mark.slow  # ~30 s wall on 2 loaded cores: two fine-tunes, two evaluations and the reports
def test_init_study_end_to_end_with_a_standin_dinov2_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`init: dinov2` from a STAND-IN file (a tiny timm model of the DINOv2 architecture class, not
    DINOv2) against a random init, through `bench run`: the manifest carries the fine-tune stages'
    validation predictions and the init-study tables have Youden columns and a p-value."""
    import timm
    from safetensors.torch import save_file

    from bench.data.synthetic.files import save_png

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    src = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=98, num_classes=0, embed_dim=96, depth=4, num_heads=3)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights / "vit_base_patch14_dinov2.standin_dinov2.safetensors"))
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(weights))
    site = tmp_path / "site"
    rows = []
    rng = np.random.default_rng(1)
    for i in range(48):
        split = "train" if i < 24 else ("val" if i < 36 else "test")
        a, b = float(i % 3 == 0), float(i % 4 == 1)
        save_png(np.clip(rng.random((56, 56)) * 0.5 + 0.3 * a + 0.2 * b, 0, 1), site / f"img{i:02d}.png")
        rows.append({"image": f"img{i:02d}.png", "patient": f"p{i}", "split": split, "A": a, "B": b})
    pd.DataFrame(rows).to_csv(site / "labels.csv", index=False)
    opts = "{labels_csv: labels.csv, patient_col: patient, split_col: split}"
    m = tmp_path / "init.yaml"
    m.write_text(textwrap.dedent(f"""
        name: init_e2e
        data: {{root: {tmp_path}, sites: {{generic: {site}}}}}
        defaults:
          backbone: vit_dinov2_tiny_demo
          image_size: 56
          finetune: {{dataset: generic, site_options: {opts}, classes: [A, B], loss: weighted_bce, epochs: 2, batch_size: 8, lr: 1.0e-3}}
          evaluate: [{{column: "Private", site: generic, split: test, classes: [A, B], site_options: {opts}}}]
        experiments:
          - {{id: dinov2, init: dinov2}}
          - {{id: random}}
        reports: {{init_reference: DINOv2, n_boot: 50}}
    """))
    results = tmp_path / "r"
    assert main(["run", str(m), "--results", str(results), "--no-mlflow", "--threads", "1", "--executor", "inline"]) == 0
    out = results / "reports" / "init"  # named after the matrix file
    auc = (out / "init_study_auc.md").read_text()
    assert "| Dataset | DINOv2 AUC | Random AUC | Random p |" in auc and "| Private |" in auc
    (line,) = list(pd.read_csv(out / "init_study_pvalues.csv").itertuples())
    assert line.row == "Random" and 0.0 <= line.p_value <= 1.0 and line.n_boot == 50
    findings = pd.read_csv(out / "init_study_findings_private.csv")
    assert findings["mean"].notna().any()
    assert "No validation predictions" not in (out / "init_study_summary.md").read_text()
