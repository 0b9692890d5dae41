"""The SSLMethod base: config parsing, parameter groups, EMA, registry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import ssl_methods
from ssl_methods.base import ConfigError, ema_update, parse_config


@dataclass
class _Cfg:
    alpha: float = 1.0
    sizes: tuple[int, int] = (1, 2)


def test_parse_config_rejects_unknown_and_converts_lists() -> None:
    cfg = parse_config(_Cfg, {"sizes": [3, 4]}, "x")
    assert cfg.sizes == (3, 4) and cfg.alpha == 1.0
    with pytest.raises(ConfigError, match=r"unknown config keys \['beta'\]; valid keys: alpha, sizes"):
        parse_config(_Cfg, {"beta": 2}, "x")


def test_ema_matches_formula() -> None:
    torch.manual_seed(0)
    s, t = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in t.parameters()]
    ema_update(t, s, 0.9)
    for b, p_t, p_s in zip(before, t.parameters(), s.parameters()):
        torch.testing.assert_close(p_t, 0.9 * b + 0.1 * p_s)


def test_methods_are_registered() -> None:
    assert "mae" in ssl_methods.list_methods()
    with pytest.raises(KeyError, match="mae"):
        ssl_methods.create("byol", backbone="vit_tiny_demo", img_size=64)


def test_param_groups_split_by_rule() -> None:
    m = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=64)
    groups = m.param_groups(0.05)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        expect_decay = p.ndim > 1 and not name.endswith(".bias")
        assert (id(p) in decay) == expect_decay, name


# every registered method's build/export/step contract: tests/ssl_methods/test_contract.py


def test_only_mae_takes_a_valid_mask() -> None:
    assert {n for n in ssl_methods.list_methods() if ssl_methods.supports_valid_mask(n)} == {"mae"}
