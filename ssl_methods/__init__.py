"""Self-supervised pre-training methods behind one interface (`ssl_methods.base.SSLMethod`).

`create(name, backbone=..., img_size=..., in_chans=..., init=..., **cfg)` builds a
method; `cfg` keys are checked against the method's config dataclass (unknown keys
raise `ConfigError` listing the valid ones). Each method is one module of this package
with one `@register_method("name")` class; the registry finds it (no list to edit).

Importing this package does not import torch: listing methods and reading their
metadata (`info`, `recipe`, `options_model`, `supports_valid_mask`) read the method
modules' sources (`bench.registry.PluginRegistry`); `create` and `SSLMethod` import them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.registry import PluginInfo, dataclass_options
from ssl_methods.recipe import Recipe
from ssl_methods.registry import METHODS, ConfigError

if TYPE_CHECKING:
    from ssl_methods.base import SSLMethod

__all__ = [
    "ConfigError",
    "METHODS",
    "Recipe",
    "SSLMethod",
    "config_class",
    "create",
    "describe",
    "info",
    "list_methods",
    "options_model",
    "recipe",
    "supports_valid_mask",
]


def __getattr__(name: str) -> Any:
    """`ssl_methods.SSLMethod` imports the torch-based base class on first use (PEP 562)."""
    if name == "SSLMethod":
        from ssl_methods.base import SSLMethod

        return SSLMethod
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_methods() -> list[str]:
    return METHODS.names()


def info(name: str) -> PluginInfo:
    """What the registry knows about method `name` without importing it (KeyError lists the names)."""
    return METHODS.info(name)


def supports_valid_mask(name: str) -> bool:
    """Whether the method takes the valid-token mask of padded variable-size (DBB) batches."""
    return bool(info(name).attr("supports_valid_mask", False))


def config_class(name: str) -> type | None:
    """The method's config dataclass (its options and their reference defaults)."""
    return info(name).attr("config_class")


def options_model(name: str) -> type:
    """A pydantic model of the method's options (`pretrain.options`): names, types, defaults."""
    meta = info(name)
    cls = meta.attr("config_class")
    if cls is None:
        from bench.registry import options_model as empty

        return empty(f"{name}_options", {})
    return dataclass_options(cls, meta.namespace if "config_class" in meta.attrs else None)


def _family(backbone: str | None) -> str:
    if backbone is None:
        return "vit"
    import backbones

    return backbones.get_spec(backbone).family


def recipe(name: str, backbone: str | None = None) -> Recipe:
    """The reference recipe of method `name` for `backbone`'s family (its ViT recipe by default)."""
    recipes: dict[str, Recipe] = info(name).attr("recipes", {}) or {}
    if not recipes:
        raise ConfigError(f"ssl method {name!r} declares no reference recipe")
    return recipes.get(_family(backbone), next(iter(recipes.values())))


def describe(name: str) -> list[str]:
    """`bench list methods --verbose`: the method's name, then each of its recipes (optimiser items
    and, once, the method options' defaults) with the source of every value."""
    meta = info(name)
    lines = [name] + ([f"  {meta.description}"] if meta.description else [])
    recipes: dict[str, Recipe] = meta.attr("recipes", {}) or {}
    for i, rec in enumerate(recipes.values()):
        lines += rec.describe(meta.attr("config_class") if i == 0 else None)
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
    cls = METHODS.get(name)
    method = cls(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init, **cfg)
    if epochs is not None:
        method.set_epochs(epochs)
    return method
