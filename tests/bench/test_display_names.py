"""Display names for reports: every registered name has a readable, non-raw form."""

from __future__ import annotations

import pytest

from bench import display_names as dn


def test_paper_spellings() -> None:
    assert [dn.method_name(m) for m in ("mae", "simmim", "gmml", "dino", "mocov3", "sit", "none")] == [
        "MAE", "SimMIM", "GMML", "DINO", "MoCo v3", "SiT", "None",
    ]
    assert dn.site_name("nih") == "ChestX-ray14" and dn.site_name("chexpert") == "CheXpert"
    assert dn.backbone_name("vit_small") == "ViT-S" and dn.init_name("imagenet1k") == "ImageNet-1k"


def test_fallback_is_readable() -> None:
    assert dn.method_name("my_method") == "My method"
    assert dn.backbone_name("vit_huge") == "ViT huge"
    assert dn.init_name("file:/runs/x/encoder.pt") == "file encoder.pt"


def test_experiment_label_follows_krones_figure2() -> None:
    assert dn.experiment_label("3.4", "vit_small", "gmml", "imagenet1k", "mimic") == "3.4: ViT-S, GMML, IN-1k, MIMIC-CXR"
    assert dn.experiment_label("2.1", "vit_small", "none", "random", None) == "2.1: ViT-S, none, rand"
    assert dn.experiment_label("2.3", "vit_small", "supervised", "random", "mimic") == "2.3: ViT-S, sup, rand, MIMIC-CXR"


@pytest.mark.slow  # imports torch and timm through the registries
def test_every_registered_name_is_listed() -> None:
    """Adding a method/site/backbone to a registry without a display name is caught here."""
    import backbones
    import ssl_methods
    from bench.data import sites

    assert set(ssl_methods.list_methods()) <= set(dn.METHODS), set(ssl_methods.list_methods()) - set(dn.METHODS)
    assert set(sites.list_sites()) <= set(dn.SITES)
    assert set(backbones.list_backbones()) <= set(dn.BACKBONES)
