"""The tiny matrix of the end-to-end tests: a 32 px tiny backbone fine-tuned on NIH for one epoch
with one seed and evaluated on NIH test, unless a test says otherwise. One place for the set-up
that every CLI-level test used to write out in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

TINY_DEFAULTS: dict[str, Any] = {
    "backbone": "vit_tiny_demo",
    "image_size": 32,
    "finetune": {"dataset": "nih", "seeds": [0], "epochs": 1, "batch_size": 16},
    "evaluate": [{"column": "NIH", "site": "nih", "split": "test"}],
}


def _value(v: Any) -> Any:
    """A section given as YAML text (`"{method: mae, epochs: 1}"`) or as Python data."""
    return yaml.safe_load(v) if isinstance(v, str) else v


def tiny_matrix(path: Path, data: Path, *, name: str = "t", experiments: Sequence[Any] = ({"id": "x"},), **defaults: Any) -> Path:
    """Write the matrix to `path`: `defaults` (backbone, pretrain, finetune, ...) replace the tiny ones key by key."""
    doc = {
        "name": name,
        "data": {"root": str(data)},
        "defaults": {**TINY_DEFAULTS, **{k: _value(v) for k, v in defaults.items()}},
        "experiments": [_value(e) for e in experiments],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_args(matrix: Path, results: Path, *extra: str) -> list[str]:
    """`bench run` arguments for a test: no MLflow, one thread, then `extra`."""
    return ["run", str(matrix), "--results", str(results), "--no-mlflow", "--threads", "1", *extra]
