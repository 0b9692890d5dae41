"""Experiment matrices: YAML schema, validation and expansion into flat experiments.

A matrix file has `defaults`, an explicit `experiments:` list and/or `grid:` blocks.
Each experiment is `defaults` deep-merged with its own keys; each grid block is the
cartesian product of its `axes` (dotted keys -> list of values) minus its `exclude`
entries, merged over `defaults` and the block's `base`. The result is a list of
fully specified, validated `Experiment` objects in file order.

Errors name the file, the key path and the allowed values, e.g.
`matrix/x.yaml: experiments[3].pretrain.method: 'gmmml' is not one of mae, simmim, ...`.
Names (backbones, methods, sites, label sets) are checked against the live
registries, so a new registry entry is accepted without touching this module.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from bench.data.labels import LABEL_SETS, SITE_CLASSES


class MatrixError(Exception):
    """A malformed matrix. The message is one paragraph naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# Methods that are not SSL modules: `none` (no pre-training stage) and `supervised`
# (label-driven pre-training on a site, e.g. Krones exp. 2.3/2.4 on MIMIC-CXR).
NON_SSL_METHODS = ("none", "supervised")


def _ssl_method_names() -> list[str]:
    import ssl_methods

    return list(ssl_methods.list_methods())


def _dbb_methods() -> list[str]:
    """Methods whose forward takes a `valid` token mask (padded variable-resolution batches)."""
    import ssl_methods

    return [n for n in ssl_methods.list_methods() if ssl_methods.supports_valid_mask(n)]


def _backbone_names() -> list[str]:
    import backbones

    return list(backbones.list_backbones())


def _site_names() -> list[str]:
    from bench.data.sites import list_sites

    return list_sites()


@functools.lru_cache(maxsize=None)
def _options_model(kind: str, name: str) -> type:
    """The declared options of a plugin (read from its source, torch-free): a method's config
    class, a site's `option_defaults`, the DBB sampler's or the synthetic generator's keywords."""
    from bench import registry

    if kind == "method":
        import ssl_methods

        if name not in ssl_methods.list_methods():  # `supervised` takes no method options
            return registry.options_model(f"{name}_options", {})
        return ssl_methods.options_model(name)
    if kind == "site":
        from bench.data.sites import site_options_model

        return site_options_model(name)
    if kind == "dbb":  # `pretrain.batching.options` reach the DBB batch sampler; the stage sets the rest
        set_by_stage = ("grid_h", "grid_w", "batch_size", "token_budget", "seed", "rank", "world_size")
        return registry.signature_options("bench.data.dbb", "batching_options", exclude=set_by_stage)
    if kind == "synthetic":  # `data.synthetic` are the keywords of the generator (the runner adds the matrix's sites)
        return registry.signature_options("bench.data.synthetic", "generate", exclude=("out",))
    raise ValueError(kind)


def _check_options(kind: str, name: str | None, values: dict[str, Any], what: str) -> dict[str, Any]:
    """Unknown or mistyped plugin options fail at plan time, located at their key."""
    if name is None:  # the plugin's own field failed validation: reported there
        return values
    from bench.registry import validate_options

    return validate_options(_options_model(kind, name), values, what)


