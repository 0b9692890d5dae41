"""The registry of SSL methods (`bench list methods`), discovered from this package's modules.

A method is one module here with one `@register_method("name")` class (a `SSLMethod`
subclass). Its metadata (description, config class, reference recipes, valid-mask
support, supported backbone families) is read from the module's source without importing
it (`bench.registry.PluginRegistry`), so listing methods and validating a matrix never
import torch; `METHODS.get(name)` imports the module when a stage builds the method.
"""

from __future__ import annotations

from typing import Callable

from bench.registry import PluginRegistry


class ConfigError(ValueError):
    """A method config has unknown keys or bad values; the message lists the valid keys."""


# the torch-free modules a method's metadata may use (its `Recipe`s)
METHODS: PluginRegistry[type] = PluginRegistry(
    "ssl method",
    "ssl_methods",
    "register_method",
    base_names=("SSLMethod",),
    allowed_imports=("ssl_methods.recipe",),
)


def register_method(name: str) -> Callable[[type], type]:
    return METHODS.register(name)
