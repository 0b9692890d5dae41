"""ImageNet class-folder adapter on the generated layout (and the Kaggle flat-val variant)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.synthetic import generate
from bench.data.synthetic.imagenet import WNIDS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("imagenet",), scale=0.4)["imagenet"]


def test_index_lists_every_image_with_optional_labels(root: Path) -> None:
    plain = get_site("imagenet").load_index(root)
    assert list(plain.columns) == list(INDEX_COLUMNS)
    files = sorted(root.rglob("*.JPEG"))
    assert len(plain) == len(files)
    assert plain["patient_id"].equals(plain["image_id"])
    assert set(plain["split"]) == {"train", "val"}
    labelled = get_site("imagenet").load_index(root, labels=True)
    assert list(labelled.columns) == list(INDEX_COLUMNS) + sorted(WNIDS)
    assert (labelled[list(WNIDS)].sum(axis=1) == 1.0).all()
    for rec in labelled.head(20).itertuples(index=False):
        wnid = Path(rec.path).parent.name
        assert getattr(rec, wnid) == 1.0


def test_oddities_have_correct_sizes_and_content(root: Path) -> None:
    df = get_site("imagenet").load_index(root).set_index("path")
    odd = {
        root / "train" / WNIDS[0] / f"{WNIDS[0]}_1.JPEG": "PNG",
        root / "train" / WNIDS[1] / f"{WNIDS[1]}_1.JPEG": "CMYK",
        root / "train" / WNIDS[2] / f"{WNIDS[2]}_1.JPEG": "L",
    }
    for path, kind in odd.items():
        with Image.open(path) as im:
            assert (im.format if kind == "PNG" else im.mode) == kind
            assert (df.loc[str(path), "height"], df.loc[str(path), "width"]) == (im.size[1], im.size[0])


def test_classes_are_learnable_from_colour(root: Path) -> None:
    df = get_site("imagenet").load_index(root, labels=True)

    def feat(p: str) -> np.ndarray:
        """Hue histogram of the saturated (foreground-like) pixels."""
        with Image.open(p) as im:
            hsv = np.asarray(im.convert("RGB").convert("HSV").resize((32, 32)), dtype=float) / 255.0
        vivid = hsv[..., 1] > 0.5
        return np.histogram(hsv[..., 0][vivid], 20, (0, 1))[0] / max(int(vivid.sum()), 1)

    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    xtr, xva = np.array([feat(p) for p in train["path"]]), np.array([feat(p) for p in val["path"]])
    ytr, yva = train[list(WNIDS)].to_numpy().argmax(1), val[list(WNIDS)].to_numpy().argmax(1)
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(len(WNIDS))])
    pred = ((xva[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yva).mean() > 0.3  # chance is 0.1


def test_kaggle_layout_with_flat_val(root: Path, tmp_path: Path) -> None:
    base = tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(root / "train", base / "train")
    (base / "val").mkdir()
    lines = ["ImageId,PredictionString"]
    for f in sorted((root / "val").rglob("*.JPEG")):
        shutil.copy(f, base / "val" / f.name)
        lines.append(f"{f.stem},{f.parent.name} 1 2 30 40")
    (tmp_path / "kaggle" / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    kaggle = get_site("imagenet").load_index(tmp_path / "kaggle", labels=True)
    ref = get_site("imagenet").load_index(root, labels=True)
    assert kaggle.drop(columns="path").sort_values("image_id").reset_index(drop=True).equals(
        ref.drop(columns="path").sort_values("image_id").reset_index(drop=True)
    )
    only = get_site("imagenet").load_index(tmp_path / "kaggle", splits=["val"], classes=[WNIDS[3]])
    assert len(only) == len(list((root / "val" / WNIDS[3]).glob("*.JPEG")))


def test_errors(root: Path, tmp_path: Path) -> None:
    site = get_site("imagenet")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['label'\]"):
        site.load_index(root, label=True)
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / "train" / "cats").mkdir()
    with pytest.raises(DataError, match=r"must be wnids like n01440764, got \['cats'\]"):
        site.load_index(bad)
    with pytest.raises(DataError, match="requested split folder"):
        site.load_index(root / "train" / WNIDS[0], splits=["train"])


def test_duplicate_images_and_solution_rows(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14.6: one file stem in two class folders; one val image twice in LOC_val_solution.csv."""
    dup = tmp_path / "dup"
    shutil.copytree(root, dup)
    scan = sorted((dup / "train" / WNIDS[0]).glob("*.JPEG"))[0]
    shutil.copy(scan, dup / "train" / WNIDS[1] / scan.name)
    with pytest.raises(DataError, match=rf"1 image id\(s\) listed more than once.*'train/{scan.stem}'.*'wnid'"):
        get_site("imagenet").load_index(dup, splits=["train"])

    flat = tmp_path / "flat"
    shutil.copytree(root / "train", flat / "train")
    (flat / "val").mkdir()
    val = sorted((root / "val").rglob("*.JPEG"))
    for f in val:
        shutil.copy(f, flat / "val" / f.name)
    lines = ["ImageId,PredictionString"] + [f"{f.stem},{f.parent.name} 1 2 30 40" for f in val]
    (flat / "LOC_val_solution.csv").write_text("\n".join([*lines, f"{val[0].stem},{val[0].parent.name} 5 6 7 8"]) + "\n")
    with caplog.at_level("WARNING"):
        got = get_site("imagenet").load_index(flat, splits=["val"], labels=True)
    assert len(got) == len(val) and "LOC_val_solution.csv: dropped 1 identical duplicate row(s)" in caplog.text
    other = WNIDS[1] if val[0].parent.name != WNIDS[1] else WNIDS[0]
    (flat / "LOC_val_solution.csv").write_text("\n".join([*lines, f"{val[0].stem},{other} 1 2 3 4"]) + "\n")
    with pytest.raises(DataError, match=rf"LOC_val_solution.csv: 1 image id\(s\).*conflicting.*'{val[0].stem}'.*'wnid'"):
        get_site("imagenet").load_index(flat, splits=["val"])
