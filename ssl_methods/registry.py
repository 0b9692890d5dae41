"""The registry of SSL method classes (`bench list methods`)."""

from __future__ import annotations

from typing import Callable

from bench.registry import Registry

METHODS: Registry[type] = Registry("ssl method")


def register_method(name: str) -> Callable[[type], type]:
    return METHODS.register(name)
