"""Backbone specifications: which timm architecture a benchmark name means.

A spec is data, not code (timm style): the timm architecture name, the keyword
arguments that shrink or reshape it, the family (it decides which SSL methods and
weight adaptations apply) and which timm pretrained tag `imagenet1k` /
`imagenet21k` / `dinov2` resolve to. Adding a backbone is one `register_backbone(...)` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bench.registry import Registry

Family = Literal["vit", "resnet", "swin"]

# Inits read from a local timm weights file (`backbones.weights`); defined here, torch-free,
# because matrix validation checks `init:` against it without importing torch.
PRETRAINED_INITS: tuple[str, ...] = ("imagenet1k", "imagenet21k", "dinov2")


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    `timm_name` is the timm architecture (without a pretrained tag); `timm_kwargs`
    override its defaults (e.g. a tiny ViT for CPU tests). `default_img_size` is the
    square input side in pixels used when `create(img_size=None)`; `None` for CNNs,
    which accept any size. `weight_tags` maps an init name (`imagenet1k`,
    `imagenet21k`, `dinov2`) to the timm pretrained tag, so the file looked up is
    `<timm_name>.<tag>`.
    """

    name: str
    timm_name: str
    family: Family
    default_img_size: int | None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    weight_tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.register(spec.name)(spec)


# The tiny demo backbones have no published weights: their `imagenet1k`/`imagenet21k` tags name
# stand-in files (`backbones.standin`: the tiny timm model, seeded, never trained) that the demo
# twins of the paper matrices load through the same lookup as real weights.
STANDIN_TAGS = {"imagenet1k": "standin_in1k", "imagenet21k": "standin_in21k"}

# CPU-sized ViT: 8x8 grid of 8-px patches at 64 px, 96-d, 4 blocks, 3 heads (~0.46 M
# parameters). Small enough that a few hundred 64x64 images pre-train in seconds
# per epoch on one core; no pretrained weights exist for this shape.
register_backbone(
    BackboneSpec(
        name="vit_tiny_demo",
        timm_name="vit_tiny_patch16_224",
        family="vit",
        default_img_size=64,
        timm_kwargs={"patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3},
        weight_tags=STANDIN_TAGS,
        description="tiny ViT for CPU demos and tests (patch 8, 96-d, depth 4, 3 heads, 64 px)",
    )
)

# Narrow ResNet-10-T (channels 16..128, deep-tiered 16-wide stem, ~0.3 M parameters).
register_backbone(
    BackboneSpec(
        name="resnet_tiny_demo",
        timm_name="resnet10t",
        family="resnet",
        default_img_size=None,
        timm_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16},
        weight_tags=STANDIN_TAGS,
        description="narrow ResNet-10-T for CPU demos and tests",
    )
)

# Tiny Swin for CPU tests of Swin code paths (SimMIM): 64 px, patch 4, window 4,
# widths 24..192, depths (1, 1, 2, 1) (~0.8 M parameters).
register_backbone(
    BackboneSpec(
        name="swin_tiny_demo",
        timm_name="swin_tiny_patch4_window7_224",
        family="swin",
        default_img_size=64,
        timm_kwargs={"window_size": 4, "embed_dim": 24, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 3, 6)},
        weight_tags=STANDIN_TAGS,
        description="tiny Swin for CPU demos and tests (patch 4, window 4, 24-d stem, 64 px)",
    )
)

