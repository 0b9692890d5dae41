"""GPU-hour estimates for planning a cluster study (`bench plan MATRIX --executor slurm`).

The estimate is FLOPs / (device peak x assumed model FLOP utilisation), per stage:
- FLOPs per image from `bench.compute` (ViT: per-sequence encoder model; other
  families: timm's published GMACs at 224 px scaled by pixel count);
- training costs 3x a forward pass (forward + backward), evaluation 1x;
- each SSL method multiplies the encoder cost by the views/tokens it runs (MAE's
  encoder sees 25% of the tokens plus a light decoder; DINO runs 2 global + local
  crops through student and 2 global through the teacher, ...), as stated in
  `METHOD_FACTOR`;
- images per epoch: `pretrain.subset` when the matrix gives it, else the dataset's
  official size (`SITE_IMAGES`, from the datasets' documentation), 70% of it for
  fine-tuning splits, the test split's size for evaluation.
These are budget numbers for asking a cluster for time, good to a factor of ~1.5:
data loading, validation and checkpoints are not modelled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

# dense bf16 tensor-core peak (TFLOP/s) of common accelerators (vendor datasheets, without sparsity)
GPU_PEAK_TFLOPS: dict[str, float] = {
    "v100": 125.0,  # fp16
    "a100": 312.0,
    "a40": 150.0,
    "l40s": 362.0,
    "h100": 989.0,
    "h200": 989.0,
    "b200": 2250.0,
}
DEFAULT_MFU = 0.35

# official image counts (all splits) of the datasets' documented releases
SITE_IMAGES: dict[str, int] = {
    "nih": 112_120,
    "chexpert": 223_648,
    "mimic": 377_110,
    "padchest": 160_861,
    "vindr": 18_000,
    "covidx": 30_000,
    "irma": 12_000,
    "oct": 84_000,
}
TEST_IMAGES: dict[str, int] = {"nih": 25_596, "chexpert": 668, "mimic": 5_159, "padchest": 16_000, "vindr": 3_000}

# encoder-forward multiples per image of each pre-training method (see module docstring)
METHOD_FACTOR: dict[str, float] = {
    "mae": 0.25 + 0.15,  # 25% visible tokens through the encoder + an 8-block narrow decoder on all tokens
    "simmim": 1.0,
    "gmml": 1.0,
    "sit": 2.0,  # two views through student; teacher forward is not back-propagated (counted in 3x below)
    "dino": 2.0 + 10 * (96 / 224) ** 2,  # 2 global + 10 local crops (96 px)
    "mocov3": 2.0,
    "supervised": 1.0,
}

# timm GMACs at 224 px for CNN/Swin backbones (FLOPs = 2 x MACs)
OTHER_GMACS: dict[str, float] = {"resnet50": 4.1, "swin_base": 15.5, "swin_b": 15.5}


@functools.lru_cache(maxsize=None)  # a study has a handful of model shapes and thousands of stages
def forward_flops(backbone: str, image_size: int, in_chans: int = 1) -> float:
    """FLOPs of one forward pass of `backbone` on one `image_size`² image."""
    from bench.compute import VIT_CONFIGS, model_forward_flops

    import_name = backbone.lower()
    for vit in VIT_CONFIGS:
        if import_name.startswith(vit):
            patch = 16
            n = (image_size // patch) ** 2
            return model_forward_flops(n, vit, patch=patch, in_chans=in_chans)
    for name, gmacs in OTHER_GMACS.items():
        if import_name.startswith(name):
            return 2e9 * gmacs * (image_size / 224) ** 2
    if "tiny_demo" in import_name:
        return 2 * 4 * (24 * 65 * 96**2 + 4 * 65**2 * 96)  # the CPU demo ViT (64 px, patch 8, 96-d, 4 blocks)
    return 2e9 * 4.6 * (image_size / 224) ** 2  # ViT-S sized default


@dataclass
class StageEstimate:
    key: str
    kind: str
    flops: float
    gpu_hours: float


def stage_flops(stage_config: dict[str, Any], kind: str) -> float:
    cfg = stage_config
    fwd = forward_flops(cfg.get("backbone", "vit_small"), int(cfg.get("image_size", 224)), int(cfg.get("in_chans", 1)))
    if kind == "pretrain":
        p = cfg["pretrain"]
        images = p.get("subset") or SITE_IMAGES.get(p.get("dataset") or "", 100_000)
        return 3.0 * fwd * METHOD_FACTOR.get(p["method"], 1.0) * images * int(p.get("epochs", 1))
    if kind == "finetune":
        f = cfg["finetune"]
        images = 0.7 * SITE_IMAGES.get(f.get("dataset", ""), 100_000)
        subset = f.get("label_subset")
        if subset:
            images = images * subset if subset < 1 else float(subset)
        mult = 1.0 if f.get("mode") == "linear_probe" else 3.0
        return mult * fwd * images * int(f.get("epochs", 1)) + fwd * 0.1 * images * int(f.get("epochs", 1))
    site = cfg.get("site", "")
    return fwd * TEST_IMAGES.get(site, 0.2 * SITE_IMAGES.get(site, 50_000))


def estimate(stages: list[Any], peak_tflops: float, mfu: float = DEFAULT_MFU) -> list[StageEstimate]:
    """GPU-hours per stage: FLOPs / (peak x MFU). Evaluations take the model shape of their fine-tune."""
    by_key = {s.key: s for s in stages}
    out = []
    for s in stages:
        cfg = s.config
        if s.kind == "evaluate" and s.upstream and s.upstream[0] in by_key:
            up = by_key[s.upstream[0]].config
            cfg = {**cfg, "backbone": up.get("backbone"), "image_size": up.get("image_size", cfg.get("image_size"))}
        fl = stage_flops(cfg, s.kind)
        hours = fl / (peak_tflops * 1e12 * mfu) / 3600.0
        out.append(StageEstimate(s.key, s.kind, fl, hours))
    return out
