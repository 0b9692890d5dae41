"""Demo twins (`extends:` + `twin:`): scaled-down copies of a matrix that never repeat its experiment list.

Fast checks of the mechanism: what a twin inherits and overrides, that scaling keeps the
parent's differences, that every mistake names the twin file and key, and the stand-in
weights (`backbones.standin`) a twin initialises from. The twins themselves run end to end in
`test_demo_twins.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.matrix import MatrixError, load_matrix

PARENT = """
name: parent
description: the real one
data: {root: data/real}
resources: {pretrain: {gpus_per_node: 4}}
defaults:
  backbone: vit_small
  image_size: 224
  pretrain: {dataset: nih, epochs: 1000}
  finetune: {dataset: nih, seeds: [0, 1, 2], epochs: 30, warmup_epochs: 5}
  evaluate:
    - {column: "NIH", site: nih, split: test, classes: nih14}
    - {column: "CheXpert test", site: chexpert, split: test, site_options: {split: test}}
experiments:
  - {id: "a", pretrain: {method: gmml}}
  - {id: "b", pretrain: {method: gmml, epochs: 500}}
  - {id: "c", image_size: 448, init: imagenet1k, finetune: {warmup_epochs: 0}}
reports: {compat: true}
"""


def _write(tmp_path: Path, twin: str, parent: str = PARENT) -> Path:
    (tmp_path / "parent.yaml").write_text(parent)
    f = tmp_path / "twin.yaml"
    f.write_text(twin)
    return f


TWIN = """
extends: parent.yaml
name: twin
data: {root: data/synth, synthetic: {seed: 0, scale: 0.1}, weights: w, standin_weights: true}
reports: {n_boot: 50}
twin:
  backbones: {vit_small: vit_tiny_demo}
  columns: {"CheXpert test": {site_options: {split: valid, as_split: test}}}
  scale: {image_size: 0.143, pretrain.epochs: 0.002, finetune.warmup_epochs: 0.2}
  set: {finetune.seeds: [0], "experiments[c].finetune.epochs": 2}
"""


def test_twin_inherits_the_experiments_and_scales_them(tmp_path: Path) -> None:
    m = load_matrix(_write(tmp_path, TWIN))
    assert m.name == "twin" and m.extends == str(tmp_path / "parent.yaml")
    assert m.description == "the real one"  # not overridden: inherited
    assert [e.id for e in m.experiments] == ["a", "b", "c"]
    a, b, c = m.experiments
    assert {e.backbone for e in m.experiments} == {"vit_tiny_demo"}
    # scaling keeps the parent's differences: 1000 vs 500 epochs, 224 vs 448 px; a 0 stays 0
    assert (a.pretrain.epochs, b.pretrain.epochs) == (2, 1)
    assert (a.image_size, c.image_size) == (32, 64)
    assert (a.finetune.warmup_epochs, c.finetune.warmup_epochs) == (1, 0)
    assert all(e.finetune.seeds == [0] for e in m.experiments)
    assert (a.finetune.epochs, c.finetune.epochs) == (30, 2)  # `experiments[c].` sets c only
    assert c.init == "imagenet1k"
    # the column override is merged over that target only
    assert a.evaluate[1].site_options == {"split": "valid", "as_split": "test"}
    assert a.evaluate[0].site_options == {}
    # top level: data replaced, reports merged, resources inherited
    assert m.data.root == "data/synth" and m.data.standin_weights and m.data.weights == "w"
    assert m.reports == {"compat": True, "n_boot": 50}
    assert m.resources["pretrain"]["gpus_per_node"] == 4


def test_site_map_replaces_sites_options_and_classes(tmp_path: Path) -> None:
    twin = """
extends: parent.yaml
twin:
  sites: {chexpert: {site: padchest, site_options: {split: test}, classes: harmonised5}, nih: mimic}
