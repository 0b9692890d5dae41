"""Command-line overrides (`--set`), subsets (`--only`, `--kind`), error locations and distinct stage labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.matrix import MatrixError, load_matrix
from bench.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]


def test_set_overrides_every_experiment_or_one_and_names_a_variant() -> None:
    m = load_matrix(ROOT / "matrix" / "demo.yaml", ["finetune.epochs=3", "experiments[3.1].pretrain.epochs=100"])
    assert all(e.finetune.epochs == 3 for e in m.experiments)
    assert {e.id: e.pretrain.epochs for e in m.experiments}["3.1"] == 100
    assert m.variant == "finetune.epochs=3+experiments[3.1].pretrain.epochs=100"
    assert m.reports_dir_name == "demo+" + m.variant and m.name == "demo+" + m.variant
    base = load_matrix(ROOT / "matrix" / "demo.yaml")
    assert base.reports_dir_name == "demo" and base.name == "demo"


@pytest.mark.parametrize(
    "sets, match",
    [
        (["finetune.epochs=-3"], r"finetune\.epochs"),
        (["finetune.epochz=3"], r"finetune\.epochz: unknown key; allowed keys here: dataset"),
        (["experiments[9.9].pretrain.epochs=1"], r"no experiment '9\.9'"),
        (["finetune.epochs"], r"expected KEY=VALUE"),
    ],
)
def test_overrides_are_validated_like_the_file(sets: list[str], match: str) -> None:
    with pytest.raises(MatrixError, match=match):
        load_matrix(ROOT / "matrix" / "demo.yaml", sets)


def test_typo_in_defaults_is_reported_where_it_was_written(tmp_path: Path) -> None:
    p = tmp_path / "typo.yaml"
    p.write_text(textwrap.dedent("""
        name: typo
        data: {root: /x}
        defaults:
          backbone: vit_tiny_demo
          finetune:
            dataset: nih
            seed: [1]
          evaluate: [{column: c, site: nih}]
        experiments: [{id: a}]
    """))
    with pytest.raises(MatrixError, match=r"typo\.yaml \(line 8\): defaults\.finetune\.seed: unknown key; allowed keys here: .*seeds"):
        load_matrix(p)


def test_plan_only_and_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ROOT / "matrix" / "demo.yaml"), "--only", "3.1", "--kind", "pretrain,finetune"]) == 0
    out = capsys.readouterr().out
    assert "stages: 3 (1 pretrain, 2 finetune, 0 evaluate)" in out
    # the per-experiment summary table closes the plan
    row = next(ln for ln in out.splitlines() if ln.startswith("3.1 "))
    assert row.split()[:5] == ["3.1", "3", "0", "3", "0"]
    assert "all (unique)" in out
    assert main(["plan", str(ROOT / "matrix" / "demo.yaml"), "--only", "nope"]) == 2
    assert main(["plan", str(ROOT / "matrix" / "demo.yaml"), "--kind", "train"]) == 2


def test_stage_labels_are_distinct_in_every_paper_matrix() -> None:
    for f in sorted((ROOT / "matrix").glob("*.yaml")):
        plan = build_plan(load_matrix(f))
        labels = [s.label for s in plan.ordered()]
        dup = {x for x in labels if labels.count(x) > 1}
        assert not dup, (f.name, sorted(dup)[:3])


def test_only_input_errors_exit_2_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import bench.cli as cli

    def buggy(args: object) -> int:
        return {}["missing"]  # a programming error, not bad input

    monkeypatch.setattr(cli, "cmd_plan", buggy)
    with pytest.raises(KeyError):
        main(["plan", str(ROOT / "matrix" / "demo.yaml")])
    from bench.registry import UnknownNameError

    def unknown(args: object) -> int:
        raise UnknownNameError("site 'nope' is not one of nih, chexpert")

    monkeypatch.setattr(cli, "cmd_plan", unknown)
    assert main(["plan", str(ROOT / "matrix" / "demo.yaml")]) == 2
    assert "site 'nope'" in capsys.readouterr().err
