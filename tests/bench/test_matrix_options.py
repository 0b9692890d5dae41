"""Plugin options are validated when the matrix is loaded (issue 12): a typo in a method's,
the DBB sampler's, a site's or the synthetic generator's options fails `bench plan` with the
file, the key path and the allowed names, instead of hours later inside a stage."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.matrix import MatrixError, load_matrix

BASE = """
name: t
data: {root: data/x}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  finetune: {dataset: nih, epochs: 1}
  evaluate:
    - {column: "NIH", site: nih, split: test, classes: nih14}
"""


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(body))
    return p


def test_method_option_typo_names_key_and_allowed_options(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments:
  - {id: "3.1", pretrain: {method: mae, dataset: nih, options: {mask_ration: 0.6}}}
""")
    with pytest.raises(MatrixError) as err:
        load_matrix(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: experiments[0].pretrain.options.mask_ration: unknown option of method 'mae'")
    assert "allowed keys here: mask_ratio, norm_pix_loss" in msg


def test_method_option_of_the_wrong_type_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments:
  - {id: "3.2", pretrain: {method: simmim, dataset: nih, options: {mask_patch_size: sixteen}}}
""")
    with pytest.raises(MatrixError, match=r"experiments\[0\]\.pretrain\.options\.mask_patch_size: .*integer.*'sixteen'"):
        load_matrix(p)


def test_method_options_are_those_of_the_method(tmp_path: Path) -> None:
    # `mask_patch_size` is SimMIM's, not MAE's: the model is per method
    p = write(tmp_path, """
experiments:
  - {id: "3.2", pretrain: {method: simmim, dataset: nih, options: {mask_patch_size: 16, mask_ratio: 0.5}}}
  - {id: "3.1", pretrain: {method: mae, dataset: nih, options: {mask_patch_size: 16}}}
""")
    with pytest.raises(MatrixError, match=r"experiments\[1\]\.pretrain\.options\.mask_patch_size: unknown option of method 'mae'"):
        load_matrix(p)


def test_dbb_option_typo_names_the_sampler_options(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments:
  - {id: "4.1", pretrain: {method: mae, dataset: nih, batching: {mode: dbb, max_side: 64, options: {bogus: 1}}}}
""")
    with pytest.raises(MatrixError) as err:
        load_matrix(p)
    msg = str(err.value)
    assert f"{p}: experiments[0].pretrain.batching.options.bogus: unknown option of the DBB sampler" in msg
    assert "min_batches" in msg and "remainder" in msg
    # options the stage sets itself are not the user's to set
    assert "allowed keys here:" in msg and "world_size" not in msg.split("allowed keys here:")[1]
    ok = write(tmp_path, """
experiments:
  - {id: "4.1", pretrain: {method: mae, dataset: nih, batching: {mode: dbb, max_side: 64, options: {min_batches: 1}}}}
""")
    assert load_matrix(ok).experiments[0].pretrain.batching.options == {"min_batches": 1}


def test_site_option_typo_names_the_site_options(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments:
  - {id: "2.3", pretrain: {method: supervised, dataset: mimic, classes: harmonised5, site_options: {uncertainty_polcy: mixed}}}
""")
    with pytest.raises(MatrixError) as err:
        load_matrix(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: experiments[0].pretrain.site_options.uncertainty_polcy: unknown option of site 'mimic'")
    assert "uncertainty" in msg.split("allowed keys here:")[1]


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("finetune.site_options.uncertainty_polcy", "finetune: {dataset: chexpert, site_options: {uncertainty_polcy: ones}}"),
        ("evaluate[0].site_options.uncertainty_polcy",
         'evaluate: [{column: C, site: chexpert, site_options: {uncertainty_polcy: ones}}]'),
    ],
)
def test_finetune_and_evaluation_site_options_are_checked(tmp_path: Path, where: str, body: str) -> None:
    p = write(tmp_path, f"""
experiments:
  - {{id: "1", {body}}}
""")
    with pytest.raises(MatrixError, match=re.escape(f"experiments[0].{where}: unknown option of site 'chexpert'")):
        load_matrix(p)


def test_synthetic_options_are_the_generators(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE).replace("data: {root: data/x}", "data: {root: data/x, synthetic: {seed: 1, scael: 2}}")
                 + 'experiments:\n  - {id: "1"}\n')
    with pytest.raises(MatrixError, match=r"data\.synthetic\.scael: unknown option of the synthetic-data generator; allowed keys here: seed, sites, scale, signal"):
        load_matrix(p)
    p.write_text(textwrap.dedent(BASE).replace("data: {root: data/x}", "data: {root: data/x, synthetic: {seed: 1, scale: 0.5}}")
                 + 'experiments:\n  - {id: "1"}\n')
    assert load_matrix(p).data.synthetic == {"seed": 1, "scale": 0.5}


def test_typo_in_defaults_is_reported_where_it_was_written(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE).replace("  image_size: 32\n", "  image_size: 32\n  pretrain: {method: mae, dataset: nih, options: {mask_ration: 0.5}}\n")
                 + 'experiments:\n  - {id: "1"}\n')
    with pytest.raises(MatrixError, match=r"m\.yaml \(line \d+\): defaults\.pretrain\.options\.mask_ration: unknown option of method 'mae'"):
        load_matrix(p)


def test_repository_matrices_validate_without_torch() -> None:
    """Validating a matrix reads plugin metadata from source: neither torch nor timm (nor the
    report builder's matplotlib/scikit-learn) is imported (issue 10: 13-34 s before)."""
    code = (
        "import sys; from bench.matrix import load_matrix\n"
        "import glob\n"
        "for m in sorted(glob.glob('matrix/*.yaml')): load_matrix(m)\n"
        "print(sorted(m for m in ('torch', 'timm', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_report_metric_tables_are_checked_against_the_metric_registry(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments: [{id: a}]
reports: {metric_tables: [ece, f1_mirco]}
""")
    with pytest.raises(MatrixError) as err:
        load_matrix(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: reports.metric_tables[1]: unknown metric 'f1_mirco'; allowed: ")
    assert "f1_micro" in msg and "mean_auc" in msg
    p.write_text(p.read_text().replace("f1_mirco", "f1_micro"))
    assert load_matrix(p).reports["metric_tables"] == ["ece", "f1_micro"]


def test_a_metric_registered_in_a_test_is_a_valid_report_metric(tmp_path: Path) -> None:
    from reports.metrics import METRICS, register_metric

    p = write(tmp_path, """
experiments: [{id: a}]
reports: {metric_tables: [always_half_test]}
""")
    with pytest.raises(MatrixError, match="unknown metric 'always_half_test'"):
        load_matrix(p)
    register_metric("always_half_test")(lambda y_true, y_score: 0.5)
    try:
        assert load_matrix(p).reports["metric_tables"] == ["always_half_test"]
    finally:
        METRICS._entries.pop("always_half_test", None)
