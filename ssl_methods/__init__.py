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
from ssl_methods.registry import METHODS

__all__ = ["ConfigError", "METHODS", "SSLMethod", "create", "list_methods"]

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


def create(
    name: str, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
) -> SSLMethod:
    """Build SSL method `name` around backbone `backbone` (see `backbones.create`)."""
    _load_builtin()
    cls = METHODS.get(name)
    return cls(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init, **cfg)
