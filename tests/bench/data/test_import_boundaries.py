"""Import boundaries of the data layer (issue 12), checked in fresh interpreters.

`bench data`, the leakage audit and `reports/` must not drag in the training package
(nor torch, where that holds): they run on login nodes and laptops, and a training
import there costs tens of seconds and couples unrelated code. A fresh subprocess is the
only honest check: in this test process other tests have imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]


def _modules_after(code: str) -> set[str]:
    """The names in `sys.modules` after running `code` in a fresh interpreter at the repository root."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("MODULES="))
    return set(json.loads(line[len("MODULES=") :]))


def _training(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m == "bench.train" or m.startswith("bench.train."))


def test_importing_the_data_layer_audit_and_cli_pulls_in_no_training_code_and_no_torch() -> None:
    mods = _modules_after(
        """
        import bench.data, bench.data.errors, bench.data.sites, bench.data.index, bench.data.sources
        import bench.data.subsets, bench.data.splits, bench.data.stats, bench.data.cache, bench.data.synthetic
        import bench.audit, bench.cli
        """
    )
    assert "bench.audit" in mods and "bench.data.subsets" in mods  # the imports did happen
    assert _training(mods) == []
    assert "torch" not in mods


def test_running_the_data_commands_and_the_audit_pulls_in_no_training_code(tmp_path: Path) -> None:
    """What the commands import when they run (lazy imports included), not just at module import."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        textwrap.dedent(
            f"""
            name: boundaries
            data: {{root: {tmp_path / 'data'}}}
            defaults:
              backbone: resnet_tiny_demo
              image_size: 16
              pretrain: {{method: simmim, dataset: nih, subset: 20}}
              finetune: {{dataset: nih, seeds: [0, 1], label_subset: 0.5}}
              evaluate: [{{column: NIH, site: nih, split: test}}]
            experiments: [{{id: a}}]
            """
        )
    )
    mods = _modules_after(
        f"""
        from bench.cli import main
        data, out = {str(tmp_path / 'data')!r}, {str(tmp_path)!r}
        assert main(["data", "synth", "--out", data, "--seed", "3", "--scale", "0.05", "--sites", "nih"]) == 0
        assert main(["data", "stats", "nih", "--data-root", data, "--out", out + "/tables"]) == 0
        assert main(["data", "prepare", "nih", "--data-root", data, "--size", "16", "--workers", "1",
                     "--cache-dir", out + "/cache"]) == 0
        from bench.audit import audit_plan
        from bench.matrix import load_matrix
        from bench.plan import build_plan
        report = audit_plan(build_plan(load_matrix({str(matrix)!r})))
        assert set(report["pair"]) == {{"pretrain-evaluate", "finetune-evaluate", "pretrain-finetune"}}, report
        """
    )
    assert "bench.data.cache" in mods and "bench.audit" in mods
    assert _training(mods) == []
    assert "torch" not in mods


def test_reports_need_neither_the_site_registry_nor_torch() -> None:
    """`reports/` takes `DataError` from its leaf module (`bench.data.errors`), not from the site package."""
    names = sorted(p.stem for p in (ROOT / "reports").glob("*.py") if p.stem != "__init__")
    mods = _modules_after("import importlib\n" + "".join(f"importlib.import_module('reports.{n}')\n" for n in names))
    assert {f"reports.{n}" for n in names} <= mods
    assert "bench.data.sites" not in mods
    assert _training(mods) == [] and "torch" not in mods


def test_the_error_module_is_a_leaf_and_the_site_registry_is_stdlib_only() -> None:
    """`DataError` costs no import at all; the site registry (listing, validating names and options)
    costs only the standard library: neither pulls in pandas, numpy or an adapter module."""
    before = _modules_after("")
    assert _modules_after("import bench.data.errors") - before == {"bench", "bench.data", "bench.data.errors"}
    added = _modules_after("from bench.data.sites import SITES, DataError; SITES.names()") - before
    ours = {m for m in added if m.split(".")[0] == "bench"}
    assert ours == {"bench", "bench.data", "bench.data.errors", "bench.data.sites", "bench.registry"}
    # `_static.*`: the registry's namespaces of the adapters' import-free parts, read from source
    third_party = {m for m in added - ours if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("_static.")}
    assert third_party == set()
    assert not {m for m in added if m.startswith("bench.data.sites.")}  # no adapter module imported
