"""Registries of plugins (backbones, SSL methods, sites, metrics) that list without importing.

`Registry` is the timm-style dict plus decorator: adding an entry is one decorator.

`PluginRegistry` adds discovery: a plugin is one module in its package's folder with one
decorated class or function (`@register_method("mae")`, `@register_site`,
`@register_metric("mean_auc")`); no hand-kept list names it. Listing the plugins and
reading their metadata (name, one-line description, class attributes such as a method's
config class, recipes and valid-mask support, a site's option defaults) never imports the
plugin module: the module's source is read with `ast` and only its import-free part is
evaluated (see `static_namespace`). So `bench list` and matrix validation do not pay for
torch/timm (13-34 s on a loaded machine, issue 10); the module itself is imported only when a
stage asks for the plugin (`PluginRegistry.get`), and its decorator then registers it.

`signature_options` reads a function's keyword parameters the same way, so options passed
through to a function (DBB sampler options, synthetic-data options) are validated at plan
time against the function that will receive them.
"""

from __future__ import annotations

import __future__
import ast
import builtins
import importlib
import importlib.util
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

T = TypeVar("T")



class UnknownNameError(KeyError):
    """A name a user gave (backbone, method, site, metric) that no registry knows.

    A KeyError subclass for compatibility; the CLI maps only this (not every KeyError,
    which would hide bugs) to "bad input", exit 2.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown name"

class Registry(Generic[T]):
    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or getattr(obj, "__name__")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.family} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        return f"unknown {self.family} {name!r}; registered: {', '.join(self.names()) or '(none)'}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# ----------------------------------------------------------------------------- static reading

_MISSING = object()


def _first_line(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph (what `bench list` prints)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z`(])", para, maxsplit=1)[0]


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module named {module!r}", name=module)
    return Path(spec.origin)


def _import_allowed(module: str, allowed: Iterable[str]) -> bool:
    root = module.split(".")[0]
    return root in sys.stdlib_module_names or any(module == a or module.startswith(a + ".") for a in allowed)


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return ""


def static_namespace(path: Path, module: str, allowed_imports: Iterable[str] = ()) -> dict[str, Any]:
    """Evaluate the import-free part of a module's source: its top-level constants, dataclasses and
    undecorated functions/classes, with only the standard library and `allowed_imports` imported.

    A statement that needs anything else (`torch`, a base class from a heavy module) fails with a
    NameError and is skipped, so what remains is exactly what the module declares as data (a
    config dataclass, `RECIPE = Recipe(...)`, a `DEFAULTS` dict). Decorated definitions other than
    `@dataclass` are never executed: a registration decorator must not run twice.
    """
    tree = ast.parse(path.read_text(), str(path))
    flags = 0
    # a module object of its own (`_static.<module>`, never the real name) holds the namespace:
    # dataclasses and pydantic look a class's module up in `sys.modules`
    static = types.ModuleType(f"_static.{module}", ast.get_docstring(tree))
    static.__file__ = str(path)
    sys.modules[static.__name__] = static
    ns: dict[str, Any] = static.__dict__
    allowed = tuple(allowed_imports)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                if feature is not None:
                    flags |= feature.compiler_flag
            continue
        if isinstance(node, ast.Import):
            if not all(_import_allowed(a.name, allowed) for a in node.names):
                continue
        elif isinstance(node, ast.ImportFrom):
            if node.level or not node.module or not _import_allowed(node.module, allowed):
                continue
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            if any(_decorator_name(d) != "dataclass" for d in node.decorator_list):
                continue
        elif not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        try:
            code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec", flags=flags, dont_inherit=True)
            exec(code, ns)  # noqa: S102 - the project's own plugin source, import-free statements only
        except Exception:  # noqa: BLE001 - a statement that needs the heavy part of the module
            continue
    return ns


@dataclass
class PluginInfo:
    """What a registry knows about one plugin without importing it.

    `attrs` are the plugin class's own attributes that evaluated statically; `failed` names
    those that did not (they are read from the imported class on demand, see `attr`).
    `static` is False when the class inherits from something other than the family's base, so
    inherited attributes can only be known by importing it.
    """

    name: str
    module: str
    qualname: str
    description: str
    attrs: dict[str, Any] = field(default_factory=dict)
    failed: frozenset[str] = frozenset()
    static: bool = True
    namespace: dict[str, Any] = field(default_factory=dict, repr=False)
    loader: Callable[[], Any] | None = field(default=None, repr=False)

    def attr(self, key: str, default: Any = None) -> Any:
        """Class attribute `key`: the statically read value, or the imported class's when the
        source alone cannot tell (then the module is imported), or `default` when not declared."""
        if key in self.attrs:
            return self.attrs[key]
        if (key in self.failed or not self.static) and self.loader is not None:
            return getattr(self.loader(), key, default)
        return default


def _plugins_in(path: Path, module: str, decorator: str, base_names: tuple[str, ...], allowed: tuple[str, ...]) -> list[PluginInfo]:
    text = path.read_text()
    if decorator not in text:
        return []
    tree = ast.parse(text, str(path))
    found: list[tuple[ast.ClassDef | ast.FunctionDef, str | None]] = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for d in node.decorator_list:
            if _decorator_name(d) != decorator:
                continue
            key = None
            if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant):
                key = str(d.args[0].value)
            found.append((node, key))
    if not found:
        return []
    # class attributes need the module's import-free part; a decorated function needs only its docstring
    ns = static_namespace(path, module, allowed) if any(isinstance(n, ast.ClassDef) for n, _ in found) else {}
    out = []
    for node, key in found:
        attrs: dict[str, Any] = {}
        failed: set[str] = set()
        static = True
        if isinstance(node, ast.ClassDef):
            bases = {_decorator_name(b) for b in node.bases}
            static = bases <= set(base_names)
            for stmt in node.body:
                target, value = None, None
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    target, value = stmt.targets[0].id, stmt.value
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    target, value = stmt.target.id, stmt.value
                if target is None or value is None:
                    continue
                try:
                    # Trust boundary: `value` comes from a module inside the project's own plugin
                    # package (found by globbing that package's folder), i.e. code that `get()`
                    # would import and run anyway; no matrix or other user input reaches here.
                    attrs[target] = eval(compile(ast.Expression(value), str(path), "eval"), ns)  # noqa: S307
                except Exception:  # noqa: BLE001 - needs the imported module
                    failed.add(target)
        name = key or attrs.get("name") or node.name
        description = attrs.get("description") if isinstance(attrs.get("description"), str) else ""
        description = description or _first_line(ast.get_docstring(node)) or _first_line(ast.get_docstring(tree))
        out.append(PluginInfo(str(name), module, node.name, description, attrs, frozenset(failed), static, ns))
    return out


class PluginRegistry(Registry[T]):
    """A registry whose entries are discovered in the modules of `package` by their decorator.

    `names()`/`info()` read the package's sources (cached); `get()` imports the plugin's module
    on first use, whose decorator registers the live object. Entries registered at run time
    (a plugin defined in a test) are listed too.
    """

    def __init__(
        self,
        family: str,
        package: str,
        decorator: str,
        *,
        base_names: tuple[str, ...] = (),
        allowed_imports: tuple[str, ...] = (),
    ) -> None:
        super().__init__(family)
        self.package = package
        self.decorator = decorator
        self.base_names = base_names
        self.allowed_imports = allowed_imports
        self._found: dict[str, PluginInfo] | None = None

    def scan(self) -> dict[str, PluginInfo]:
        """Every plugin in the package's folder, by name (read once per process)."""
        if self._found is None:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError(f"no package named {self.package!r}", name=self.package)
            found: dict[str, PluginInfo] = {}
            for folder in spec.submodule_search_locations:
                for path in sorted(Path(folder).glob("*.py")):
                    if path.stem == "__init__":
                        continue
                    module = f"{self.package}.{path.stem}"
                    for info in _plugins_in(path, module, self.decorator, self.base_names, self.allowed_imports):
                        if info.name in found:
                            raise ValueError(f"{self.family} {info.name!r} is declared twice ({found[info.name].module}, {module})")
                        info.loader = (lambda n=info.name: self.get(n))
                        found[info.name] = info
            self._found = found
        return self._found

    def names(self) -> list[str]:
        return sorted({*self.scan(), *self._entries})

    def info(self, name: str) -> PluginInfo:
        """Static metadata of plugin `name` (a run-time registered one: read from the live object)."""
        found = self.scan()
        if name in found:
            return found[name]
        if name in self._entries:
            obj: Any = self._entries[name]
            attrs = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("__")} if isinstance(obj, type) else {}
            desc = attrs.get("description") if isinstance(attrs.get("description"), str) else ""
            return PluginInfo(name, getattr(obj, "__module__", ""), getattr(obj, "__qualname__", name),
                              desc or _first_line(obj.__doc__), attrs, loader=lambda: obj)
        raise UnknownNameError(self._unknown(name))

    def get(self, name: str) -> T:
        if name not in self._entries:
            found = self.scan()
            if name not in found:
                raise UnknownNameError(self._unknown(name))
            importlib.import_module(found[name].module)
            if name not in self._entries:
                raise KeyError(f"{self.family} {name!r}: module {found[name].module} did not register it")
        return self._entries[name]

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) of every plugin, for `bench list`."""
        return [(n, self.info(n).description) for n in self.names()]


# ----------------------------------------------------------------------------- options


def _find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | None:
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node if isinstance(node, ast.FunctionDef) else None


def function_parameters(module: str, qualname: str) -> list[str]:
    """Parameter names of function `qualname` (`Class.method` allowed) in `module`, read from its
    source without importing it."""
    path = _module_file(module)
    fn = _find_function(ast.parse(path.read_text(), str(path)), qualname)
    if fn is None:
        raise LookupError(f"{module}: no function {qualname!r}")
    a = fn.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]


def _resolve(annotation: str | None, ns: Mapping[str, Any]) -> Any:
    """A type annotation string evaluated in `ns` (+ typing); `Any` when it names something unknown.

    The string is an annotation from a plugin module's own source (same trust as importing
    that module); user input (matrix values) is validated by the resolved type, never evaluated.
    """
    if annotation is None:
        return Any
    try:
        return eval(annotation, {**vars(typing), **ns, "__builtins__": builtins})  # noqa: S307
    except Exception:  # noqa: BLE001
        return Any


def signature_options(module: str, qualname: str, exclude: Iterable[str] = ()) -> type:
    """A pydantic model of the keyword parameters of `module.qualname` (read from source) minus
    `exclude` (those the caller sets itself): names, annotated types and defaults."""
    path = _module_file(module)
    tree = ast.parse(path.read_text(), str(path))
    fn = _find_function(tree, qualname)
    if fn is None:
        raise LookupError(f"{module}: no function {qualname!r}")
    ns = static_namespace(path, module)
    a = fn.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    defaults: list[ast.expr | None] = [None] * (len(a.posonlyargs) + len(a.args) - len(a.defaults)) + list(a.defaults) + list(a.kw_defaults)
    skip = {"self", "cls", *exclude}
    fields: dict[str, tuple[Any, Any]] = {}
    for p, d in zip(params, defaults):
        if p.arg in skip:
            continue
        ann = _resolve(ast.unparse(p.annotation) if p.annotation is not None else None, ns)
        if d is None:
            fields[p.arg] = (ann, ...)
            continue
        try:
            default = ast.literal_eval(d)
        except ValueError:
            default = None
        fields[p.arg] = (ann, default)
    return options_model(f"{qualname}_options", fields)


def options_model(name: str, fields: Mapping[str, tuple[Any, Any]]) -> type:
    """A strict-keys pydantic model (unknown keys rejected) with the given (type, default) fields."""
    from pydantic import ConfigDict, create_model

    return create_model(name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **dict(fields))  # type: ignore[call-overload]


def dataclass_options(cls: type, namespace: Mapping[str, Any] | None = None) -> type:
    """The options model of a config dataclass: its fields with their (resolved) types and defaults."""
    import dataclasses

    ns = dict(namespace or vars(sys.modules.get(cls.__module__, object())))
    fields = {}
    for f in dataclasses.fields(cls):
        ann = f.type if not isinstance(f.type, str) else _resolve(f.type, ns)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = ...
        fields[f.name] = (ann, default)
    return options_model(f"{cls.__name__}_options", fields)


def names_options(name: str, defaults: Mapping[str, Any]) -> type:
    """An options model that knows only option names and defaults (any value type)."""
    return options_model(name, {k: (Any, v) for k, v in defaults.items()})


def validate_options(model: type, values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Check `values` against an options model; raise a pydantic `ValidationError` whose entries
    are located at the offending key, so a matrix error reads
    `experiments[0].pretrain.options.mask_ration: unknown key; allowed keys here: ...`.
    Returns `values` unchanged (a stage's key is computed from what the matrix wrote)."""
    from pydantic import ValidationError
    from pydantic_core import PydanticCustomError

    values = dict(values or {})
    try:
        model.model_validate(values)  # type: ignore[attr-defined]
    except ValidationError as exc:
        allowed = ", ".join(model.model_fields) or "(none)"  # type: ignore[attr-defined]
        errors: list[Any] = []
        for err in exc.errors():
            if err["type"] == "extra_forbidden":
                errors.append({
                    "type": PydanticCustomError("unknown_option", "unknown option of {what}; allowed keys here: {allowed}",
                                                {"what": what, "allowed": allowed}),
                    "loc": err["loc"], "input": err["input"],
                })
            else:
                msg = f"{err['msg']} (an option of {what}), got {err['input']!r}"
                errors.append({"type": PydanticCustomError("bad_option", "{msg}", {"msg": msg}), "loc": err["loc"], "input": err["input"]})
        raise ValidationError.from_exception_data(f"{what} options", errors) from None
    return values