def _one_of(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _check_classes(v: str | list[str]) -> str | list[str]:
    if isinstance(v, list):
        if not v:
            raise ValueError("an explicit class list needs at least one label column")
        return v
    return _one_of(v, [*LABEL_SETS, SITE_CLASSES, "<list of label columns>"])


def _range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> AfterValidator:
    """A numeric field's allowed range, checked when the matrix is loaded.

    A value out of range (`finetune: {epochs: -3}`) would otherwise plan fine and fail
    hours later inside a stage; the error names the value and the range, and
    `_format_error` adds the file and key path. NaN and infinities are never allowed.
    """
    if low is not None and high is not None:
        allowed = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"{'<' if high_open else '<='} {high:g}"

    def check(v: Any) -> Any:
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            raise ValueError(f"{v!r} is out of range; allowed: {allowed}")
        return v

    return AfterValidator(check)


AtLeast1 = Annotated[int, _range(1)]  # epochs, batch sizes, image sizes, counts
NonNegativeInt = Annotated[int, _range(0)]  # seeds
Positive = Annotated[float, _range(0, low_open=True)]  # learning rates, clipping norms
NonNegative = Annotated[float, _range(0)]  # weight decay, minimum lr, warm-up epochs
Beta = Annotated[float, _range(0, 1, high_open=True)]  # AdamW betas


def _backbone_patch(name: str) -> int | None:
    """Patch size of a patch-based backbone (ViT, Swin), None for a CNN."""
    import backbones

    return backbones.patch_size(name)


# Names checked against the live registries, so a new site/label set is accepted without edits here.
SiteName = Annotated[str, AfterValidator(lambda v: _one_of(v, _site_names()))]
LabelSetName = Annotated[str, AfterValidator(lambda v: _one_of(v, list(LABEL_SETS)))]
Classes = Annotated[str | list[str], AfterValidator(_check_classes)]


class BatchingCfg(_Strict):
    """How pre-training batches are formed: fixed square resize, or Dynamic Batch Binning."""

    mode: Literal["fixed", "dbb"] = "fixed"
    max_side: AtLeast1 = 512
    patch: AtLeast1 | None = None
    token_budget: AtLeast1 | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # DBB sampler options (`bench.data.dbb.DBBBatchSampler`)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.data.get("mode") != "dbb":
            return v
        v = _check_options("dbb", "dbb", v, "the DBB sampler")
        _dbb_split_options()(v)  # an option of the other kind of step (`steps: single|mixed`) fails here, at plan time
        return v


@functools.lru_cache(maxsize=None)
def _dbb_split_options() -> Any:
    """`bench.data.dbb.split_batching_options`, evaluated torch-free from the module's source."""
    from bench import registry

    return registry.static_namespace(registry._module_file("bench.data.dbb"), "bench.data.dbb")["split_batching_options"]


class PretrainCfg(_Strict):
    method: str = "none"
    dataset: SiteName | None = None
    site_options: dict[str, Any] = Field(default_factory=dict)
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train", "val"])
    subset: AtLeast1 | None = None  # random N images (the paper: 100,000)
    classes: LabelSetName = "nih14"  # only for method: supervised
    epochs: AtLeast1 = 1
    batch_size: AtLeast1 = 64
    # optimiser fields (lr .. betas) a matrix leaves unset take the SSL method's reference recipe
    # (`Experiment._pretrain_recipe`, `bench list methods --verbose`); the defaults below are for `supervised`
    lr: Positive = 1e-4
    min_lr: NonNegative = 1e-6
    weight_decay: NonNegative = 0.04
    warmup_epochs: NonNegative = 0.0
    clip_grad: Positive | None = 3.0
    clip_mode: Literal["global", "per_tensor"] = "global"  # per_tensor: the DINO/GMML/SiT reference rule
    weight_decay_end: NonNegative | None = None  # cosine weight-decay schedule (DINO/GMML: 0.04 -> 0.4)
    betas: tuple[Beta, Beta] = (0.9, 0.999)  # AdamW betas (MAE: 0.9, 0.95)
    options: dict[str, Any] = Field(default_factory=dict)  # method config (mask ratio, ...)
    batching: BatchingCfg = Field(default_factory=BatchingCfg)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPUs that support it

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _one_of(v, list(dict.fromkeys([*NON_SSL_METHODS, *_ssl_method_names()])))

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if method == "none":  # no pre-training stage: nothing reads them
            return v
        return _check_options("method", method, v, f"method {method!r}")

    @field_validator("site_options")
    @classmethod
    def _site_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        site = info.data.get("dataset")
        return _check_options("site", site, v, f"site {site!r}") if site is not None else v

    @model_validator(mode="after")
    def _dataset_needed(self) -> "PretrainCfg":
        if self.method != "none" and self.dataset is None:
            raise ValueError(f"pretrain.method {self.method!r} needs pretrain.dataset (a site name)")
        if self.batching.mode == "dbb" and self.method != "none":
            ok = _dbb_methods()
            if self.method not in ok:
                raise ValueError(
                    f"batching.mode 'dbb' needs a method that takes padded variable-size batches; "
                    f"{self.method!r} is not one of {', '.join(ok)}"
                )
        return self


class FinetuneCfg(_Strict):
    dataset: SiteName = "nih"
    site_options: dict[str, Any] = Field(default_factory=dict)
    classes: Classes = "nih14"  # a label set, `site` (the site's own labels) or a list of label columns
    task: Literal["multilabel", "multiclass"] = "multilabel"  # sigmoid + BCE, or softmax + cross-entropy
    # multilabel loss: plain masked BCE, or BCE with positives weighted by the train split's inverse
    # prevalence (`bench.train.finetune.positive_weights`; the DINOv2-initialisation study, seed 004)
    loss: Literal["bce", "weighted_bce"] = "bce"
    pool: Literal["default", "avg", "token", "flatten"] = "default"  # ViT pooling for the head; flatten: linear probes only
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0])
    mode: Literal["finetune", "linear_probe"] = "finetune"
    epochs: AtLeast1 = 30
    batch_size: AtLeast1 = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Positive = 2.5e-4
    min_lr: NonNegative = 1e-6
    weight_decay: NonNegative = 0.05
    warmup_epochs: NonNegative = 0.0
    label_subset: float | int | None = None  # few-label regime: fraction (<1) or count, drawn by patient
    val_fraction: Annotated[float, _range(0, 1, low_open=True, high_open=True)] = 0.1  # carved from train by patient when the site has no val split
    augment: bool = True
    patience: AtLeast1 | None = None  # early stop on val AUC
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPUs that support it

    @field_validator("site_options")
    @classmethod
    def _site_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        site = info.data.get("dataset")
        return _check_options("site", site, v, f"site {site!r}")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds {v} contain duplicates")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str, info: ValidationInfo) -> str:
        if v == "weighted_bce" and info.data.get("task") == "multiclass":
            raise ValueError("'weighted_bce' is a multi-label loss; task 'multiclass' trains with cross-entropy")
        return v

    @field_validator("label_subset")
    @classmethod
    def _label_subset(cls, v: float | int | None) -> float | int | None:
        if v is None:
            return v
        ok = v >= 1 if isinstance(v, int) else math.isfinite(v) and 0 < v <= 1
        if not ok:
            raise ValueError(f"{v!r} is out of range; allowed: a fraction in (0, 1] or a count >= 1")
        return v


