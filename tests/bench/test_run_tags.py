"""Every stage's MLflow tags carry the axes it is compared by, inherited from upstream; names are distinct."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench.matrix import load_matrix
from bench.plan import build_plan
from bench.run_tags import stage_tags

M = """
name: tags
data: {root: /nonexistent}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  finetune: {dataset: nih, seeds: [0, 1], epochs: 1}
  evaluate:
    - {column: "NIH 14", site: nih, split: test, classes: nih14}
    - {column: "NIH 5", site: nih, split: test, classes: harmonised5}
    - {column: "CheXpert", site: chexpert, split: val, site_options: {split: valid}}
experiments:
  - {id: "2.1"}
  - {id: "3.1", pretrain: {method: mae, dataset: nih}}
  - {id: "3.2", pretrain: {method: simmim, dataset: nih}}
"""


def test_tags_and_names(tmp_path: Path) -> None:
    p = tmp_path / "tags.yaml"
    p.write_text(textwrap.dedent(M))
    plan = build_plan(load_matrix(p))
    tags = stage_tags(plan)
    assert set(tags) == set(plan.stages)
    names = [t["run_name"] for t in tags.values()]
    assert len(set(names)) == len(names), names
    ft = {t["experiments"]: t for k, t in tags.items() if plan.stages[k].kind == "finetune" and t["seed"] == "1"}
    assert ft["3.2"]["pretrain_method"] == "simmim" and ft["3.1"]["pretrain_method"] == "mae" and ft["2.1"]["pretrain_method"] == "none"
    assert ft["3.2"]["run_name"] == "3.2 · SimMIM→ChestX-ray14 · seed 1 · finetune ChestX-ray14"
    ev = [t for k, t in tags.items() if plan.stages[k].kind == "evaluate" and t["experiments"] == "3.2" and t["seed"] == "1"]
    nih = next(t for t in ev if t["site"] == "nih")
    assert nih["columns"] == "NIH 14, NIH 5"  # one evaluate stage serves both report columns
    assert {t["run_name"] for t in ev} == {"3.2 · SimMIM→ChestX-ray14 · seed 1 · eval ChestX-ray14 test", "3.2 · SimMIM→ChestX-ray14 · seed 1 · eval CheXpert val"}


def test_column_metrics_average_each_columns_classes(tmp_path: Path) -> None:
    from bench.job import column_metrics
    from bench.run_tags import eval_columns

    p = tmp_path / "tags.yaml"
    p.write_text(textwrap.dedent(M))
    plan = build_plan(load_matrix(p))
    cols = eval_columns(plan)
    nih_key = next(c.evaluate_key for c in plan.cells if c.target.column == "NIH 5")
    assert set(cols[nih_key]) == {"NIH 14", "NIH 5"} and len(cols[nih_key]["NIH 14"]) == 14
    summary = {f"auc.{c}": 0.5 for c in cols[nih_key]["NIH 14"]}
    for c in cols[nih_key]["NIH 5"]:
        summary[f"auc.{c}"] = 1.0
    summary[f"auc.{cols[nih_key]['NIH 14'][-1]}"] = float("nan")  # a class without positives is left out
    m = column_metrics(summary, cols[nih_key])
    assert m["mean_auc.NIH 5"] == 1.0
    five = set(cols[nih_key]["NIH 5"])
    rest = [c for c in cols[nih_key]["NIH 14"][:-1]]
    assert abs(m["mean_auc.NIH 14"] - sum(1.0 if c in five else 0.5 for c in rest) / len(rest)) < 1e-12
