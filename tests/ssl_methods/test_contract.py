"""The `SSLMethod` contract, checked for every registered method (no hand-kept list): what the
registry reads from a method's source matches the imported class, and every method builds,
exports the backbone's keys, declares its token `patch` and runs one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


# How each method learns a tiny synthetic set (32 sinusoid images, 64 px) in a few dozen CPU
# steps; a method without an entry gets `_LEARN_DEFAULT`. `ratio`: the mean loss of the last
# five steps must fall below `ratio` x that of the first five. `slow`: over ~10 s on a loaded CPU.
_LEARN_DEFAULT: dict[str, object] = {"options": {}, "weight_decay": 0.05, "lr": 1e-3, "betas": (0.9, 0.999), "steps": 25, "batch": 8, "ratio": 0.85}
_LEARN: dict[str, dict[str, object]] = {
    "mae": {"slow": True, "options": {"norm_pix_loss": False}, "lr": 2e-3, "betas": (0.9, 0.95), "steps": 30, "ratio": 0.5},
    "simmim": {"lr": 2e-3, "steps": 30, "ratio": 0.75},
    "gmml": {"slow": True, "options": {"drop_path_rate": 0.0}, "lr": 2e-3, "steps": 20, "batch": 4, "ratio": 0.75},
    "sit": {"slow": True, "options": {"drop_path_rate": 0.0}, "weight_decay": 0.04},
    # without augmentation the two views coincide, so instance discrimination is learnable in a few
    # dozen steps (with heavy crops on 32 sinusoids the loss stays at chance that early)
    "mocov3": {"slow": True, "options": {"augment": False}, "weight_decay": 0.1, "ratio": 0.5},
    # DINO's target moves with the teacher and its centre, so its raw loss need not fall this early
    "dino": {"tested_in": "test_dino.py::test_student_learns_to_match_the_teacher"},
}


def test_methods_tested_elsewhere_name_an_existing_test() -> None:
    here = Path(__file__).parent
    for name, s in _LEARN.items():
        if "tested_in" in s:
            file, test = str(s["tested_in"]).split("::")
            assert f"def {test}(" in (here / file).read_text(), f"{name}: {s['tested_in']} does not exist"


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if _LEARN.get(n, {}).get("slow") else n for n in NAMES if "tested_in" not in _LEARN.get(n, {})],
)
def test_loss_decreases_on_a_tiny_synthetic_set(name: str) -> None:
    s = {**_LEARN_DEFAULT, **_LEARN.get(name, {})}
    cls = METHODS.get(name)
    torch.manual_seed(0)
    extra = {"num_classes": 2} if cls.needs_labels else {}
    model = ssl_methods.create(name, backbone=_backbone_for(cls), img_size=64, **extra, **s["options"])  # type: ignore[arg-type]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    freq = torch.rand(32, 2) * 3
    data = torch.stack([0.5 + 0.4 * torch.sin(6.28 * (f * xx + g * yy)) for f, g in freq])[:, None]
    # a labelled method (supervised) gets two classes it can see: every other image brighter
    hi = (torch.arange(32) % 2).float()
    labels = torch.stack([hi, 1 - hi], 1)
    if cls.needs_labels:
        data = data + 0.3 * (hi - 0.5)[:, None, None, None]
    opt = torch.optim.AdamW(model.param_groups(s["weight_decay"]), lr=s["lr"], betas=s["betas"])  # type: ignore[arg-type]
    steps, losses = int(s["steps"]), []  # type: ignore[call-overload]
    for step in range(steps):
        rows = torch.randint(0, 32, (int(s["batch"]),))  # type: ignore[call-overload]
        loss, _ = model(data[rows], labels=labels[rows]) if cls.needs_labels else model(data[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(step / steps)
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < float(s["ratio"]) * np.mean(losses[:5]), losses  # type: ignore[arg-type]