class EvalTarget(_Strict):
    """One report column: a site split scored on a label set (e.g. `NIH 5 class avg.`)."""

    column: str
    site: SiteName
    split: Literal["train", "val", "test"] = "test"
    site_options: dict[str, Any] = Field(default_factory=dict)
    classes: Classes = "harmonised5"
    location: str = ""

    @field_validator("site_options")
    @classmethod
    def _site_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        site = info.data.get("site")
        return _check_options("site", site, v, f"site {site!r}")

class Experiment(_Strict):
    id: str
    description: str = ""
    backbone: str
    init: str = "random"
    image_size: AtLeast1 = 224
    in_chans: int = 1
    pretrain: PretrainCfg = Field(default_factory=PretrainCfg)
    finetune: FinetuneCfg = Field(default_factory=FinetuneCfg)
    evaluate: list[EvalTarget] = Field(default_factory=list)
    allow_leakage: bool = False  # accept fine-tune/evaluation patient overlap (reported by the audit)

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v: str) -> str:
        return _one_of(v, _backbone_names())

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        from backbones.specs import PRETRAINED_INITS  # torch-free

        allowed = ("random", *PRETRAINED_INITS)
        if v in allowed or v.startswith("file:"):
            return v
        raise ValueError(f"{v!r} is not one of {', '.join(allowed)}, file:<path to weights>")

    @field_validator("in_chans")
    @classmethod
    def _chans(cls, v: int) -> int:
        return int(_one_of(str(v), ("1", "3")))

    @model_validator(mode="after")
    def _pretrain_recipe(self) -> "Experiment":
        """Fill the pre-training optimiser fields the matrix leaves unset from the method's
        reference recipe for this backbone family (lr scaled to `batch_size`, warm-up shortened
        for runs shorter than the reference); an explicit matrix value always wins. The filled
        values are part of the stage config and so of its key."""
        p = self.pretrain
        import ssl_methods

        if p.method in NON_SSL_METHODS or not ssl_methods.info(p.method).attr("recipes"):
            return self  # no published recipe (supervised, a new method): the matrix defaults apply
        from ssl_methods.recipe import STAGE_FIELDS

        values = ssl_methods.recipe(p.method, self.backbone).stage_defaults(p.epochs, p.batch_size)
        for name in STAGE_FIELDS:
            if name not in p.model_fields_set:
                setattr(p, name, values[name])
        return self

    @model_validator(mode="after")
    def _sizes_fit_the_patch(self) -> "Experiment":
        """A ViT/Swin input smaller than one patch fails only when the stage builds the model."""
        patch = _backbone_patch(self.backbone)
        if patch is not None and self.image_size < patch:
            raise ValueError(
                f"image_size: {self.image_size} is smaller than the patch size of backbone "
                f"{self.backbone!r}; allowed: >= {patch}"
            )
        b = self.pretrain.batching
        dbb_patch = b.patch or patch
        if b.mode == "dbb" and dbb_patch is not None and b.max_side < dbb_patch:
            raise ValueError(f"pretrain.batching.max_side: {b.max_side} is smaller than the patch size; allowed: >= {dbb_patch}")
        return self

    @model_validator(mode="after")
    def _evaluate_unique(self) -> "Experiment":
        cols = [t.column for t in self.evaluate]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"evaluate columns must be unique; repeated: {dup}")
        return self


