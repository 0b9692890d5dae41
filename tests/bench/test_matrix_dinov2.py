"""`matrix/dinov2_init.yaml` expands to the DINOv2-initialisation study's grid (seed 004).

Three initialisations of a ViT-B (DINOv2, ImageNet-21k, MIMIC-CXR supervised) x six datasets,
minus MIMIC-CXR-supervised on MIMIC-CXR itself (see the matrix): 17 experiments, each fine-tuned
on its dataset with class-weighted BCE and tested on that dataset's test split; one MIMIC-CXR
pre-training shared by the five supervised rows. Torch-free: matrix and plan only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.matrix import load_matrix
from bench.plan import build_plan

MATRIX = Path(__file__).resolve().parents[2] / "matrix" / "dinov2_init.yaml"
DATASETS = {
    "vindr": ("vindr", "VinDr-CXR"),
    "nih": ("nih", "ChestX-ray14"),
    "chexpert": ("chexpert", "CheXpert"),
    "mimic": ("mimic", "MIMIC-CXR"),
    "padchest": ("padchest", "PadChest"),
    "private": ("generic", "Private (UKA-CXR)"),
}
# init row -> (backbone, init, pre-training method)
INITS = {
    "dinov2": ("vit_base_dinov2", "dinov2", "none"),
    "imagenet21k": ("vit_base", "imagenet21k", "none"),
    "mimic_supervised": ("vit_base", "imagenet21k", "supervised"),
}


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return load_matrix(MATRIX)


def expected_ids() -> list[str]:
    return [f"{d}/{i}" for d in DATASETS for i in INITS if not (d == "mimic" and i == "mimic_supervised")]


def test_experiments_are_the_init_by_dataset_grid(matrix) -> None:  # type: ignore[no-untyped-def]
    assert [e.id for e in matrix.experiments] == expected_ids()
    for e in matrix.experiments:
        dataset, init_row = e.id.split("/")
        site, column = DATASETS[dataset]
        backbone, init, method = INITS[init_row]
        assert (e.backbone, e.init, e.pretrain.method) == (backbone, init, method), e.id
        assert (e.image_size, e.in_chans) == (224, 3)
        f = e.finetune
        assert f.dataset == site and f.task == "multilabel" and f.loss == "weighted_bce", e.id
        assert f.seeds == [0] and f.mode == "finetune"
        assert [(t.column, t.site, t.split) for t in e.evaluate] == [(column, site, "test")], e.id
        if method == "supervised":
            assert e.pretrain.dataset == "mimic"
            assert "test" not in e.pretrain.splits  # the MIMIC-CXR column's test images are never pre-trained on


def test_fine_tuning_recipe_is_the_same_for_every_initialisation(matrix) -> None:  # type: ignore[no-untyped-def]
    recipe = {(f.epochs, f.batch_size, f.optimizer, f.lr, f.weight_decay, f.patience) for f in (e.finetune for e in matrix.experiments)}
    assert len(recipe) == 1
    # within a dataset the three initialisations see exactly the same fine-tuning data and test column
    by_dataset: dict[str, set[str]] = {}
    for e in matrix.experiments:
        key = e.finetune.model_dump_json() + "|" + "|".join(t.model_dump_json() for t in e.evaluate)
        by_dataset.setdefault(e.id.split("/")[0], set()).add(key)
    assert all(len(v) == 1 for v in by_dataset.values())


def test_plan_shares_the_mimic_pre_training_and_nothing_else(matrix) -> None:  # type: ignore[no-untyped-def]
    plan = build_plan(matrix)
    assert plan.counts() == Counter({"pretrain": 1, "finetune": 17, "evaluate": 17})
    (pre,) = [s for s in plan.ordered() if s.kind == "pretrain"]
    assert pre.config["pretrain"]["method"] == "supervised" and pre.config["init"] == "imagenet21k"
    users = [c.experiment for c in plan.cells if c.pretrain_key == pre.key]
    assert users == [f"{d}/mimic_supervised" for d in DATASETS if d != "mimic"]
    assert len({c.finetune_key for c in plan.cells}) == 17 == len({c.evaluate_key for c in plan.cells})
    assert len(plan.cells) == 17
    assert plan.matrix.reports["init_reference"] == "DINOv2"


def test_dinov2_init_names_the_weights_file_it_needs() -> None:
    import backbones

    spec = backbones.get_spec("vit_base_dinov2")
    assert spec.timm_name == "vit_base_patch14_dinov2" and spec.weight_tags == {"dinov2": "lvd142m"}
    assert backbones.patch_size("vit_base_dinov2") == 14
    assert backbones.get_spec("vit_base_dinov2_reg").timm_name == "vit_base_patch14_reg4_dinov2"


def test_a_reference_row_that_does_not_exist_fails_at_plan_time() -> None:
    from bench.matrix import MatrixError

    with pytest.raises(MatrixError, match=r"reports.init_reference: 'DINOV2' is not one of the initialisation rows "
                                          r"DINOv2, ImageNet-21k, MIMIC-CXR \(supervised\)"):
        load_matrix(MATRIX, overrides=["reports.init_reference=DINOV2"])
