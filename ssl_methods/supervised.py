"""Supervised pre-training on a site's labels (Krones exp. 2.3/2.4: MIMIC-CXR, masked BCE).

Not self-supervised, but a pre-training method like the others: the stage builds it
through the registry and trains it with the same loop, so `run_pretrain` has no special
case. It declares `needs_labels`: the stage then forms labelled batches of
`pretrain.classes` and passes `num_classes` and, per step, `labels`. The exported encoder
is the backbone without its classification head. It publishes no reference recipe: the
matrix's pre-training defaults apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import backbones
from ssl_methods.base import ConfigError, SSLMethod, parse_config
from ssl_methods.registry import register_method


@dataclass
class SupervisedConfig:
    """No options: the label set is the stage's `pretrain.classes`."""


def masked_bce(logits: Tensor, y: Tensor) -> Tensor:
    """Mean BCE over the known labels only (NaN = unknown, e.g. CheXpert U-Ignore)."""
    known = ~torch.isnan(y)
    if not known.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])


@register_method("supervised")
class Supervised(SSLMethod):
    """Supervised pre-training on a site's labels (`pretrain.classes`), masked multi-label BCE."""

    name = "supervised"
    supported_families = ("vit", "resnet", "swin")
    needs_labels = True
    config_class = SupervisedConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int, init: str | Path, num_classes: int = 0, **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        parse_config(SupervisedConfig, cfg, self.name)
        if num_classes < 1:
            raise ConfigError("ssl method 'supervised' needs num_classes >= 1 (the stage passes len(pretrain.classes))")
        self.model = backbones.create(backbone, init=init, in_chans=in_chans, num_classes=num_classes, img_size=img_size)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:  # type: ignore[override]
        if labels is None:
            raise ValueError("supervised pre-training needs labels (the stage passes `labels=` per batch)")
        return masked_bce(self.model(images), labels), {}

    def export_encoder(self) -> nn.Module:
        return self.model

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The classifier's weights without its head: the backbone's own key names."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        head = {names[id(p)] for p in self.model.get_classifier().parameters()}
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k not in head}
