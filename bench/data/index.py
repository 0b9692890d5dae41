"""A site's standard index, loaded once per process.

Stages, the leakage audit and `bench data` all start from `load_index`: the site
adapter's index (`bench.data.sites`) restricted to some splits, with an error that says
what to set when the data root is missing or the splits hold no image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from bench.data.errors import DataError
from bench.data.sites import get_site

_INDEX_MEMO: dict[tuple[str, str, str], pd.DataFrame] = {}


def options_key(options: dict[str, Any]) -> str:
    """A canonical text of site options (key order and value types do not matter): memo and cache keys."""
    return json.dumps(options, sort_keys=True, default=str)


def load_index(site: str, root: str | Path, options: dict[str, Any], splits: Sequence[str] | None) -> pd.DataFrame:
    """The site's standard index restricted to `splits`, with a clear error if that leaves nothing.

    Indexes are memoised per process by (site, root, options): a chained fine-tune and its
    evaluations, or the leakage audit, read a site's CSVs and image headers once.
    """
    if not Path(root).exists():
        raise DataError(
            f"data root for site {site!r} does not exist: {root} "
            f"(set data.root / data.sites.{site} in the matrix, or BENCH_DATA_ROOT)"
        )
    memo_key = (site, str(Path(root).resolve()), options_key(options))
    if memo_key not in _INDEX_MEMO:
        _INDEX_MEMO[memo_key] = get_site(site).load_index(Path(root), **options)
    index = _INDEX_MEMO[memo_key]
    if splits is not None:
        index = index[index["split"].isin(list(splits))]
    if index.empty:
        raise DataError(f"site {site!r} at {root}: no images in split(s) {list(splits or [])}")
    return index.reset_index(drop=True)
