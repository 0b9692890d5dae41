"""`bench.registry.PluginRegistry`: a plugin is one file, found by its decorator, described
from its source, imported only when used."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.registry import PluginRegistry, Registry, function_parameters, signature_options, validate_options

_REGISTRY = '''
from bench.registry import PluginRegistry
THINGS = PluginRegistry("thing", "{pkg}", "register_thing", base_names=("Base",))
def register_thing(name):
    return THINGS.register(name)
'''

_PLUGIN = '''
"""A thing made of {what}. More text that is not the description.

Second paragraph.
"""
from dataclasses import dataclass

import this_module_does_not_exist  # a heavy import: never executed when only listing

from {pkg}.registry import register_thing


@dataclass
class Cfg:
    size: int = 3
    ratio: float = 0.5


LIMIT = 2 * 21


@register_thing("{name}")
class Thing(Base):
    config_class = Cfg
    limit = LIMIT
    flag = True
    heavy = this_module_does_not_exist.VALUE
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = "plugpkg_" + tmp_path.name.replace("-", "_")
    root = tmp_path / pkg
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "registry.py").write_text(_REGISTRY.format(pkg=pkg))
    (root / "alpha.py").write_text(_PLUGIN.format(pkg=pkg, name="alpha", what="letters"))
    (root / "helpers.py").write_text("import this_module_does_not_exist\n")  # not a plugin: never read beyond a text check
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_a_new_plugin_is_one_file_found_without_importing_it(package: str, tmp_path: Path) -> None:
    reg = __import__(f"{package}.registry", fromlist=["THINGS"]).THINGS
    assert reg.names() == ["alpha"]
    info = reg.info("alpha")
    assert info.description == "A thing made of letters."
    assert info.attr("limit") == 42 and info.attr("flag") is True
    cfg = info.attr("config_class")
    assert [f for f in cfg.__dataclass_fields__] == ["size", "ratio"]
    assert f"{package}.alpha" not in sys.modules  # listing and metadata never import the module
    # adding a plugin is adding a file
    (tmp_path / package / "beta.py").write_text(_PLUGIN.format(pkg=package, name="beta", what="Greek"))
    fresh = PluginRegistry("thing", package, "register_thing", base_names=("Base",))
    assert fresh.names() == ["alpha", "beta"]


def test_get_imports_the_module_and_attributes_it_needs(package: str) -> None:
    reg = __import__(f"{package}.registry", fromlist=["THINGS"]).THINGS
    info = reg.info("alpha")
    assert "heavy" in info.failed
    # the attribute that needs the module's imports is read by importing it (which fails here)
    with pytest.raises(ModuleNotFoundError, match="this_module_does_not_exist"):
        info.attr("heavy")
    with pytest.raises(KeyError, match=r"unknown thing 'gamma'; registered: alpha"):
        reg.get("gamma")


def test_run_time_registration_is_listed() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("w")
    class W:
        """A widget."""

    assert reg.names() == ["w"] and "w" in reg
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("w")(type("Other", (), {}))


def test_signature_options_reads_keywords_types_and_defaults() -> None:
    params = function_parameters("bench.data.synthetic", "generate")
    assert params[:2] == ["out", "seed"]
    model = signature_options("bench.data.synthetic", "generate", exclude=("out",))
    assert list(model.model_fields) == ["seed", "sites", "scale", "signal"]
    assert validate_options(model, {"seed": 3}, "gen") == {"seed": 3}
    with pytest.raises(ValidationError) as err:
        validate_options(model, {"seed": "three", "sclae": 1}, "gen")
    errors = {e["loc"]: e["msg"] for e in err.value.errors()}
    assert errors[("sclae",)] == "unknown option of gen; allowed keys here: seed, sites, scale, signal"
    assert "integer" in errors[("seed",)] and "'three'" in errors[("seed",)]
