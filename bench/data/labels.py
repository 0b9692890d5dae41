"""Canonical label names and label sets shared by every site.

Canonical names are CheXpert-style, with spaces: NIH's `Effusion` is
`Pleural Effusion` and `Pleural_Thickening` is `Pleural Thickening`. Site adapters
map their own tokens onto these names; everything downstream (training targets,
prediction columns, reports) uses only canonical names.
"""

from __future__ import annotations

NIH14: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)

# The five findings the Krones paper evaluates across sites (CheXpert competition set).
HARMONISED5: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

LABEL_SETS: dict[str, tuple[str, ...]] = {"nih14": NIH14, "harmonised5": HARMONISED5}


def label_set(name: str) -> tuple[str, ...]:
    """Resolve a label-set name (`nih14`, `harmonised5`) to its ordered class names."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


SITE_CLASSES = "site"  # "the site's own label columns", e.g. IRMA body regions or OCT classes


def resolve_classes(name: str | list[str], site: str) -> tuple[str, ...]:
    """Class names of a label-set name, an explicit list of label columns, or `site`'s own labels."""
    if isinstance(name, (list, tuple)):
        return tuple(str(c) for c in name)
    if name == SITE_CLASSES:
        from bench.data.sites import get_site

        labels = tuple(get_site(site).labels)
        if not labels:
            raise KeyError(f"site {site!r} declares no labels; name a label set ({', '.join(LABEL_SETS)})")
        return labels
    return label_set(name)