class DataCfg(_Strict):
    """Where sites live. `root/<site>` unless `sites` names a path; `synthetic` makes `bench run`
    generate the synthetic multi-site collection into `root` first (idempotent)."""

    root: str = "data"
    sites: dict[str, str] = Field(default_factory=dict)
    synthetic: dict[str, Any] | None = None
    # folder of the initialisation weights (`imagenet1k`, ...) in timm's file naming; for this
    # matrix's runs it takes the place of $BENCH_WEIGHTS_DIR (never a download)
    weights: str | None = None
    # demo twins: `bench run` writes stand-in weights into `weights` from tiny timm models (same
    # architecture and on-disk format as the real files, not trained on ImageNet); reports say so
    standin_weights: bool = False

    @model_validator(mode="after")
    def _standin_needs_a_folder(self) -> "DataCfg":
        if self.standin_weights and not self.weights:
            raise ValueError("standin_weights: true needs data.weights (the folder to write the stand-in files to)")
        return self

    @field_validator("synthetic")
    @classmethod
    def _synthetic(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else _check_options("synthetic", "synthetic", v, "the synthetic-data generator")


def _report_option_names() -> list[str]:
    """Keyword options of `reports.build_reports` a matrix may set (its `reports:` section)."""
    from bench.registry import function_parameters

    # read from the source: importing the report builder would load matplotlib and scikit-learn
    skip = {"manifest", "out_dir", "title", "token_frame"}
    return [p for p in function_parameters("reports.build", "build_reports") if p not in skip]


def _check_metric_tables(file: Any, names: Any) -> None:
    """`reports.metric_tables`: a list of metric names the metric registry knows (read from the
    sources of `reports/`, no metric module imported)."""
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MatrixError(f"{file}: reports.metric_tables: must be a list of metric names, got {names!r}")
    from reports.metrics import METRICS

    allowed = METRICS.names()
    for i, n in enumerate(names):
        if n not in allowed:
            raise MatrixError(f"{file}: reports.metric_tables[{i}]: unknown metric {n!r}; allowed: {', '.join(allowed)}")


class Matrix(_Strict):
    name: str
    description: str = ""
    path: Path
    data: DataCfg
    experiments: list[Experiment]
    reports: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)  # cluster resources per stage kind
    variant: str = ""  # `--set` overrides, e.g. "finetune.epochs=3": names reports, MLflow experiment, manifest
    extends: str = ""  # a demo twin: the matrix file whose experiment list it scales down (`extends:`)

    @property
    def reports_dir_name(self) -> str:
        return self.path.stem + (f"+{self.variant}" if self.variant else "")


# ----------------------------------------------------------------------------- loading


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        nxt = d.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise TypeError(f"{k!r} is not a mapping")
        d = nxt
    d[keys[-1]] = copy.deepcopy(value)


