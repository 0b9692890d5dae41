"""Backbones: a registry of named timm architectures plus their initialisations.

`create(name, init=..., in_chans=..., num_classes=..., img_size=...)` always builds
the timm model with `pretrained=False` and then, for a non-random `init`, loads a
local state dict with strict checks on every non-head key (see
`backbones.loading`). `init` is

* `random` - timm's own initialisation;
* `imagenet1k` / `imagenet21k` / `dinov2` - a local file (`backbones.weights`), never a download;
* a path to a state dict (`.safetensors` or a torch file), e.g. the encoder exported
  by a pre-training stage (`SSLMethod.encoder_state_dict()`).

Input-channel adaptation (3 <-> 1) of pretrained weights follows `chans_adapt`
(`mean`, the Krones paper's choice and the default, or `sum`, timm's).

Importing the package does not import torch or timm (listing backbones and validating a
matrix only need the specs, `backbones.specs`): `create` imports them, and the torch-based
names below are loaded on first attribute access (PEP 562).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backbones.specs import BACKBONES, BackboneSpec, register_backbone

if TYPE_CHECKING:
    from torch import nn

    from backbones.channels import ChansAdapt

# torch-based public names -> the module that defines them (imported on first access)
_LAZY = {
    "adapt_conv_weight": "backbones.channels",
    "CHANS_ADAPT_MODES": "backbones.channels",
    "BackboneInitError": "backbones.loading",
    "LoadReport": "backbones.loading",
    "load_backbone_weights": "backbones.loading",
    "PRETRAINED_INITS": "backbones.weights",
    "WeightsNotFoundError": "backbones.weights",
    "read_state_dict": "backbones.weights",
    "resolve_pretrained_file": "backbones.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BACKBONES",
    "BackboneInitError",
    "BackboneSpec",
    "LoadReport",
    "WeightsNotFoundError",
    "adapt_conv_weight",
    "create",
    "feature_dim",
    "get_spec",
    "list_backbones",
    "patch_size",
    "register_backbone",
]


def list_backbones() -> list[str]:
    return BACKBONES.names()


def get_spec(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def patch_size(name: str) -> int | None:
    """Pixels per side of one token of a patch-based backbone (ViT, Swin); None for a CNN.

    From the spec alone (its `patch_size` override, else the `patchN` of the timm name), so
    the matrix checks image sizes against it without building the model."""
    spec = get_spec(name)
    if spec.family == "resnet":
        return None
    if spec.timm_kwargs.get("patch_size"):
        return int(spec.timm_kwargs["patch_size"])
    m = re.search(r"patch(\d+)", spec.timm_name)
    return int(m.group(1)) if m else None


def create(
    name: str,
    *,
    init: str | Path = "random",
    in_chans: int = 1,
    num_classes: int = 0,
    img_size: int | None = None,
    chans_adapt: ChansAdapt = "mean",
    weights_dir: str | Path | None = None,
    **kw: Any,
) -> nn.Module:
    """Build backbone `name` (a timm model; `num_classes=0` gives pooled features).

    `img_size` is the square input side in pixels (ViT/Swin; default from the spec,
    ignored by CNNs). `weights_dir` overrides `$BENCH_WEIGHTS_DIR` for ImageNet
    weights. Other keywords go to `timm.create_model` (e.g. `drop_path_rate`,
    `dynamic_img_size`, `global_pool`). The load report of a non-random init is
    attached as `model.bench_init` (a `LoadReport`).
    """
    import timm

    from backbones.channels import CHANS_ADAPT_MODES
    from backbones.loading import load_backbone_weights
    from backbones.weights import PRETRAINED_INITS, read_state_dict, resolve_pretrained_file

    spec = BACKBONES.get(name)
    if chans_adapt not in CHANS_ADAPT_MODES:
        raise ValueError(f"chans_adapt must be one of {CHANS_ADAPT_MODES}, got {chans_adapt!r}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    kwargs: dict[str, Any] = {**spec.timm_kwargs, **kw}
    if spec.family in ("vit", "swin"):
        kwargs["img_size"] = img_size if img_size is not None else spec.default_img_size
    model = timm.create_model(
        spec.timm_name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs
    )
    init_s = str(init)
    if init_s == "random":
        return model
    if init_s in PRETRAINED_INITS:
        path = resolve_pretrained_file(spec, init_s, weights_dir)
    else:
        path = Path(init_s)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone {name!r}: init {init_s!r} is neither 'random', one of {PRETRAINED_INITS}, "
                "nor an existing state-dict file"
            )
    state_dict = read_state_dict(path)
    report = load_backbone_weights(model, state_dict, source=str(path), chans_adapt=chans_adapt)
    model.bench_init = report
    return model


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled feature vector (`num_features` of a timm model)."""
    dim = getattr(model, "num_features", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(model).__name__} has no integer `num_features`; not a timm backbone?")
    return dim
