"""The one interface every pre-training method implements.

The generic loop in `bench/train/` only does: `loss, logs = method(images)`,
backward, optimiser step over `method.param_groups(wd)`, then
`method.after_step(progress)`. Everything method-specific - views, masks,
augmentations (made inside `forward` with torch RNG), teachers, heads - lives in
the method. `encoder_state_dict()` returns the weights the fine-tune stage loads
with `backbones.create(backbone, init=<file>)`: exactly the key names of
`backbones.create(backbone, num_classes=0, img_size=..., in_chans=...)`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, Collection, Iterable, TypeVar

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.recipe import Recipe
from ssl_methods.registry import ConfigError  # torch-free, so the matrix can raise it too

__all__ = ["ConfigError", "SSLMethod", "cosine_momentum", "ema_update", "parse_config"]

C = TypeVar("C")


def parse_config(config_cls: type[C], cfg: dict[str, Any], method: str) -> C:
    """Build the dataclass `config_cls` from `cfg`, rejecting unknown keys.

    Lists/tuples from YAML are converted to tuples for tuple-typed defaults.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise ConfigError(
            f"ssl method {method!r}: unknown config keys {unknown}; valid keys: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for key, val in cfg.items():
        if isinstance(val, list):
            val = tuple(val)
        values[key] = val
    return config_cls(**values)


class SSLMethod(nn.Module, metaclass=ABCMeta):
    """Base class: a self-supervised objective around one backbone.

    Subclasses set `name`, `supported_families` and implement `forward` and
    `export_encoder`. `images` passed to `forward` are (B, C, H, W) float tensors
    scaled like the fine-tuning input (the loop normalises both the same way);
    C equals `in_chans`.

    What the stages need is declared here, not probed with `getattr`: the class
    attributes below are read from the module's source by the registry (so the matrix
    validates options and DBB support without importing torch; keep them literals or
    module-level names), and `patch` is set by `__init__` for patch-based backbones.
    """

    name: ClassVar[str]
    # one line for `bench list methods` (the class docstring's first line when empty)
    description: ClassVar[str] = ""
    supported_families: ClassVar[tuple[str, ...]] = ("vit",)
    # True when `forward(images, labels=...)` needs the site's labels (supervised pre-training):
    # the stage then builds labelled batches of `pretrain.classes` and passes `num_classes`
    needs_labels: ClassVar[bool] = False
    # True when `forward(images, valid=...)` accepts a (B, L) bool mask of real tokens of a
    # padded variable-size batch (Dynamic Batch Binning); only MAE so far
    supports_valid_mask: ClassVar[bool] = False
    # the authors' published recipe per backbone family ("vit" first: the fallback for the
    # other families) and the config dataclass whose defaults are the method-side values
    recipes: ClassVar[dict[str, Recipe]] = {}
    config_class: ClassVar[type | None] = None

    @classmethod
    def recipe(cls, family: str = "vit") -> Recipe:
        """The reference recipe for a backbone family (the method's main one if none is published)."""
        if not cls.recipes:
            raise ConfigError(f"ssl method {cls.name!r} declares no reference recipe")
        return cls.recipes.get(family, next(iter(cls.recipes.values())))

    def __init__(self, *, backbone: str, img_size: int, in_chans: int, init: str | Path) -> None:
        super().__init__()
        spec = backbones.get_spec(backbone)
        if spec.family not in self.supported_families:
            ok = [n for n in backbones.list_backbones() if backbones.get_spec(n).family in self.supported_families]
            raise ConfigError(
                f"ssl method {self.name!r} does not support backbone {backbone!r} (family {spec.family!r}); "
                f"supported backbones: {', '.join(ok)}"
            )
        self.backbone_name = backbone
        self.img_size = int(img_size)
        self.in_chans = int(in_chans)
        self.init = str(init)
        # pixels per side of one token of the encoder (ViT/Swin patch), the DBB grid unit;
        # None when the method has no token grid (a CNN encoder)
        self.patch: int | None = backbones.patch_size(backbone)
        # run length in epochs, for schedules the references define in epochs (DINO's
        # last-layer freeze and teacher-temperature warm-up); set by `set_epochs`
        self.epochs: int | None = None

    def set_epochs(self, epochs: int) -> None:
        """Tell the method how many epochs the run has (`progress * epochs` = current epoch)."""
        if epochs < 1:
            raise ConfigError(f"ssl method {self.name!r}: epochs must be >= 1, got {epochs}")
        self.epochs = int(epochs)

    @abstractmethod
    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        """(B, C, H, W) images -> (scalar loss, logged floats)."""

    @abstractmethod
    def export_encoder(self) -> nn.Module:
        """The timm backbone whose weights are exported (e.g. a DINO teacher)."""

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """Detached CPU copies of the exported backbone's weights (timm key names)."""
        return {k: v.detach().cpu().clone() for k, v in self.export_encoder().state_dict().items()}

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step; `progress` in [0, 1] over the whole run."""

    def no_weight_decay_names(self) -> set[str]:
        """Extra parameter names (full names in `named_parameters`) exempt from decay."""
        return set()

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups by `decay_groups`, exempting `no_weight_decay_names` too."""
        return decay_groups(self.named_parameters(), weight_decay, self.no_weight_decay_names())


def decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, skip: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights and undecayed 1-D tensors / biases (empty groups left out).

    The DINO/MAE rule, for pre-training and fine-tuning alike: no decay on tensors with
    ndim <= 1 or names ending in `.bias` (so `cls_token`/`pos_embed`/`mask_token` are
    decayed unless named in `skip`). Frozen parameters are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for pname, param in named_parameters:
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or pname.endswith(".bias") or pname in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def cosine_momentum(base: float, progress: float) -> float:
    """EMA momentum schedule 1 - (1 - base) * (1 + cos(pi * progress)) / 2: `base` at the
    start, 1 at the end. Evaluated per iteration, as all three references do (DINO/SiT:
    `cosine_scheduler(m, 1, epochs, iters)` indexed by iteration; MoCo v3:
    `adjust_moco_momentum(epoch + i / iters_per_epoch)`, the fractional epoch)."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * progress)) / 2.0


def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m * theta_t + (1 - m) * theta_s over matching parameters (in place).

    Buffers (BatchNorm statistics) are not averaged, as in DINO/SiT/MoCo v3.
    """
    with torch.no_grad():
        for p_t, p_s in zip(teacher.parameters(), student.parameters(), strict=True):
            p_t.mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)
