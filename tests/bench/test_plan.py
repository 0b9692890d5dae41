"""Plan keys: stable, content-addressed, shared pre-training deduplicated."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench.matrix import load_matrix
from bench.plan import build_plan, describe, stage_key

MATRIX = """
name: p
data: {root: DATA}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  pretrain: {epochs: 1}
  finetune: {dataset: nih, seeds: [0, 1], epochs: 1}
  evaluate:
    - {column: "NIH 14", site: nih, split: test, classes: nih14}
    - {column: "NIH 5", site: nih, split: test, classes: harmonised5}
    - {column: "CheX", site: chexpert, split: val, site_options: {split: valid}}
experiments:
  - {id: "2.1"}
  - {id: "3.1", pretrain: {method: mae, dataset: nih}}
  - {id: "3.1b", pretrain: {method: mae, dataset: nih}, finetune: {lr: 0.01}}
"""


def make(tmp_path: Path, root: str = "data") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(MATRIX).replace("DATA", root))
    return p


def test_counts_and_sharing(tmp_path: Path) -> None:
    plan = build_plan(load_matrix(make(tmp_path)))
    c = plan.counts()
    # one MAE pre-training shared by 3.1 and 3.1b; 3 experiments x 2 seeds fine-tunes;
    # NIH 14 and NIH 5 share one evaluate stage per fine-tune -> 2 evaluate stages each
    assert c["pretrain"] == 1
    assert c["finetune"] == 6
    assert c["evaluate"] == 12
    assert len(plan.cells) == 3 * 2 * 3
    pre = [s for s in plan.ordered() if s.kind == "pretrain"][0]
    users = [s for s in plan.ordered() if s.kind == "finetune" and pre.key in s.upstream]
    assert len(users) == 4


def test_keys_stable_and_path_independent(tmp_path: Path) -> None:
    a = build_plan(load_matrix(make(tmp_path, "data")))
    b = build_plan(load_matrix(make(tmp_path, "/elsewhere/data")))
    assert list(a.stages) == list(b.stages)
    # and they changed location only in paths, not in keys
    s_a, s_b = next(iter(a.stages.values())), next(iter(b.stages.values()))
    assert s_a.paths != s_b.paths


def test_key_changes_with_config_and_upstream() -> None:
    base = stage_key("finetune", {"lr": 0.1, "seed": 0}, [])
    assert base == stage_key("finetune", {"seed": 0, "lr": 0.1}, [])  # order-independent
    assert base != stage_key("finetune", {"lr": 0.2, "seed": 0}, [])
    assert base != stage_key("finetune", {"lr": 0.1, "seed": 0}, ["pretrain-x"])
    assert base.startswith("finetune-")


def test_topological_order_and_describe(tmp_path: Path) -> None:
    plan = build_plan(load_matrix(make(tmp_path)))
    seen: set[str] = set()
    for s in plan.ordered():
        assert all(u in seen for u in s.upstream)
        seen.add(s.key)
    text = describe(plan)
    assert "stages: 19 (1 pretrain, 6 finetune, 12 evaluate)" in text


def test_keys_ignore_options_left_at_their_defaults(tmp_path: Path) -> None:
    """Spelling out a default value (or a new option with a default) keeps the key."""
    a = build_plan(load_matrix(make(tmp_path)))
    p = tmp_path / "explicit.yaml"
    p.write_text(make(tmp_path).read_text().replace("finetune: {dataset: nih, seeds: [0, 1], epochs: 1}",
                                                    "finetune: {dataset: nih, seeds: [0, 1], epochs: 1, task: multilabel, val_fraction: 0.1}"))
    b = build_plan(load_matrix(p))
    assert list(a.stages) == list(b.stages)