"""
    m = load_matrix(_write(tmp_path, twin))
    a = m.experiments[0]
    assert [(t.site, t.site_options, t.classes) for t in a.evaluate] == [
        ("mimic", {}, "nih14"), ("padchest", {"split": "test"}, "harmonised5")]
    assert (a.pretrain.dataset, a.finetune.dataset) == ("mimic", "mimic")


@pytest.mark.parametrize(
    ("twin", "match"),
    [
        ("extends: parent.yaml\nexperiments: [{id: x}]\n", r"twin\.yaml: keys \['experiments'\] are not allowed next to 'extends'"),
        ("extends: nope.yaml\n", r"twin\.yaml: extends: no such matrix file .*nope\.yaml"),
        ("extends: parent.yaml\ntwin: {shrink: 2}\n", r"twin\.yaml: twin: unknown keys \['shrink'\]"),
        ("extends: parent.yaml\ntwin: {backbones: {vit_small: vit_nano}}\n", r"twin\.yaml: twin\.backbones\.vit_small: 'vit_nano' is not one of"),
        ("extends: parent.yaml\ntwin: {backbones: {resnet50: resnet_tiny_demo}}\n", r"twin\.backbones\.resnet50: no experiment of the parent uses backbone"),
        ("extends: parent.yaml\ntwin: {sites: {vindr: nih}}\n", r"twin\.sites\.vindr: no experiment of the parent uses site 'vindr'"),
        ("extends: parent.yaml\ntwin: {sites: {nih: atlantis}}\n", r"twin\.sites\.nih\.site: 'atlantis' is not one of"),
        ("extends: parent.yaml\ntwin: {columns: {PadChest: {split: val}}}\n", r"twin\.columns\.PadChest: no evaluation target of the parent has column"),
        ("extends: parent.yaml\ntwin: {scale: {pretrain.epoch: 0.1}}\n", r"twin\.scale\.pretrain\.epoch: no experiment of the parent has a number"),
        ("extends: parent.yaml\ntwin: {scale: {image_size: -1}}\n", r"twin\.scale\.image_size: -1 is not a positive factor"),
        ("extends: parent.yaml\ntwin: {set: {'experiments[z].finetune.epochs': 1}}\n", r"twin\.set\.experiments\[z\]\.finetune\.epochs: no experiment 'z'"),
        # values a twin sets are validated like the file's, located in the twin file
        ("extends: parent.yaml\ntwin: {set: {finetune.epochs: 0}}\n", r"twin\.yaml: experiments\[0\]\.finetune\.epochs: 0 is out of range"),
        ("extends: parent.yaml\ndata: {root: x, standin_weights: true}\n", r"standin_weights: true needs data\.weights"),
    ],
)
def test_twin_mistakes_name_the_file_and_key(tmp_path: Path, twin: str, match: str) -> None:
    with pytest.raises(MatrixError, match=match):
        load_matrix(_write(tmp_path, twin))


def test_a_twin_cannot_extend_a_twin(tmp_path: Path) -> None:
    (tmp_path / "p0.yaml").write_text(PARENT)
    _write(tmp_path, "extends: parent.yaml\n", parent="extends: p0.yaml\n")
    with pytest.raises(MatrixError, match="extends another matrix itself"):
        load_matrix(tmp_path / "twin.yaml")


def test_overrides_apply_on_top_of_a_twin(tmp_path: Path) -> None:
    m = load_matrix(_write(tmp_path, TWIN), ["finetune.epochs=3"])
    assert {e.finetune.epochs for e in m.experiments} == {3}
    assert m.reports_dir_name == "twin+finetune.epochs=3"


def test_standin_weights_are_found_by_the_real_lookup_and_load(tmp_path: Path) -> None:
    import torch

    import backbones
    from backbones.standin import is_standin, write_standin
    from backbones.weights import resolve_pretrained_file

    path = write_standin("vit_tiny_demo", "imagenet21k", tmp_path)
    # timm's on-disk naming: <timm architecture>.<tag>.safetensors, found like a real file
    assert path == resolve_pretrained_file(backbones.get_spec("vit_tiny_demo"), "imagenet21k", tmp_path)
    assert path.name == "vit_tiny_patch16_224.standin_in21k.safetensors"
    assert is_standin(path)
    first = path.read_bytes()
    path.unlink()
    assert write_standin("vit_tiny_demo", "imagenet21k", tmp_path).read_bytes() == first  # deterministic
    # the file is at timm's default 224 px (28x28 grid of 8-px patches): loading at 32 px, grey,
    # drops the 1000-class head, averages the RGB filters and resamples the positional embedding
    model = backbones.create("vit_tiny_demo", init="imagenet21k", in_chans=1, num_classes=3, img_size=32, weights_dir=tmp_path)
    report = model.bench_init
    assert set(report.dropped) == {"head.weight", "head.bias"}
    assert any(a.startswith("pos_embed (1, 785, 96)->(1, 17, 96)") for a in report.adapted)
    assert any(a.startswith("patch_embed.proj.weight (3->1") for a in report.adapted)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


def test_run_makes_standins_and_points_the_stages_at_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backbones.weights import WEIGHTS_DIR_ENV
    from bench.runner import ensure_weights, weights_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, "/elsewhere")
    m = load_matrix(_write(tmp_path, TWIN))
    files = ensure_weights(m)  # experiment c: vit_tiny_demo, imagenet1k
    assert [f.name for f in files] == ["vit_tiny_patch16_224.standin_in1k.safetensors"]
    assert files[0].resolve().parent == tmp_path / "w"
    with weights_dir(m):
        assert os.environ[WEIGHTS_DIR_ENV] == str(tmp_path / "w")
    assert os.environ[WEIGHTS_DIR_ENV] == "/elsewhere"


def test_plan_warnings_look_in_the_matrix_weights_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backbones.weights import WEIGHTS_DIR_ENV
    from bench.execute.plan_report import missing_inputs
    from bench.plan import build_plan

    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    twin = _write(tmp_path, TWIN)
    # a twin's stand-ins are written by `bench run`: nothing to warn about
    assert not [w for w in missing_inputs(build_plan(load_matrix(twin)), set()) if "init" in w]
    # without stand-ins, the warning names the file the matrix's own weights folder lacks
    twin.write_text(TWIN.replace("weights: w, standin_weights: true", f"weights: {tmp_path / 'w'}"))
    warnings = [w for w in missing_inputs(build_plan(load_matrix(twin)), set()) if "init" in w]
    assert len(warnings) == 1 and str(tmp_path / "w" / "vit_tiny_patch16_224.standin_in1k.safetensors") in warnings[0]
