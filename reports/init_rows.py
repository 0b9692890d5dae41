"""Which initialisation row of the DINOv2-initialisation study an experiment belongs to.

One rule, used where the report is built (`reports.init_study`, from the manifest's display
values) and where the matrix is validated (`bench.matrix`, so that a `reports.init_reference`
naming no row fails at `bench plan`, not after the training). Imports nothing heavy.
"""

from __future__ import annotations


def init_row(method: str | None, dataset: str | None, init: str | None, fallback: str) -> str:
    """Row label from display names: `<pre-training dataset> (<method>)` for an experiment with a
    pre-training stage (`MIMIC-CXR (supervised)`), else its initialisation (`DINOv2`,
    `ImageNet-21k`), else `fallback` (the experiment id)."""
    if method and method != "None" and dataset and dataset != "-":
        return f"{dataset} ({method.lower()})"
    return init or fallback
