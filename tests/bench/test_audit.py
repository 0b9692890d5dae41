"""Leakage audit on generator output: reported overlaps are exact, and fine-tune/eval overlap is refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bench.audit import LeakageError, audit_plan, check_leakage
from bench.matrix import load_matrix
from bench.plan import build_plan
from bench.data.index import load_index


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    r = tmp_path_factory.mktemp("audit")
    generate(r, seed=2, scale=0.2, sites=["nih"])
    return r


def _plan(tmp_path: Path, root: Path, body: str):
    p = tmp_path / "a.yaml"
    p.write_text(textwrap.dedent(f"""
        name: a
        data: {{root: {root}}}
        defaults:
          backbone: vit_tiny_demo
          finetune: {{dataset: nih, seeds: [0]}}
          evaluate: [{{column: NIH, site: nih, split: test}}]
    """) + textwrap.dedent(body))
    return p, build_plan(load_matrix(p))


def test_pretraining_on_all_splits_overlaps_test(tmp_path: Path, root: Path) -> None:
    _, plan = _plan(tmp_path, root, """
        experiments:
          - {id: paper, pretrain: {method: mae, dataset: nih, splits: [train, val, test]}}
          - {id: clean, pretrain: {method: mae, dataset: nih, splits: [train, val]}}
    """)
    rep = audit_plan(plan)
    test = load_index("nih", str(root / "nih"), {}, ["test"])
    row = rep[(rep.experiment == "paper") & (rep.pair == "pretrain-evaluate")].iloc[0]
    assert row.shared_images == len(test)
    assert row.shared_patients == test["patient_id"].nunique()
    clean = rep[(rep.experiment == "clean") & (rep.pair == "pretrain-evaluate")].iloc[0]
    assert clean.shared_images == 0 and clean.shared_patients == 0
    check_leakage(rep, "a.yaml")  # pre-training overlap is reported, not refused


def test_finetune_eval_overlap_refused_unless_allowed(tmp_path: Path, root: Path) -> None:
    p, plan = _plan(tmp_path, root, """
        experiments:
          - {id: leaky, evaluate: [{column: NIHval, site: nih, split: val}]}
    """)
    rep = audit_plan(plan)
    val = load_index("nih", str(root / "nih"), {}, ["val"])
    row = rep[rep.pair == "finetune-evaluate"].iloc[0]
    assert row.shared_images == len(val) and row.shared_patients == val["patient_id"].nunique()
    with pytest.raises(LeakageError, match=r"experiment leaky column 'NIHval': \d+ patients"):
        check_leakage(rep, p)
    _, plan2 = _plan(tmp_path, root, """
        experiments:
          - {id: leaky, allow_leakage: true, evaluate: [{column: NIHval, site: nih, split: val}]}
    """)
    check_leakage(audit_plan(plan2), p)


def test_official_nih_split_is_patient_disjoint(root: Path) -> None:
    idx = load_index("nih", str(root / "nih"), {}, None)
    by = {s: set(g["patient_id"]) for s, g in idx.groupby("split")}
    assert not (by["train"] & by["test"]) and not (by["val"] & by["test"]) and not (by["train"] & by["val"])
    assert isinstance(idx, pd.DataFrame)
