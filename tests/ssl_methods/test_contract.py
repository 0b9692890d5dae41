"""The `SSLMethod` contract, checked for every registered method (no hand-kept list): what the
registry reads from a method's source matches the imported class, and every method builds,
exports the backbone's keys, declares its token `patch` and runs one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

import backbones
import ssl_methods
from bench.matrix import MatrixError, load_matrix
from ssl_methods.registry import METHODS

NAMES = ssl_methods.list_methods()


def _backbone_for(cls: type) -> str:
    """The tiny CPU backbone of the method's first supported family."""
    return {"vit": "vit_tiny_demo", "resnet": "resnet_tiny_demo", "swin": "swin_tiny_demo"}[cls.supported_families[0]]


def test_registry_finds_every_method_module() -> None:
    assert {"mae", "simmim", "gmml", "sit", "dino", "mocov3", "supervised"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_static_metadata_matches_the_imported_class(name: str) -> None:
    info = ssl_methods.info(name)
    cls = METHODS.get(name)
    assert info.description, f"{name}: give the class or module a docstring"
    for attr in ("supports_valid_mask", "supported_families", "needs_labels"):
        assert info.attr(attr, getattr(ssl_methods.SSLMethod, attr)) == getattr(cls, attr), attr
    static_cfg, live_cfg = ssl_methods.config_class(name), cls.config_class
    assert live_cfg is not None and static_cfg is not None
    assert [(f.name, f.default) for f in dataclasses.fields(static_cfg)] == [(f.name, f.default) for f in dataclasses.fields(live_cfg)]
    assert (info.attr("recipes") or {}) == cls.recipes
    # the options model the matrix validates `pretrain.options` with names the same fields
    assert list(ssl_methods.options_model(name).model_fields) == [f.name for f in dataclasses.fields(live_cfg)]


@pytest.mark.parametrize("name", NAMES)
def test_every_method_builds_exports_backbone_keys_and_steps(name: str) -> None:
    cls = METHODS.get(name)
    backbone = _backbone_for(cls)
    torch.manual_seed(0)
    extra = {"num_classes": 3} if cls.needs_labels else {}
    m = ssl_methods.create(name, backbone=backbone, img_size=64, in_chans=1, epochs=2, **extra)
    assert m.patch == backbones.patch_size(backbone) or (m.patch is not None and backbones.patch_size(backbone) is None)
    ref = backbones.create(backbone, num_classes=0, img_size=64, in_chans=1).state_dict()
    sd = m.encoder_state_dict()
    assert set(sd) == set(ref) and all(sd[k].shape == ref[k].shape for k in ref)
    names = {id(p): n for n, p in m.named_parameters()}
    groups = m.param_groups(0.05)
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert not any(names[id(p)].startswith(("teacher", "momentum_")) for g in groups for p in g["params"])
    x = torch.rand(4, 1, 64, 64)
    if cls.needs_labels:
        labels = torch.tensor([[1.0, 0.0, float("nan")]] * 4)
        loss, logs = m(x, labels=labels)
    else:
        loss, logs = m(x)
    assert loss.ndim == 0 and torch.isfinite(loss) and isinstance(logs, dict)
    loss.backward()
    m.after_step(0.5)


@pytest.fixture
def trivial_method() -> Iterator[str]:
    """A method defined in a test: one class and its decorator, nothing else to edit."""
    from torch import nn

    from ssl_methods.registry import register_method

    @dataclasses.dataclass
    class MeanConfig:
        scale: float = 1.0

    @register_method("mean_test")
    class MeanFeature(ssl_methods.SSLMethod):
        """Toy objective: pull the mean feature to zero."""

        name = "mean_test"
        supported_families = ("vit", "resnet", "swin")
        config_class = MeanConfig

        def __init__(self, *, backbone: str, img_size: int, in_chans: int, init: str, **cfg: object) -> None:
            super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
            self.cfg = ssl_methods.base.parse_config(MeanConfig, cfg, self.name)
            self.encoder = backbones.create(backbone, img_size=img_size, in_chans=in_chans)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return self.cfg.scale * self.encoder(images).mean() ** 2, {}

        def export_encoder(self) -> nn.Module:
            return self.encoder

    yield "mean_test"
    METHODS._entries.pop("mean_test", None)


def test_a_method_defined_anywhere_is_listed_validated_and_built(trivial_method: str, tmp_path) -> None:
    assert trivial_method in ssl_methods.list_methods()
    assert ssl_methods.info(trivial_method).description == "Toy objective: pull the mean feature to zero."
    m = ssl_methods.create(trivial_method, backbone="vit_tiny_demo", img_size=64, scale=2.0)
    loss, _ = m(torch.rand(2, 1, 64, 64))
    assert torch.isfinite(loss)
    base = (
        "name: t\ndata: {root: d}\ndefaults: {backbone: vit_tiny_demo, image_size: 64, "
        "evaluate: [{column: C, site: nih}]}\nexperiments:\n"
    )
    p = tmp_path / "m.yaml"
    p.write_text(base + '  - {id: "1", pretrain: {method: mean_test, dataset: nih, lr: 0.001, options: {scale: 2.0}}}\n')
    assert load_matrix(p).experiments[0].pretrain.options == {"scale": 2.0}
    p.write_text(base + '  - {id: "1", pretrain: {method: mean_test, dataset: nih, lr: 0.001, options: {scael: 2.0}}}\n')
    with pytest.raises(MatrixError, match=r"pretrain\.options\.scael: unknown option of method 'mean_test'; allowed keys here: scale"):
        load_matrix(p)
