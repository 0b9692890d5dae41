"""`bench list FAMILY`: every registered name with a one-line description, without importing
torch (issue 10: listing took 13-34 s because the registries imported every plugin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _list_in_subprocess(*args: str) -> tuple[list[str], list[str]]:
    """Run `bench list ...` in a fresh interpreter; (printed lines, heavy modules it imported)."""
    code = (
        "import io, json, sys, contextlib\n"
        "from bench.cli import main\n"
        "buf = io.StringIO()\n"
        f"with contextlib.redirect_stdout(buf): rc = main({list(args)!r})\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'out': buf.getvalue().splitlines(), 'heavy': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["rc"] == 0, res.stderr
    return doc["out"], doc["heavy"]


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("methods", {"none", "supervised", "mae", "simmim", "gmml", "sit", "dino", "mocov3"}),
        ("backbones", {"vit_tiny_demo", "vit_small", "resnet50", "swin_base"}),
        ("sites", {"nih", "chexpert", "mimic", "padchest", "vindr", "generic"}),
        ("label-sets", {"nih14", "harmonised5"}),
        ("metrics", {"mean_auc", "auc_per_class", "oracle_auc", "ece", "balanced_top1_accuracy"}),
    ],
)
def test_list_prints_names_with_descriptions_without_torch(family: str, expected: set[str]) -> None:
    lines, heavy = _list_in_subprocess("list", family)
    assert heavy == []
    names = {ln.split()[0] for ln in lines}
    assert expected <= names
    for ln in lines:  # every name has a description after it
        name, _, desc = ln.partition(" ")
        assert desc.strip(), f"{family}: {name!r} has no description"


def test_list_methods_describes_each_method_by_its_docstring() -> None:
    lines, _ = _list_in_subprocess("list", "methods")
    by_name = {ln.split()[0]: ln.split(maxsplit=1)[1] for ln in lines}
    assert by_name["mae"].startswith("MAE (He et al. 2022")
    assert by_name["dino"].startswith("DINO (Caron et al. 2021")


def test_list_methods_verbose_keeps_the_recipes_and_stays_torch_free() -> None:
    lines, heavy = _list_in_subprocess("list", "methods", "--verbose")
    assert heavy == []
    text = "\n".join(lines)
    assert "\nmae\n" in text and "recipe (vit):" in text and "mask_ratio" in text
