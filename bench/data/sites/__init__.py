"""Site adapters: each reads one dataset's *official* on-disk layout into the standard index.

The standard index is a pandas DataFrame with the columns `INDEX_COLUMNS` and then one
float column per canonical label (1.0 positive, 0.0 negative, NaN unknown/not
provided). `path` is absolute. `split` is one of `train`, `val`, `test` (sites that
ship no split carry `train` everywhere and are split by patient elsewhere).

Adding a site is one module with a `Site` subclass decorated with `@register_site`;
it is imported in `_load_builtin()` below.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from bench.registry import Registry

INDEX_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "patient_id",
    "split",
    "view",
    "height",
    "width",
    "site",
)

SPLITS = ("train", "val", "test")


class DataError(Exception):
    """Bad or missing input data. The message names the file and what is wrong."""


class Site(ABC):
    """Base class of a site adapter.

    Subclasses set `name`, `labels` (canonical names the site can provide) and
    implement `load_index`. Options (e.g. CheXpert's uncertainty policy) arrive as
    keyword arguments from the matrix; unknown options must raise `DataError`
    listing the valid ones.
    """

    name: ClassVar[str]
    labels: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    @abstractmethod
    def load_index(self, root: Path, **options: Any) -> pd.DataFrame:
        """The standard index of the dataset at `root` (see the module docstring)."""


SITES: Registry[type[Site]] = Registry("site")


def register_site(cls: type[Site]) -> type[Site]:
    return SITES.register(cls.name)(cls)


_BUILTIN = ("nih", "chexpert", "oct", "padchest", "vindr", "mimic", "covidx", "imagenet", "irma", "generic")


def _load_builtin() -> None:
    for mod in _BUILTIN:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # only tolerate the module itself being absent
            if exc.name != f"{__name__}.{mod}":
                raise


def get_site(name: str) -> Site:
    _load_builtin()
    return SITES.get(name)()


def list_sites() -> list[str]:
    _load_builtin()
    return SITES.names()


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
