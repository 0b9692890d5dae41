"""Matrix parsing, expansion (lists, grids, excludes) and error messages."""

from __future__ import annotations

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
  finetune: {dataset: nih, seeds: [0, 1], epochs: 1}
  evaluate:
    - {column: "NIH", site: nih, split: test, classes: nih14}
"""


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(body))
    return p


def test_explicit_experiments_merge_defaults(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, """
experiments:
  - {id: "1.1", backbone: resnet_tiny_demo}
  - {id: "3.1", pretrain: {method: mae, dataset: nih, epochs: 2}, finetune: {seeds: [5]}}
"""))
    assert [e.id for e in m.experiments] == ["1.1", "3.1"]
    e0, e1 = m.experiments
    assert e0.backbone == "resnet_tiny_demo" and e0.image_size == 32 and e0.pretrain.method == "none"
    # deep merge: finetune.seeds overridden, finetune.epochs kept from defaults
    assert e1.finetune.seeds == [5] and e1.finetune.epochs == 1 and e1.finetune.dataset == "nih"
    assert e1.pretrain.method == "mae" and e1.pretrain.epochs == 2


def test_grid_cartesian_product_with_exclude(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, """
grid:
  - id: "g.{backbone}.{pretrain.method}"
    base: {pretrain: {dataset: nih}}
    axes:
      backbone: [vit_tiny_demo, resnet_tiny_demo]
      pretrain.method: [none, mae]
    exclude:
      - {backbone: resnet_tiny_demo, pretrain.method: mae}
"""))
    ids = [e.id for e in m.experiments]
    assert ids == ["g.vit_tiny_demo.none", "g.vit_tiny_demo.mae", "g.resnet_tiny_demo.none"]
    assert m.experiments[1].pretrain.method == "mae" and m.experiments[1].pretrain.dataset == "nih"


def test_error_names_file_key_and_allowed_values(tmp_path: Path) -> None:
    p = write(tmp_path, """
experiments:
  - {id: a}
  - {id: b}
  - {id: c}
  - {id: d, pretrain: {method: gmmml, dataset: nih}}
""")
    with pytest.raises(MatrixError) as ei:
        load_matrix(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: experiments[3].pretrain.method: 'gmmml' is not one of ")
    assert "mae" in msg and "none" in msg


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: a, finetune: {epoch: 3}}\n")
    with pytest.raises(MatrixError) as ei:
        load_matrix(p)
    msg = str(ei.value)
    assert "experiments[0].finetune.epoch: unknown key" in msg and "epochs" in msg


def test_unknown_backbone_and_site(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: a, backbone: vit_hueg}\n")
    with pytest.raises(MatrixError, match=r"experiments\[0\]\.backbone: 'vit_hueg' is not one of .*vit_small"):
        load_matrix(p)
    p = write(tmp_path, "experiments:\n  - {id: a, finetune: {dataset: nihh}}\n")
    with pytest.raises(MatrixError, match=r"experiments\[0\]\.finetune\.dataset: 'nihh' is not one of .*chexpert"):
        load_matrix(p)


def test_grid_errors(tmp_path: Path) -> None:
    p = write(tmp_path, """
grid:
  - id: "g.{nope}"
    axes: {backbone: [vit_tiny_demo]}
""")
    with pytest.raises(MatrixError, match=r"grid\[0\]\.id: template field 'nope' is not a grid axis"):
        load_matrix(p)
    p = write(tmp_path, """
grid:
  - id: "g.{backbone}"
    axes: {backbone: [vit_tiny_demo]}
    exclude: [{init: random}]
""")
    with pytest.raises(MatrixError, match=r"grid\[0\]\.exclude\[0\]: keys \['init'\] are not grid axes"):
        load_matrix(p)


def test_duplicate_ids_missing_file_bad_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: a}\n  - {id: a}\n")
    with pytest.raises(MatrixError, match=r"experiments\[1\]\.id: 'a' is used twice"):
        load_matrix(p)
    with pytest.raises(MatrixError, match="no such matrix file"):
        load_matrix(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(MatrixError, match="not valid YAML"):
        load_matrix(bad)


def test_pretrain_method_needs_dataset(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: a, pretrain: {method: mae}}\n")
    with pytest.raises(MatrixError, match="needs pretrain.dataset"):
        load_matrix(p)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: !!python/object/apply:os.system ['echo hacked']}\n")
    with pytest.raises(MatrixError, match="not valid YAML"):
        load_matrix(p)


def test_repo_matrices_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "matrix"
    files = sorted(root.glob("*.yaml"))
    assert files, "matrix/ has no YAML files"
    for f in files:
        m = load_matrix(f)
        assert m.experiments
