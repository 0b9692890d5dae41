"""Cluster resources: layered defaults, validation that names the key, matrix `resources:`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.execute.resources import ResourceError, load_user_config, parse_overrides, resolve, validate_layer
from bench.matrix import MatrixError, load_matrix


def test_layers_merge_in_order_and_all_applies_to_every_kind(tmp_path: Path) -> None:
    user = tmp_path / "slurm.yaml"
    user.write_text("resources:\n  all: {partition: gpu, account: lab}\n  pretrain: {gpus_per_node: 2}\n")
    u = load_user_config(user)
    m = {"pretrain": {"gpus_per_node": 4, "tasks_per_node": 4}}
    cli = parse_overrides(["pretrain.timeout_min=600", "all.qos=high"])
    r = resolve("pretrain", u, m, cli)
    assert (r.partition, r.account, r.qos, r.gpus_per_node, r.tasks_per_node, r.timeout_min) == ("gpu", "lab", "high", 4, 4, 600)
    assert r.world_size == 4
    e = resolve("evaluate", u, m, cli)
    assert e.partition == "gpu" and e.gpus_per_node == 1 and e.timeout_min == 60


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"pretrain": {"gpu_per_node": 4}}, r"resources\.pretrain\.gpu_per_node: unknown option; allowed: nodes, gpus_per_node"),
        ({"pretrian": {"nodes": 1}}, r"resources\.pretrian: unknown stage kind; allowed: pretrain, finetune, evaluate, all"),
        ({"finetune": {"nodes": 0}}, r"resources\.finetune\.nodes: Input should be greater than or equal to 1"),
    ],
)
def test_bad_keys_name_the_place(layer: dict, match: str) -> None:
    with pytest.raises(ResourceError, match=match):
        validate_layer(layer, "x.yaml")


def test_override_syntax_errors() -> None:
    with pytest.raises(ResourceError, match="expected KIND.KEY=VALUE"):
        parse_overrides(["gpus=4"])


def test_matrix_resources_validated_at_load(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(textwrap.dedent("""
        name: m
        resources: {pretrain: {gpus_per_nodes: 4}}
        defaults: {backbone: vit_tiny_demo, evaluate: [{column: c, site: nih}]}
        experiments: [{id: a}]
    """))
    with pytest.raises(MatrixError, match=r"m\.yaml: resources\.pretrain\.gpus_per_nodes: unknown option"):
        load_matrix(m)
    m.write_text(m.read_text().replace("gpus_per_nodes", "gpus_per_node"))
    assert load_matrix(m).resources == {"pretrain": {"gpus_per_node": 4}}


def test_krones_table1_asks_for_four_gpu_pretraining() -> None:
    mx = load_matrix(Path(__file__).resolve().parents[3] / "matrix" / "krones_table1.yaml")
    r = resolve("pretrain", mx.resources)
    assert r.gpus_per_node == 4 and r.world_size == 4
