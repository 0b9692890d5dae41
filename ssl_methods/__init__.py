"""Self-supervised pre-training methods behind one interface (`ssl_methods.base.SSLMethod`).

`create(name, backbone=..., img_size=..., in_chans=..., init=..., **cfg)` builds a
method; `cfg` keys are checked against the method's config dataclass (unknown keys
raise `ConfigError` listing the valid ones). Each method lives in its own module,
imported in `_BUILTIN` below.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ssl_methods.base import ConfigError, SSLMethod
from ssl_methods.recipe import Recipe
from ssl_methods.registry import METHODS

__all__ = ["ConfigError", "METHODS", "Recipe", "SSLMethod", "create", "describe", "list_methods", "recipe"]

_BUILTIN = ("mae", "simmim", "gmml", "sit", "dino", "mocov3")


def _load_builtin() -> None:
    for mod in _BUILTIN:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # tolerate only the module itself being absent
            if exc.name != f"{__name__}.{mod}":
                raise


def list_methods() -> list[str]:
    _load_builtin()
    return METHODS.names()


def recipe(name: str, backbone: str | None = None) -> Recipe:
    """The reference recipe of method `name` for `backbone`'s family (its ViT recipe by default)."""
    _load_builtin()
    cls = METHODS.get(name)
    family = "vit"
    if backbone is not None:
        import backbones

        family = backbones.get_spec(backbone).family
    return cls.recipe(family)


def describe(name: str) -> list[str]:
    """`bench list methods --verbose`: the method's name, then each of its recipes (optimiser items
    and, once, the method options' defaults) with the source of every value."""
    _load_builtin()
    cls = METHODS.get(name)
    lines = [name]
    for i, rec in enumerate(cls.recipes.values()):
        lines += rec.describe(cls.config_class if i == 0 else None)
    return lines


def create(
    name: str,
    *,
    backbone: str,
    img_size: int,
    in_chans: int = 1,
    init: str | Path = "random",
    epochs: int | None = None,
    **cfg: Any,
) -> SSLMethod:
    """Build SSL method `name` around backbone `backbone` (see `backbones.create`).

    `epochs` is the run length, for schedules the references count in epochs."""
    _load_builtin()
    cls = METHODS.get(name)
    method = cls(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init, **cfg)
    if epochs is not None:
        method.set_epochs(epochs)
    return method