# `imagenet1k` means the weights the Krones paper calls "ImageNet1k": timm's default
# supervised tag for ViT and Swin (in21k/in22k pre-trained, in1k fine-tuned) and
# torchvision's ResNet-50 (the paper takes ResNet weights from torchvision, timm tag
# `tv_in1k`). For weights trained on in1k only, override the tag in a spec of your own
# (timm has `vit_small_patch16_224.augreg_in1k`, `swin_base_patch4_window7_224.ms_in1k`).
register_backbone(
    BackboneSpec(
        name="vit_small",
        timm_name="vit_small_patch16_224",
        family="vit",
        default_img_size=224,
        weight_tags={"imagenet1k": "augreg_in21k_ft_in1k", "imagenet21k": "augreg_in21k"},
        description="ViT-S/16 (384-d, 12 blocks, 6 heads)",
    )
)
register_backbone(
    BackboneSpec(
        name="vit_base",
        timm_name="vit_base_patch16_224",
        family="vit",
        default_img_size=224,
        weight_tags={"imagenet1k": "augreg_in21k_ft_in1k", "imagenet21k": "augreg_in21k"},
        description="ViT-B/16 (768-d, 12 blocks, 12 heads)",
    )
)
register_backbone(
    BackboneSpec(
        name="resnet50",
        timm_name="resnet50",
        family="resnet",
        default_img_size=None,
        weight_tags={"imagenet1k": "tv_in1k"},
        description="ResNet-50 (torchvision layout)",
    )
)
register_backbone(
    BackboneSpec(
        name="swin_base",
        timm_name="swin_base_patch4_window7_224",
        family="swin",
        default_img_size=224,
        weight_tags={"imagenet1k": "ms_in22k_ft_in1k", "imagenet21k": "ms_in22k"},
        description="Swin-B (patch 4, window 7)",
    )
)

# DINOv2 ViT-B/14 (Oquab et al. 2023; self-supervised on LVD-142M), the init of the
# DINOv2-initialisation study (Tayebi Arasteh et al., seed 004). timm builds the DINOv2
# architecture (LayerScale, patch 14; the `reg4` variant adds 4 register tokens) and its
# `lvd142m` weights are pre-trained at 518 px (37x37 patch grid). Fine-tuning at another
# resolution (224 px: 16x16 grid) resamples the file's `pos_embed` when loading
# (`backbones.loading`): with registers the file's pos_embed has no prefix tokens
# (`no_embed_class`), without them the CLS position is kept as a prefix.
register_backbone(
    BackboneSpec(
        name="vit_base_dinov2",
        timm_name="vit_base_patch14_dinov2",
        family="vit",
        default_img_size=224,
        weight_tags={"dinov2": "lvd142m"},
        description="ViT-B/14 DINOv2 architecture (768-d, 12 blocks, LayerScale); init dinov2 = lvd142m weights",
    )
)
register_backbone(
    BackboneSpec(
        name="vit_base_dinov2_reg",
        timm_name="vit_base_patch14_reg4_dinov2",
        family="vit",
        default_img_size=224,
        weight_tags={"dinov2": "lvd142m"},
        description="ViT-B/14 DINOv2 with 4 register tokens; init dinov2 = lvd142m weights",
    )
)
# CPU-sized stand-ins with the same timm architectures (and so the same key layout and
# pos_embed handling) for tests and demo twins: patch 14, 96-d, 4 blocks, 3 heads, 56 px (4x4
# grid). Their `dinov2` file (`<timm_name>.standin_dinov2.safetensors`) is a stand-in written
# from a tiny timm model, never DINOv2; the tag keeps it apart from a real `lvd142m` file.
register_backbone(
    BackboneSpec(
        name="vit_dinov2_tiny_demo",
        timm_name="vit_base_patch14_dinov2",
        family="vit",
        default_img_size=56,
        timm_kwargs={"embed_dim": 96, "depth": 4, "num_heads": 3},
        weight_tags={"dinov2": "standin_dinov2"},
        description="tiny DINOv2-architecture ViT (patch 14, 96-d, depth 4, 56 px) for CPU tests and demos",
    )
)
register_backbone(
    BackboneSpec(
        name="vit_dinov2_reg_tiny_demo",
        timm_name="vit_base_patch14_reg4_dinov2",
        family="vit",
        default_img_size=56,
        timm_kwargs={"embed_dim": 96, "depth": 4, "num_heads": 3},
        weight_tags={"dinov2": "standin_dinov2"},
        description="tiny DINOv2-with-registers ViT (patch 14, 96-d, depth 4, 56 px) for CPU tests and demos",
    )
)
