"""Site adapters: each reads one dataset's *official* on-disk layout into the standard index.

The standard index is a pandas DataFrame with the columns `INDEX_COLUMNS` and then one
float column per canonical label (1.0 positive, 0.0 negative, NaN unknown/not
provided). `INDEX_COLUMNS` ends with the demographics `age` and `sex`
(`DEMOGRAPHIC_COLUMNS`), NaN where a dataset does not ship them. `path` is absolute.
`split` is one of `train`, `val`, `test` (sites that
ship no split carry `train` everywhere and are split by patient elsewhere).

Adding a site is one module of this package with a `Site` subclass decorated with
`@register_site`; the registry finds it (no list to edit). Listing sites and checking a
matrix's site names and options read the modules' sources (`bench.registry.PluginRegistry`):
nothing is imported until a stage asks for a site's index (`get_site`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from bench.data.errors import DataError
from bench.registry import PluginRegistry, names_options

if TYPE_CHECKING:
    import pandas as pd

INDEX_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "patient_id",
    "split",
    "view",
    "height",
    "width",
    "site",
    "age",
    "sex",
)
# Demographics, kept for the dataset tables (Tables 10-13): `age` in years (float) and
# `sex` as "F" / "M" / "O"; NaN where a dataset does not ship them (e.g. OCT, CheXpert's test set).
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("age", "sex")

SPLITS = ("train", "val", "test")

__all__ = ["DataError", "INDEX_COLUMNS", "SPLITS", "SITES", "Site", "check_index", "get_site", "list_sites", "register_site", "site_options_model"]


class Site(ABC):
    """Base class of a site adapter.

    Subclasses set `name`, `labels` (canonical names the site can provide) and
    implement `load_index`. Options (e.g. CheXpert's uncertainty policy) arrive as
    keyword arguments from the matrix; unknown options must raise `DataError`
    listing the valid ones. `option_defaults` declares them (name -> default), so the
    matrix rejects a mistyped option at plan time; keep it a module-level literal.
    """

    name: ClassVar[str]
    labels: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    @abstractmethod
    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        """The standard index of the dataset at `root` (see the module docstring)."""


SITES: PluginRegistry[type[Site]] = PluginRegistry("site", "bench.data.sites", "register_site", base_names=("Site",))


def register_site(cls: type[Site]) -> type[Site]:
    return SITES.register(cls.name)(cls)


def get_site(name: str) -> Site:
    return SITES.get(name)()


def list_sites() -> list[str]:
    return SITES.names()


def site_options_model(name: str) -> type:
    """A model of the site's options (names and defaults, from its `option_defaults`)."""
    defaults = SITES.info(name).attr("option_defaults", {}) or {}
    return names_options(f"{name}_site_options", defaults)


def check_index(df: pd.DataFrame, site: str) -> pd.DataFrame:
    """Validate the standard-index contract; raises DataError naming what is missing."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"site {site!r}: index lacks columns {missing}; has {list(df.columns)}")
    bad = set(df["split"].unique()) - set(SPLITS)
    if bad:
        raise DataError(f"site {site!r}: unknown split values {sorted(bad)}; allowed {SPLITS}")
    # Adapters resolve duplicates where they read their label files (`generic.drop_duplicate_images`),
    # naming the file; this catches an adapter that forgot, before an image is trained on twice.
    dup = df["image_id"].duplicated()
    if dup.any():
        raise DataError(
            f"site {site!r}: {int(dup.sum())} image id(s) occur more than once in the index, "
            f"e.g. {df.loc[dup, 'image_id'].drop_duplicates().tolist()[:3]}"
        )
    return df
