"""Display names of registry names (methods, sites, backbones, initialisations) for reports.

The report package (`reports/`) is torch-free and never imports the registries, so
`bench.runner.build_manifest` puts these names into the manifest. This module is a
plain lookup (no registry import, no torch): a registry name that is not listed
still gets a readable form (`my_site` -> `My site`), so adding a method, site or
backbone never breaks a report; add it here to choose its printed name.

Names follow the papers: methods as their authors write them (SimMIM, MoCo v3),
datasets by their published names (NIH's is ChestX-ray14), backbones in the short
form of Krones' tables (ViT-S, ResNet50). `*_short` forms are for figure legends,
which the Krones paper keeps terse ("rand", "IN", "sup").
"""

from __future__ import annotations

import re

METHODS: dict[str, str] = {
    "none": "None",
    "supervised": "Supervised",
    "mae": "MAE",
    "simmim": "SimMIM",
    "gmml": "GMML",
    "dino": "DINO",
    "mocov3": "MoCo v3",
    "sit": "SiT",
}
METHODS_SHORT: dict[str, str] = {"none": "none", "supervised": "sup"}

SITES: dict[str, str] = {
    "nih": "ChestX-ray14",
    "chexpert": "CheXpert",
    "mimic": "MIMIC-CXR",
    "padchest": "PadChest",
    "vindr": "VinDr-CXR",
    "oct": "OCT",
    "covidx": "COVIDx CT",
    "imagenet": "ImageNet",
    "irma": "IRMA",
    "generic": "Generic",
}

BACKBONES: dict[str, str] = {
    "vit_tiny_demo": "ViT-tiny (demo)",
    "resnet_tiny_demo": "ResNet-tiny (demo)",
    "swin_tiny_demo": "Swin-tiny (demo)",
    "vit_small": "ViT-S",
    "vit_base": "ViT-B",
    "resnet50": "ResNet50",
    "swin_base": "Swin-B",
    "vit_base_dinov2": "ViT-B/14",
    "vit_base_dinov2_reg": "ViT-B/14 (reg4)",
    "vit_dinov2_tiny_demo": "ViT-tiny/14 (demo)",
    "vit_dinov2_reg_tiny_demo": "ViT-tiny/14 reg4 (demo)",
}

INITS: dict[str, str] = {"random": "Random", "imagenet1k": "ImageNet-1k", "imagenet21k": "ImageNet-21k", "dinov2": "DINOv2"}
INITS_SHORT: dict[str, str] = {"random": "rand", "imagenet1k": "IN-1k", "imagenet21k": "IN-21k", "dinov2": "DINOv2"}

# Words kept as written when a name is not listed (`vit_huge` -> `ViT huge`).
_WORDS = {"vit": "ViT", "resnet": "ResNet", "swin": "Swin", "cxr": "CXR", "ct": "CT", "oct": "OCT", "nih": "NIH"}


def readable(name: str) -> str:
    """Fallback for names not listed: underscores to spaces, known acronyms kept, first letter up."""
    words = [w for w in re.split(r"[_\s]+", str(name)) if w]
    if not words:
        return str(name)
    out = [_WORDS.get(w.lower(), w) for w in words]
    first = out[0]
    if first == words[0] and first[:1].islower():
        out[0] = first[:1].upper() + first[1:]
    return " ".join(out)


def method_name(name: str | None) -> str:
    return "None" if not name else METHODS.get(name, readable(name))


def site_name(name: str | None) -> str:
    return "-" if not name else SITES.get(name, readable(name))


def backbone_name(name: str) -> str:
    return BACKBONES.get(name, readable(name))


def init_name(name: str) -> str:
    """`random` -> `Random`; `file:/x/y/enc.pt` -> `file enc.pt` (the path's last part)."""
    if name.startswith("file:"):
        return "file " + name[5:].rstrip("/").rsplit("/", 1)[-1]
    return INITS.get(name, readable(name))


def init_short(name: str) -> str:
    if name.startswith("file:"):
        return init_name(name)
    return INITS_SHORT.get(name, init_name(name))


def method_short(name: str | None) -> str:
    return METHODS_SHORT.get(name or "none", method_name(name))


def experiment_label(exp_id: str, backbone: str, method: str | None, init: str, dataset: str | None) -> str:
    """Figure legend of an experiment, as in Krones Figure 2: number, backbone, strategy, init, dataset.

    `3.4: ViT-S, GMML, IN-1k, MIMIC-CXR`; without pre-training the dataset is left out
    (`2.1: ViT-S, none, rand`).
    """
    parts = [backbone_name(backbone), method_short(method), init_short(init)]
    if method not in (None, "none") and dataset:
        parts.append(site_name(dataset))
    return f"{exp_id}: " + ", ".join(parts)
