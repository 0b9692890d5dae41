"""A site is one file plus its test: a site adapter defined here is listed, validated in a
matrix (name and options), indexed, batched and audited with nothing else to edit."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.io import image_size
from bench.data.sites import INDEX_COLUMNS, SITES, Site, check_index, list_sites, register_site
from bench.matrix import MatrixError, load_matrix


@pytest.fixture
def folder_site() -> Iterator[str]:
    @register_site
    class FolderSite(Site):
        """PNGs in one folder; `<id>_<0|1>.png`, the digit is Cardiomegaly; every `test_every`-th image is test."""

        name = "folder_test"
        labels = ("Cardiomegaly",)
        option_defaults = {"test_every": 4}

        def load_index(self, root: Path, test_every: int = 4, **unknown: Any) -> pd.DataFrame:
            if unknown:
                raise TypeError(f"unknown options {sorted(unknown)}")
            rows = []
            for i, f in enumerate(sorted(Path(root).glob("*.png"))):
                h, w = image_size(f)
                stem, label = f.stem.rsplit("_", 1)
                rows.append({"image_id": stem, "path": str(f), "patient_id": stem, "split": "test" if i % test_every == 0 else "train",
                             "view": "PA", "height": h, "width": w, "site": self.name, "Cardiomegaly": float(label)})
            # columns of the standard index this folder has nothing for (e.g. demographics) stay empty
            return check_index(pd.DataFrame(rows).reindex(columns=[*INDEX_COLUMNS, "Cardiomegaly"]), self.name)

    yield "folder_test"
    SITES._entries.pop("folder_test", None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "folder"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(d / f"img{i:02d}_{i % 2}.png")
    return d


def _matrix(tmp_path: Path, root: Path, options: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(f"""
        name: plugin
        data: {{sites: {{folder_test: {root}}}}}
        defaults:
          backbone: resnet_tiny_demo
          image_size: 16
          finetune: {{dataset: folder_test, classes: site, seeds: [0], site_options: {options}}}
          evaluate: [{{column: Folder, site: folder_test, split: test, classes: site, site_options: {options}}}]
        experiments: [{{id: a}}]
    """))
    return p


def test_a_site_defined_in_a_test_is_listed_validated_indexed_batched_and_audited(folder_site: str, root: Path, tmp_path: Path) -> None:
    from bench.audit import audit_plan
    from bench.data.batches import ImageBatches
    from bench.data.index import load_index
    from bench.plan import build_plan

    assert folder_site in list_sites()
    assert dict(SITES.describe())[folder_site].startswith("PNGs in one folder")
    with pytest.raises(MatrixError, match=r"site_options\.test_evry: .*allowed keys here: test_every"):
        load_matrix(_matrix(tmp_path, root, "{test_evry: 3}"))
    plan = build_plan(load_matrix(_matrix(tmp_path, root, "{test_every: 3}")))

    test = load_index(folder_site, root, {"test_every": 3}, ["test"])
    assert len(test) == 4
    batches = ImageBatches(test, image_size=16, in_chans=1, classes=["Cardiomegaly"], batch_size=4, seed=0, shuffle=False)
    ((_, rows, x, y),) = list(batches.epoch_batches(0))
    assert x.shape == (4, 1, 16, 16) and y[:, 0].tolist() == test["Cardiomegaly"].tolist()

    audit = audit_plan(plan)  # the site has no val split: fine-tuning carves one from train, disjoint from test
    fe = audit[audit["pair"] == "finetune-evaluate"].iloc[0]
    assert fe["b_images"] == 4 and fe["a_images"] == 8 and fe["shared_patients"] == 0
