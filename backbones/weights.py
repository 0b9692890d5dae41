"""Where initial weights come from: local files only, never a download.

`imagenet1k` / `imagenet21k` / `dinov2` resolve, in order, to

1. `$BENCH_WEIGHTS_DIR/<timm_name>.<tag>.safetensors` (also `.pth`, `.pt`, `.bin`),
2. the local Hugging Face cache entry of timm's hub id for that tag
   (`timm/<timm_name>.<tag>`, file `model.safetensors` or `pytorch_model.bin`), read
   with `try_to_load_from_cache`, which never touches the network.

When neither exists a `WeightsNotFoundError` says exactly which file to put where.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from backbones.specs import PRETRAINED_INITS, BackboneSpec

WEIGHTS_DIR_ENV = "BENCH_WEIGHTS_DIR"
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin")
HF_FILENAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained-weights file is not on disk; the message says where to put it."""


def resolve_pretrained_file(spec: BackboneSpec, init: str, weights_dir: str | Path | None = None) -> Path:
    """Local file holding the `init` weights (`imagenet1k`/`imagenet21k`/`dinov2`) of `spec`.

    `weights_dir` overrides `$BENCH_WEIGHTS_DIR`.
    """
    if init not in PRETRAINED_INITS:
        raise ValueError(f"init {init!r} is not a pretrained source; known: {PRETRAINED_INITS}")
    tag = spec.weight_tags.get(init)
    if tag is None:
        have = ", ".join(sorted(spec.weight_tags)) or "none"
        raise WeightsNotFoundError(
            f"backbone {spec.name!r} ({spec.timm_name}) has no {init} weights in timm; "
            f"available inits: random, a state-dict path, or {have}"
        )
    full = f"{spec.timm_name}.{tag}"
    env_dir = weights_dir if weights_dir is not None else os.environ.get(WEIGHTS_DIR_ENV)
    tried: list[str] = []
    if env_dir:
        for suffix in WEIGHT_SUFFIXES:
            cand = Path(env_dir) / f"{full}{suffix}"
            tried.append(str(cand))
            if cand.is_file():
                return cand
    hub_id = f"timm/{full}"
    cached = _hf_cached(hub_id)
    if cached is not None:
        return cached
    where = Path(env_dir) if env_dir else Path(f"${WEIGHTS_DIR_ENV}")
    raise WeightsNotFoundError(
        f"{init} weights for backbone {spec.name!r} not found (downloads are disabled). "
        f"Put the timm weights file at {where / (full + '.safetensors')} "
        f"(e.g. `model.safetensors` from the Hugging Face repo {hub_id}, renamed) "
        f"and set {WEIGHTS_DIR_ENV} to its folder, or pre-populate the local Hugging Face cache "
        f"with {hub_id}. Tried: {', '.join(tried) or f'{WEIGHTS_DIR_ENV} unset'}; HF cache: {hub_id} not cached."
    )


def _hf_cached(hub_id: str) -> Path | None:
    """Path of a cached file of `hub_id` in the local HF cache, or None. No network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in HF_FILENAMES:
        hit = try_to_load_from_cache(repo_id=hub_id, filename=filename)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file (`weights_only=True`).

    Torch files that wrap the weights (`{"model": ...}`, `{"state_dict": ...}`) are
    unwrapped; a common `module.` prefix (DDP) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: object = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors carry no file name
            raise ValueError(f"weights file {path} could not be read as a torch state dict: {exc}") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {path} does not hold a flat mapping of name -> tensor")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)
