"""The planner and a no-op rerun at study scale (issue 13.5), with the generators of
`benchmarks/planner_scale.py`: a 10,080-stage grid plans to the counts its sharing rules
imply, and `bench run` of a finished Table-1-sized store runs nothing, imports no torch and
loads no site index. No timing is asserted (the machine is shared); the benchmark prints times.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("planner_scale", ROOT / "benchmarks" / "planner_scale.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ps = _load_benchmark()

# modules a no-op rerun must not import (each costs seconds on a loaded machine, torch most)
HEAVY = ("torch", "timm", "pandas", "numpy", "mlflow", "submitit", "sklearn", "matplotlib", "bench.train", "bench.audit")


def test_generated_grid_plans_with_sharing(tmp_path: Path) -> None:
    from bench.matrix import load_matrix
    from bench.plan import build_plan

    matrix = load_matrix(ps.write_grid_matrix(tmp_path / "grid.yaml"))
    plan = build_plan(matrix)
    expected = ps.grid_counts()
    assert len(matrix.experiments) == expected["experiments"] == 400
    assert plan.counts() == Counter({k: expected[k] for k in ("pretrain", "finetune", "evaluate")})
    assert len(plan.stages) == 10_080 and len(plan.cells) == expected["evaluate"]

    # sharing: one pre-training per (backbone, init, method, site), used by the 5 learning rates' fine-tunes
    exps = {e.id: e for e in matrix.experiments}
    users: dict[str, set[str]] = defaultdict(set)
    for c in plan.cells:
        assert c.pretrain_key is not None
        users[c.pretrain_key].add(c.experiment)
    assert len(users) == expected["pretrain"]
    for key, ids in users.items():
        assert len(ids) == len(ps.GRID_AXES["finetune.lr"])
        shapes = {(exps[i].backbone, exps[i].init, exps[i].pretrain.method, exps[i].pretrain.dataset) for i in ids}
        assert len(shapes) == 1, (key, shapes)
        assert {exps[i].finetune.lr for i in ids} == set(ps.GRID_AXES["finetune.lr"])
    # every fine-tune is one (experiment, seed) and has one evaluation per column
    ft_cells: dict[str, set[tuple[str, int]]] = defaultdict(set)
    evals: dict[str, set[str]] = defaultdict(set)
    for c in plan.cells:
        ft_cells[c.finetune_key].add((c.experiment, c.seed))
        evals[c.finetune_key].add(c.evaluate_key)
    assert all(len(v) == 1 for v in ft_cells.values()) and len(ft_cells) == expected["finetune"]
    assert all(len(v) == len(ps.GRID_EVALUATE) for v in evals.values())
    # insertion order is a topological order
    seen: set[str] = set()
    for s in plan.ordered():
        assert all(u in seen for u in s.upstream), s.key
        seen.add(s.key)


def _run_in_subprocess(args: list[str]) -> dict:
    """`bench <args>` in a fresh interpreter; its exit code, output and which heavy modules it imported."""
    code = (
        "import json, sys, io, contextlib\n"
        "from bench.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    rc = main({args!r})\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'out': out.getvalue(), 'heavy': heavy}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BENCH_DATA_ROOT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["stderr"] = proc.stderr
    return res


def _snapshot(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}


def test_noop_rerun_of_finished_table1_store_imports_no_torch(tmp_path: Path) -> None:
    results = tmp_path / "results"
    no_data = tmp_path / "no_data"  # the datasets are not there: a rerun of done stages must not need them
    n = ps.write_finished_store(ps.TABLE1, results, str(no_data), predictions=False)  # --no-report: never read
    assert n == 430
    before = _snapshot(results / "store")
    res = _run_in_subprocess(["run", str(ps.TABLE1), "--results", str(results), "--data-root", str(no_data), "--no-report", "--no-progress"])
    assert res["rc"] == 0, res["out"] + res["stderr"][-2000:]
    assert "ran 0, skipped 430" in res["out"] and "nothing to do" in res["out"]
    assert res["heavy"] == [], res["heavy"]
    assert _snapshot(results / "store") == before  # nothing written, nothing rewritten
    assert not (results / "mlflow.db").exists()  # a no-op starts no MLflow run
    assert not no_data.exists()
    history = [json.loads(x) for x in (results / "runs.jsonl").read_text().splitlines()]
    assert history[-1]["ran"] == 0 and history[-1]["skipped"] == 430

    # one stage lost an output: exactly that stage is pending again (and its data root is then needed)
    ev = next(p for p in (results / "store").glob("evaluate-*/predictions.parquet"))
    ev.unlink()
    res = _run_in_subprocess(["plan", str(ps.TABLE1), "--results", str(results), "--data-root", str(no_data)])
    assert res["rc"] == 0
    assert "done: 429" in res["out"] and f"[todo] {ev.parent.name}" in res["out"]
    assert "torch" not in res["heavy"]


def _small_matrix(tmp_path: Path, reports: dict | None = None) -> Path:
    import yaml

    doc = {
        "name": "small",
        "data": {"root": str(tmp_path / "no_data")},
        "defaults": {
            "backbone": "vit_tiny_demo",
            "image_size": 64,
            "finetune": {"dataset": "nih", "classes": "nih14", "seeds": [0, 1], "epochs": 1},
            "evaluate": [
                {"column": "NIH 14 class avg.", "site": "nih", "split": "test", "classes": "nih14"},
                {"column": "CheXpert vali", "site": "chexpert", "split": "test", "classes": "harmonised5", "site_options": {"split": "valid", "as_split": "test"}},
            ],
        },
        "experiments": [{"id": "1"}, {"id": "2", "pretrain": {"method": "mae", "dataset": "nih", "epochs": 1}}],
        "reports": {"make_figures": False, "n_boot": 20, **(reports or {})},  # the tables alone: seconds, not minutes
    }
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.mark.slow
def test_rerun_keeps_current_reports_and_rebuilds_changed_ones(tmp_path: Path) -> None:
    m = _small_matrix(tmp_path)
    results = tmp_path / "results"
    ps.write_finished_store(m, results)
    args = ["run", str(m), "--results", str(results), "--no-mlflow", "--no-progress"]
    first = _run_in_subprocess(args)  # no reports yet: they are built from the store
    assert first["rc"] == 0, first["stderr"][-3000:]
    table = results / "reports" / "small" / "table2_multisite.md"
    assert table.exists()
    built = table.stat().st_mtime_ns

    again = _run_in_subprocess(args)  # same finished stages, same options: the reports are kept
    assert again["rc"] == 0 and "ran 0, skipped" in again["out"]
    assert "are current" in again["stderr"] and table.stat().st_mtime_ns == built
    assert again["heavy"] == [], again["heavy"]

    # what makes the reports stale, checked where the rerun decides (rebuilding is the first run's path)
    from bench.matrix import load_matrix
    from bench.plan import build_plan
    from bench.runner import current_reports, store_of

    def current(matrix_path: Path) -> bool:
        plan = build_plan(load_matrix(matrix_path))
        return current_reports(plan, store_of(results).done_status(list(plan.stages)), table.parent) is not None

    assert current(m)
    (tmp_path / "changed").mkdir()
    changed = _small_matrix(tmp_path / "changed", {"n_boot": 30})
    assert not current(changed)  # a report option changed: same finished stages, other reports
    table.unlink()
    assert not current(m)  # a report file was deleted