def _get_dotted(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


_TEMPLATE = re.compile(r"\{([A-Za-z0-9_.]+)\}")


def _read_mapping(file: Path) -> dict[str, Any]:
    """A matrix file's top-level mapping (a matrix, or the one a twin `extends:`)."""
    try:
        doc = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise MatrixError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MatrixError(f"{file}: top level must be a mapping with keys name, defaults, experiments and/or grid")
    return doc


def _fill_template(template: str, values: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(key)
        return str(values[key])

    return _TEMPLATE.sub(sub, template)


def _format_error(file: Path, where: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            model = _model_at(Experiment, parent)
            allowed = ", ".join(model.model_fields) if model else "see docs"
            msg = f"unknown key; allowed keys here: {allowed}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"{err.get('input')!r} is not one of {msg.split('Input should be ')[-1]}"
        parts.append(f"{loc}: {msg}")
    return f"{file}: " + "; ".join(parts)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow a pydantic error location through nested models (for 'allowed keys' messages)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann, *(inner or ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def _validate_experiment(file: Path, where: str, raw: dict[str, Any], defaults: dict[str, Any] | None = None, own: dict[str, Any] | None = None) -> Experiment:
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        # a bad key inherited from `defaults:` is reported where the user wrote it, with its line
        if defaults is not None:
            for err in exc.errors():
                loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
                dotted = ".".join(loc)
                if loc and _get_dotted(defaults, dotted) is not None and (own is None or _get_dotted(own, dotted) is None):
                    line = _line_of(file, ["defaults", *loc])
                    at = f" (line {line})" if line else ""
                    msg = _format_error(file, where, exc).split(f"{where}.{dotted}: ", 1)[-1].split(f"; {where}")[0]
                    raise MatrixError(f"{file}{at}: defaults.{dotted}: {msg}") from None
        raise MatrixError(_format_error(file, where, exc)) from None


def _line_of(file: Path, keys: list[str]) -> int | None:
    """1-based line of a nested mapping key in a YAML file (None when not found)."""
    try:
        node = yaml.compose(file.read_text())
    except Exception:
        return None
    for k in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        nxt = next(((kn, vn) for kn, vn in node.value if getattr(kn, "value", None) == k), None)
        if nxt is None:
            return None
        key_node, node = nxt
    return key_node.start_mark.line + 1


TOP_LEVEL_OVERRIDES = ("name", "description", "data", "reports", "resources")
_OVERRIDE = re.compile(r"^(?:experiments\[(?P<id>[^\]]+)\]\.)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>.*)$", re.S)


def parse_overrides(items: list[str] | None) -> list[tuple[str | None, str, Any]]:
    """`--set finetune.epochs=3`, `--set 'experiments[3.1].pretrain.epochs=100'` -> (experiment id, key, value)."""
    out = []
    for item in items or []:
        m = _OVERRIDE.match(item)
        if not m:
            raise MatrixError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. finetune.epochs=3 or 'experiments[3.1].pretrain.epochs=100'")
        out.append((m.group("id"), m.group("key"), yaml.safe_load(m.group("value"))))
    return out


def variant_name(items: list[str] | None) -> str:
    """A folder-safe name for a set of overrides (reports of a variant never overwrite the original's)."""
    return "+".join(re.sub(r"[^A-Za-z0-9_.=,\[\]\-]+", "_", i) for i in items or [])


def _expand_grid(file: Path, gi: int, block: dict[str, Any], defaults: dict[str, Any]) -> list[tuple[str, dict]]:
    where = f"grid[{gi}]"
    allowed = {"id", "axes", "exclude", "base", "description"}
    unknown = set(block) - allowed
    if unknown:
        raise MatrixError(f"{file}: {where}: unknown keys {sorted(unknown)}; allowed keys: {', '.join(sorted(allowed))}")
    if "id" not in block or "axes" not in block:
        raise MatrixError(f"{file}: {where}: needs 'id' (a template such as 'g.{{backbone}}') and 'axes'")
    axes = block["axes"]
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
        raise MatrixError(f"{file}: {where}.axes: must map dotted keys to non-empty lists of values")
    excludes = block.get("exclude") or []
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise MatrixError(f"{file}: {where}.exclude: must be a list of mappings (dotted key -> value)")
    for ei, ex in enumerate(excludes):
        bad = set(ex) - set(axes)
        if bad:
            raise MatrixError(
                f"{file}: {where}.exclude[{ei}]: keys {sorted(bad)} are not grid axes; axes: {', '.join(axes)}"
            )
    base = _deep_merge(defaults, block.get("base") or {})
    out = []
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, combo))
        if any(all(point[k] == v for k, v in ex.items()) for ex in excludes):
            continue
        raw = copy.deepcopy(base)
        for k, v in point.items():
            try:
                _set_dotted(raw, k, v)
            except TypeError as exc:
                raise MatrixError(f"{file}: {where}.axes.{k}: {exc}") from None
        try:
            raw["id"] = _fill_template(str(block["id"]), point)
        except KeyError as exc:
            raise MatrixError(
                f"{file}: {where}.id: template field {exc} is not a grid axis; axes: {', '.join(axes)}"
            ) from None
        if "description" in block:
            raw["description"] = _fill_template(str(block["description"]), point)
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        out.append((f"{where}({label})", raw))
    return out


TWIN_KEYS = ("backbones", "sites", "columns", "scale", "set")
_TWIN_ONE = re.compile(r"^experiments\[([^\]]+)\]\.(.+)$")
_EXTENDING_TOP = {"extends", "name", "description", "data", "reports", "resources", "twin"}


def _extends(file: Path, doc: dict[str, Any]) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """A demo twin (`extends: krones_table1.yaml`): the parent's experiment list, this file's top level.

    Why: a twin must run exactly the paper's experiment list at toy scale, so it may not
    repeat the list (a copy drifts); it names the parent and says only how to scale it
    down (`twin:`). `name`, `description` and `data` replace the parent's, `reports` is
    merged over the parent's, `resources` replaces them when given. Returns the merged
    document, the parent's path and the `twin:` block.
    """
    unknown = set(doc) - _EXTENDING_TOP
    if unknown:
        raise MatrixError(
            f"{file}: keys {sorted(unknown)} are not allowed next to 'extends' (the experiment list, defaults and "
            f"grid come from the parent); allowed: {', '.join(sorted(_EXTENDING_TOP))}"
        )
    ref = doc["extends"]
    if not isinstance(ref, str) or not ref:
        raise MatrixError(f"{file}: extends: must be the path of a matrix file (relative to {file.parent})")
    parent = (file.parent / ref) if not Path(ref).is_absolute() else Path(ref)
    if not parent.is_file():
        raise MatrixError(f"{file}: extends: no such matrix file {parent}")
    base = _read_mapping(parent)
    if "extends" in base:
        raise MatrixError(f"{file}: extends: {parent} extends another matrix itself; a twin extends a matrix with its own experiment list")
    merged = {k: v for k, v in base.items()}
    for k in ("name", "description", "data", "resources"):
        if k in doc:
            merged[k] = doc[k]
    if "reports" in doc:
        if not isinstance(doc["reports"], dict):
            raise MatrixError(f"{file}: reports: must be a mapping of report options")
        merged["reports"] = _deep_merge(base.get("reports") or {}, doc["reports"])
    twin = doc.get("twin") or {}
    if not isinstance(twin, dict):
        raise MatrixError(f"{file}: twin: must be a mapping with keys {', '.join(TWIN_KEYS)}")
    bad = set(twin) - set(TWIN_KEYS)
    if bad:
        raise MatrixError(f"{file}: twin: unknown keys {sorted(bad)}; allowed keys: {', '.join(TWIN_KEYS)}")
    for k in TWIN_KEYS:
        if not isinstance(twin.get(k) or {}, dict):
            raise MatrixError(f"{file}: twin.{k}: must be a mapping")
    return merged, parent, twin


def _site_fields(raw: dict[str, Any]) -> list[tuple[dict[str, Any], str, bool]]:
    """(mapping, key of its site name, holds fine-tune/evaluate classes) for every site an experiment names."""
    out: list[tuple[dict[str, Any], str, bool]] = []
    if isinstance(raw.get("pretrain"), dict):
        out.append((raw["pretrain"], "dataset", False))
    if isinstance(raw.get("finetune"), dict):
        out.append((raw["finetune"], "dataset", True))
    for t in raw.get("evaluate") or []:
        if isinstance(t, dict):
            out.append((t, "site", True))
    return out


def _apply_twin(file: Path, twin: dict[str, Any], raw_exps: list[tuple[str, dict[str, Any]]]) -> None:
    """Scale a parent's raw experiments down in place: backbone and site maps, `scale` factors, `set` values.

    `columns` merges a mapping over the evaluation target of that report column (a
    synthetic site lacks a split the real one has). `scale` multiplies a numeric value
    wherever an experiment has one (integers round, never below 1; a 0 stays 0), so values
    that differ in the paper still differ in the twin (Table 5's 500 vs 1000 epochs, 224 vs
    448 px) and the twin's stage sharing is the paper's. `set` replaces a value in every
    experiment (seeds, fine-tuning epochs), or in one (`experiments[ID].key`, as `--set`).
    Each map entry must be used by the parent: a typo is an error naming the twin file and
    key, never a silent no-op.
    """
    backbones_map = twin.get("backbones") or {}
    known = _backbone_names()
    for k, v in backbones_map.items():
        if not isinstance(v, str) or v not in known:
            raise MatrixError(f"{file}: twin.backbones.{k}: {v!r} is not one of {', '.join(known)}")
        if not any(raw.get("backbone") == k for _, raw in raw_exps):
            raise MatrixError(f"{file}: twin.backbones.{k}: no experiment of the parent uses backbone {k!r}")
    site_map: dict[str, dict[str, Any]] = {}
    sites = _site_names()
    for k, v in (twin.get("sites") or {}).items():
        entry = {"site": v} if isinstance(v, str) else v
        if not isinstance(entry, dict) or set(entry) - {"site", "site_options", "classes"} or "site" not in entry:
            raise MatrixError(
                f"{file}: twin.sites.{k}: give a site name or a mapping with 'site' and optionally 'site_options', 'classes'"
            )
        if entry["site"] not in sites:
            raise MatrixError(f"{file}: twin.sites.{k}.site: {entry['site']!r} is not one of {', '.join(sites)}")
        if not any(m.get(key) == k for _, raw in raw_exps for m, key, _c in _site_fields(raw)):
            raise MatrixError(f"{file}: twin.sites.{k}: no experiment of the parent uses site {k!r}")
        site_map[k] = entry
    columns = twin.get("columns") or {}
    for col, over in columns.items():
        if not isinstance(over, dict):
            raise MatrixError(f"{file}: twin.columns.{col}: must be a mapping merged over that evaluation target")
        if not any(isinstance(t, dict) and t.get("column") == col for _, raw in raw_exps for t in raw.get("evaluate") or []):
            raise MatrixError(f"{file}: twin.columns.{col}: no evaluation target of the parent has column {col!r}")
    ids = {str(raw.get("id")) for _, raw in raw_exps}
    for k in twin.get("set") or {}:
        one = _TWIN_ONE.match(str(k))
        if one and one.group(1) not in ids:
            raise MatrixError(f"{file}: twin.set.{k}: no experiment {one.group(1)!r}; ids: {', '.join(sorted(ids))}")
    scale = twin.get("scale") or {}
    for k, f in scale.items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
            raise MatrixError(f"{file}: twin.scale.{k}: {f!r} is not a positive factor")
        if not any(isinstance(_get_dotted(raw, k), (int, float)) for _, raw in raw_exps):
            raise MatrixError(f"{file}: twin.scale.{k}: no experiment of the parent has a number at {k!r}")
    for _, raw in raw_exps:
        if raw.get("backbone") in backbones_map:
            raw["backbone"] = backbones_map[raw["backbone"]]
        for m, key, has_classes in _site_fields(raw):
            entry = site_map.get(m.get(key))
            if entry is None:
                continue
            m[key] = entry["site"]
            if "site_options" in entry:
                m["site_options"] = copy.deepcopy(entry["site_options"])
            if has_classes and "classes" in entry:
                m["classes"] = copy.deepcopy(entry["classes"])
        raw["evaluate"] = [
            _deep_merge(t, columns[t["column"]]) if isinstance(t, dict) and t.get("column") in columns else t
            for t in raw.get("evaluate") or []
        ]
        for k, f in scale.items():
            v = _get_dotted(raw, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            _set_dotted(raw, k, (max(1, round(v * f)) if v >= 1 else v) if isinstance(v, int) else v * f)
        for k, v in (twin.get("set") or {}).items():
            one = _TWIN_ONE.match(str(k))  # `experiments[ID].key`: that experiment only, as with --set
            if one and str(raw.get("id")) != one.group(1):
                continue
            try:
                _set_dotted(raw, one.group(2) if one else str(k), v)
            except TypeError as exc:
                raise MatrixError(f"{file}: twin.set.{k}: {exc}") from None


def load_matrix(path: str | Path, overrides: list[str] | None = None) -> Matrix:
    """Load, expand and validate a matrix file. Raises `MatrixError` with a one-paragraph message.

    `overrides` (`--set`) are dotted `KEY=VALUE` items validated like the file: a top-level
    key (`data.root=...`), one experiment's key (`experiments[3.1].pretrain.epochs=100`), or
    any other key, which applies to every experiment (after `defaults`, winning over it).
    """
    file = Path(path)
    if not file.is_file():
        raise MatrixError(f"{file}: no such matrix file")
    doc = _read_mapping(file)
    parent: Path | None = None
    twin: dict[str, Any] = {}
    if "extends" in doc:  # a demo twin: the parent's experiments, scaled down by `twin:`
        doc, parent, twin = _extends(file, doc)
    allowed_top = {"name", "description", "data", "defaults", "experiments", "grid", "reports", "resources"}
    unknown = set(doc) - allowed_top
    if unknown:
        raise MatrixError(f"{file}: unknown top-level keys {sorted(unknown)}; allowed: {', '.join(sorted(allowed_top))}")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise MatrixError(f"{file}: defaults: must be a mapping")
    sets = parse_overrides(overrides)
    for exp_id, key, value in sets:
        if exp_id is None and key.split(".")[0] in TOP_LEVEL_OVERRIDES:
            try:
                _set_dotted(doc, key, value)
            except TypeError as exc:
                raise MatrixError(f"--set {key}: {exc}") from None
    raw_exps: list[tuple[str, dict]] = []
    for i, e in enumerate(doc.get("experiments") or []):
        if not isinstance(e, dict):
            raise MatrixError(f"{file}: experiments[{i}]: must be a mapping with at least an 'id'")
        raw_exps.append((f"experiments[{i}]", _deep_merge(defaults, e)))
    for gi, block in enumerate(doc.get("grid") or []):
        if not isinstance(block, dict):
            raise MatrixError(f"{file}: grid[{gi}]: must be a mapping with 'id' and 'axes'")
        raw_exps.extend(_expand_grid(file, gi, block, defaults))
    if not raw_exps:
        raise MatrixError(f"{file}: defines no experiments (give 'experiments:' and/or 'grid:')")
    if parent is not None:
        _apply_twin(file, twin, raw_exps)
    ids = {str(raw.get("id")) for _, raw in raw_exps}
    for exp_id, key, value in sets:
        if exp_id is None and key.split(".")[0] in TOP_LEVEL_OVERRIDES:
            continue
        if exp_id is not None and exp_id not in ids:
            raise MatrixError(f"--set experiments[{exp_id}].{key}: no experiment {exp_id!r}; ids: {', '.join(sorted(ids))}")
        for _, raw in raw_exps:
            if exp_id is None or str(raw.get("id")) == exp_id:
                try:
                    _set_dotted(raw, key, value)
                except TypeError as exc:
                    raise MatrixError(f"--set {key}: {exc}") from None
    own = {f"experiments[{i}]": e for i, e in enumerate(doc.get("experiments") or []) if isinstance(e, dict)}
    # line numbers of `defaults:` typos only when the raw experiments are the file's own
    line_hints = not sets and parent is None
    exps = [_validate_experiment(file, where, raw, defaults if line_hints else None, own.get(where)) for where, raw in raw_exps]
    seen: dict[str, str] = {}
    for (where, _), e in zip(raw_exps, exps):
        if e.id in seen:
            raise MatrixError(f"{file}: {where}.id: {e.id!r} is used twice (also by {seen[e.id]})")
        seen[e.id] = where
        if not e.evaluate:
            raise MatrixError(f"{file}: {where}.evaluate: needs at least one evaluation target")
    try:
        data = DataCfg.model_validate(doc.get("data") or {})
    except ValidationError as exc:
        raise MatrixError(_format_error(file, "data", exc)) from None
    reports = doc.get("reports") or {}
    if not isinstance(reports, dict):
        raise MatrixError(f"{file}: reports: must be a mapping of report options")
    allowed_reports = _report_option_names()
    for k in reports:
        if k not in allowed_reports:
            raise MatrixError(f"{file}: reports.{k}: unknown report option; allowed: {', '.join(allowed_reports)}")
    _check_metric_tables(file, reports.get("metric_tables"))
    columns = {t.column for e in exps for t in e.evaluate}
    rc = reports.get("reliability_column")
    if rc is not None and rc not in columns:
        raise MatrixError(f"{file}: reports.reliability_column: {rc!r} is not one of the evaluate columns {', '.join(sorted(columns))}")
    ref = reports.get("init_reference")
    if ref is not None:  # the init study's reference row must exist before days of training, not after
        from bench import display_names as dn
        from reports.init_rows import init_row

        rows = list(dict.fromkeys(
            init_row(dn.method_name(e.pretrain.method), dn.site_name(e.pretrain.dataset), dn.init_name(e.init), e.id) for e in exps
        ))
        if ref not in rows:
            raise MatrixError(f"{file}: reports.init_reference: {ref!r} is not one of the initialisation rows {', '.join(rows)}")
    from bench.execute.resources import ResourceError, validate_layer

    try:
        resources = validate_layer(doc.get("resources"), str(file))
    except ResourceError as exc:
        raise MatrixError(str(exc)) from None
    variant = variant_name(overrides)
    return Matrix(
        variant=variant,
        reports=reports,
        resources=resources,
        name=str(doc.get("name") or file.stem) + (f"+{variant}" if variant else ""),
        description=str(doc.get("description") or ""),
        path=file,
        data=data,
        experiments=exps,
        extends=str(parent) if parent is not None else "",
    )
