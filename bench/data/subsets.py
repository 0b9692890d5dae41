"""Which images a stage uses: the pre-training subset and the fine-tuning train/val sets.

Stages and the leakage audit (`bench.audit`) call these same functions, so the audit
intersects exactly the image sets the stages train and evaluate on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.data.index import load_index

# The pre-training subset is drawn with this seed whatever the experiment's seeds: every
# fine-tuning seed starts from the same encoder, so seeds measure fine-tuning variance.
PRETRAIN_SUBSET_SEED = 0


def seeded_subset(index: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A random `n`-image subset in index order (all of it when `n` is None or not smaller)."""
    if n is None or n >= len(index):
        return index
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(index), size=n, replace=False))
    return index.iloc[keep].reset_index(drop=True)


def pretrain_subset(index: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """The images a pre-training stage with `pretrain.subset: n` uses (the Krones paper pre-trains on
    a random 100,000 per dataset)."""
    return seeded_subset(index, n, PRETRAIN_SUBSET_SEED)


def finetune_sets(site: str, root: str | Path, f: dict[str, Any], classes: Sequence[str], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) images of a fine-tuning stage (`f`: the matrix's `finetune` section).

    The site's own `val` split when it has one; otherwise (e.g. Kermany OCT) a seeded,
    patient-level, label-stratified `val_fraction` of its train split, the same for every
    seed so that seeds differ only in initialisation and order. The few-label regime
    then draws whole patients from the train part.
    """
    from bench.data.splits import assign_splits, few_label_subset

    index = load_index(site, root, f["site_options"], ["train", "val"])
    if (index["split"] == "val").any():
        train, val = index[index["split"] == "train"], index[index["split"] == "val"]
    else:
        strat = [c for c in classes if c in index.columns and index[c].notna().all()]
        which = assign_splits(index, {"train": 1 - f["val_fraction"], "val": f["val_fraction"]}, seed=0, stratify=strat)
        train, val = index[which == "train"], index[which == "val"]
    train = train.reset_index(drop=True)
    if f["label_subset"] is not None:
        strat = [c for c in classes if c in train.columns and train[c].notna().all()]
        train = few_label_subset(train, f["label_subset"], seed=seed, stratify=strat).reset_index(drop=True)
    return train, val.reset_index(drop=True)
