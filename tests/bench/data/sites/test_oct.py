"""OCT adapter on the generated OCT2017 layout (and the Kaggle 'OCT2017 ' variant)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.synthetic import generate

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("oct",), scale=0.3)["oct"]


def test_index_matches_the_files(root: Path) -> None:
    df = get_site("oct").load_index(root)
    files = sorted((root / "OCT2017").rglob("*.jpeg"))
    assert len(df) == len(files)
    assert list(df.columns) == list(INDEX_COLUMNS) + CLASSES
    for rec in df.itertuples(index=False):
        path = Path(rec.path)
        split, cls = path.parent.parent.name, path.parent.name
        m = re.fullmatch(r"([A-Z]+)-(\d+)-(\d+)\.jpeg", path.name)
        assert m and m.group(1) == cls
        assert rec.split == split and rec.patient_id == m.group(2)
        assert [getattr(rec, c) for c in CLASSES] == [float(c == cls) for c in CLASSES]
    with Image.open(files[0]) as im:
        w, h = im.size
    first = df[df["path"] == str(files[0])].iloc[0]
    assert (first["height"], first["width"]) == (h, w)


def test_train_and_test_patients_are_disjoint_and_test_balanced(root: Path) -> None:
    df = get_site("oct").load_index(root)
    train = set(df.loc[df["split"] == "train", "patient_id"])
    test = set(df.loc[df["split"] == "test", "patient_id"])
    assert train and test and not train & test
    counts = df[df["split"] == "test"][CLASSES].sum()
    assert counts.nunique() == 1
    assert df.loc[df["split"] == "train", "CNV"].sum() > df.loc[df["split"] == "train", "DRUSEN"].sum()


def test_classes_are_learnable(root: Path) -> None:
    """A nearest-centroid classifier on 24x48 thumbnails beats chance (0.25) clearly."""
    df = get_site("oct").load_index(root)

    def feats(paths) -> np.ndarray:
        out = []
        for p in paths:
            with Image.open(p) as im:
                x = np.asarray(im.convert("L").resize((48, 24)), dtype=float) / 255.0
            out.append(np.sort(x, axis=0).ravel())  # column-sorted: robust to retina position
        return np.array(out)

    train, test = df[df["split"] == "train"], df[df["split"] == "test"]
    xtr, xte = feats(train["path"]), feats(test["path"])
    ytr, yte = train[CLASSES].to_numpy().argmax(1), test[CLASSES].to_numpy().argmax(1)
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(4)])
    pred = ((xte[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yte).mean() > 0.5


def test_kaggle_trailing_space_folder_with_val_and_release_root(root: Path, tmp_path: Path) -> None:
    kag = tmp_path / "kermany2018"
    shutil.copytree(root / "OCT2017", kag / "OCT2017 ")
    val = kag / "OCT2017 " / "val" / "NORMAL"
    val.mkdir(parents=True)
    src = sorted((kag / "OCT2017 " / "test" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(src, val / "NORMAL-9999999-1.jpeg")
    df = get_site("oct").load_index(kag)
    assert set(df["split"]) == {"train", "val", "test"}
    assert df.loc[df["split"] == "val", "patient_id"].tolist() == ["9999999"]
    only_test = get_site("oct").load_index(kag / "OCT2017 ", splits=["test"])
    assert set(only_test["split"]) == {"test"}


def test_errors(root: Path, tmp_path: Path) -> None:
    site = get_site("oct")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['classes'\]"):
        site.load_index(root, classes=["CNV"])
    with pytest.raises(DataError, match="neither train/ nor test/"):
        site.load_index(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    cnv = sorted((bad / "OCT2017" / "train" / "CNV").glob("*.jpeg"))[0]
    shutil.move(cnv, bad / "OCT2017" / "train" / "DME" / cnv.name)
    with pytest.raises(DataError, match="is named CNV but lies in folder DME"):
        site.load_index(bad)
    (bad / "OCT2017" / "train" / "DME" / cnv.name).rename(bad / "OCT2017" / "train" / "DME" / "scan.jpeg")
    with pytest.raises(DataError, match=r"scan.jpeg is not <CLASS>-<patient>-<n>.jpeg"):
        site.load_index(bad)
    with pytest.raises(DataError, match="requested split folder .* is missing"):
        site.load_index(root, splits=["val"])


def test_two_files_for_one_image_id_are_rejected(root: Path, tmp_path: Path) -> None:
    """Issue 14.6: `CNV-1-1.jpeg` next to `CNV-1-1.jpg` would be one image id twice."""
    dup = tmp_path / "dup"
    shutil.copytree(root, dup)
    scan = sorted((dup / "OCT2017" / "train" / "CNV").glob("*.jpeg"))[0]
    shutil.copy(scan, scan.with_suffix(".jpg"))
    with pytest.raises(DataError, match=rf"1 image id\(s\) listed more than once.*'train/{scan.stem}'.*'path'"):
        get_site("oct").load_index(dup)
