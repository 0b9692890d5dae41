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


@pytest.mark.parametrize(
    "fields, where, shown, allowed",
    [
        ("finetune: {epochs: -3}", "finetune.epochs", "-3", ">= 1"),
        ("finetune: {batch_size: 0}", "finetune.batch_size", "0", ">= 1"),
        ("finetune: {lr: 0}", "finetune.lr", "0.0", "> 0"),
        ("finetune: {lr: .nan}", "finetune.lr", "nan", "> 0"),
        ("finetune: {min_lr: -1.0e-6}", "finetune.min_lr", "-1e-06", ">= 0"),
        ("finetune: {weight_decay: -0.05}", "finetune.weight_decay", "-0.05", ">= 0"),
        ("finetune: {warmup_epochs: -1}", "finetune.warmup_epochs", "-1.0", ">= 0"),
        ("finetune: {seeds: [0, -1]}", "finetune.seeds[1]", "-1", ">= 0"),
        ("finetune: {val_fraction: 1.0}", "finetune.val_fraction", "1.0", "(0, 1)"),
        ("finetune: {label_subset: 1.5}", "finetune.label_subset", "1.5", "a fraction in (0, 1] or a count >= 1"),
        ("finetune: {label_subset: 0}", "finetune.label_subset", "0", "a fraction in (0, 1] or a count >= 1"),
        ("finetune: {patience: 0}", "finetune.patience", "0", ">= 1"),
        ("pretrain: {method: mae, dataset: nih, epochs: 0}", "pretrain.epochs", "0", ">= 1"),
        ("pretrain: {method: mae, dataset: nih, lr: -1.0e-4}", "pretrain.lr", "-0.0001", "> 0"),
        ("pretrain: {method: mae, dataset: nih, subset: 0}", "pretrain.subset", "0", ">= 1"),
        ("pretrain: {method: mae, dataset: nih, clip_grad: 0}", "pretrain.clip_grad", "0.0", "> 0"),
        ("pretrain: {method: mae, dataset: nih, weight_decay_end: -1}", "pretrain.weight_decay_end", "-1.0", ">= 0"),
        ("pretrain: {method: mae, dataset: nih, batching: {mode: dbb, max_side: 0}}", "pretrain.batching.max_side", "0", ">= 1"),
        ("pretrain: {method: mae, dataset: nih, batching: {mode: dbb, token_budget: -5}}", "pretrain.batching.token_budget", "-5", ">= 1"),
        ("image_size: 0", "image_size", "0", ">= 1"),
    ],
)
def test_numeric_fields_out_of_range_fail_at_load(tmp_path: Path, fields: str, where: str, shown: str, allowed: str) -> None:
    """Issue 14.6: `finetune: {epochs: -3}` planned fine and failed at run time (`best.tmp.pt`)."""
    p = write(tmp_path, f"experiments:\n  - {{id: a, {fields}}}\n")
    with pytest.raises(MatrixError) as ei:
        load_matrix(p)
    assert str(ei.value) == f"{p}: experiments[0].{where}: {shown} is out of range; allowed: {allowed}"


def test_sizes_smaller_than_the_patch_fail_at_load(tmp_path: Path) -> None:
    p = write(tmp_path, "experiments:\n  - {id: a, image_size: 4}\n")  # vit_tiny_demo: 8-px patches
    with pytest.raises(MatrixError, match=r"experiments\[0\]: image_size: 4 is smaller than the patch size .*allowed: >= 8"):
        load_matrix(p)
    p = write(tmp_path, "experiments:\n  - {id: a, pretrain: {method: mae, dataset: nih, batching: {mode: dbb, max_side: 6}}}\n")
    with pytest.raises(MatrixError, match=r"pretrain.batching.max_side: 6 is smaller than the patch size; allowed: >= 8"):
        load_matrix(p)
    assert load_matrix(write(tmp_path, "experiments:\n  - {id: a, backbone: resnet_tiny_demo, image_size: 4}\n"))


def test_range_edges_are_accepted(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, """
experiments:
  - {id: a, image_size: 8, finetune: {seeds: [0], label_subset: 1.0, val_fraction: 0.5, min_lr: 0, warmup_epochs: 0, patience: 1}}
  - {id: b, finetune: {label_subset: 652}, pretrain: {method: mae, dataset: nih, clip_grad: null, subset: 1, batching: {mode: dbb, max_side: 8}}}
"""))
    a, b = m.experiments
    assert a.finetune.label_subset == 1.0 and isinstance(a.finetune.label_subset, float) and a.finetune.min_lr == 0
    assert b.finetune.label_subset == 652 and isinstance(b.finetune.label_subset, int) and b.pretrain.clip_grad is None
