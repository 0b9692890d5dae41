"""MIMIC-CXR-JPG adapter on the generated PhysioNet layout."""

from __future__ import annotations

import csv
import gzip
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.chexpert import CHEXPERT_LABELS
from bench.data.synthetic import generate
from bench.data.synthetic.files import write_gzip_text


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("mimic",), scale=0.15)["mimic"]


def read_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def ignore_policy(raw: str) -> float:
    """U-Ignore by hand: '' (blank) and '-1.0' are unknown."""
    return math.nan if raw in ("", "-1.0") else float(raw)


def test_index_joins_study_labels_to_images(root: Path) -> None:
    df = get_site("mimic").load_index(root)
    meta = read_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    labels = {(r["subject_id"], r["study_id"]): r for r in read_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    split = {r["dicom_id"]: r["split"] for r in read_gz(root / "mimic-cxr-2.0.0-split.csv.gz")}
    assert list(df.columns) == list(INDEX_COLUMNS) + list(CHEXPERT_LABELS)
    assert len(df) == len(meta)
    by_id = df.set_index("image_id")
    for m in meta:
        row = by_id.loc[m["dicom_id"]]
        assert row["patient_id"] == m["subject_id"]
        assert row["view"] == m["ViewPosition"]
        assert row["split"] == {"train": "train", "validate": "val", "test": "test"}[split[m["dicom_id"]]]
        assert re.search(rf"/files/p{m['subject_id'][:2]}/p{m['subject_id']}/s{m['study_id']}/{m['dicom_id']}\.jpg$", row["path"])
        lab = labels[(m["subject_id"], m["study_id"])]
        for name in CHEXPERT_LABELS:
            want = ignore_policy(lab[name])
            assert (math.isnan(want) and math.isnan(row[name])) or want == row[name]
    first = df.iloc[0]
    with Image.open(first["path"]) as im:
        assert (first["height"], first["width"]) == (im.size[1], im.size[0])


def test_split_is_patient_disjoint_and_filters(root: Path) -> None:
    df = get_site("mimic").load_index(root)
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(df["split"]) == {"train", "val", "test"}
    frontal = get_site("mimic").load_index(root, views=["PA", "AP"], splits=["train"])
    assert len(frontal) == int((df["view"].isin(["PA", "AP"]) & (df["split"] == "train")).sum())
    negbio = get_site("mimic").load_index(root, labeler="negbio", uncertainty="ones")
    chexpert = get_site("mimic").load_index(root, uncertainty="ones")
    assert not negbio[list(CHEXPERT_LABELS)].equals(chexpert[list(CHEXPERT_LABELS)])


def test_study_without_labels_gets_nan(root: Path, tmp_path: Path) -> None:
    site = tmp_path / "mimic"
    shutil.copytree(root, site)
    path = site / "mimic-cxr-2.0.0-chexpert.csv.gz"
    table = pd.read_csv(path)
    dropped = table.iloc[0]
    write_gzip_text(table.iloc[1:].to_csv(index=False), path)
    df = get_site("mimic").load_index(site)
    meta = pd.read_csv(site / "mimic-cxr-2.0.0-metadata.csv.gz", dtype={"dicom_id": str})
    ids = set(meta.loc[meta["study_id"] == dropped["study_id"], "dicom_id"])
    assert ids and df.loc[df["image_id"].isin(ids), list(CHEXPERT_LABELS)].isna().all().all()


def test_errors(root: Path, tmp_path: Path) -> None:
    site = get_site("mimic")
    with pytest.raises(DataError, match=r"labeler='openai' is not one of \('chexpert', 'negbio'\)"):
        site.load_index(root, labeler="openai")
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match=r"mimic-cxr-2.0.0-metadata.csv\[.gz\] not found"):
        site.load_index(broken)
    shutil.copy(root / "mimic-cxr-2.0.0-metadata.csv.gz", broken / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.read_csv(broken / "mimic-cxr-2.0.0-split.csv.gz")
    split.loc[0, "split"] = "holdout"
    split.to_csv(broken / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(DataError, match=r"unknown split values \['holdout'\]"):
        site.load_index(broken)


@pytest.mark.parametrize(
    "kind, key, column, value",
    [
        ("metadata", ["dicom_id"], "ViewPosition", "LL"),
        ("split", ["dicom_id"], "split", "test"),
        ("chexpert", ["subject_id", "study_id"], "Edema", 1.0),
    ],
)
def test_duplicate_rows_dropped_when_identical_rejected_when_conflicting(
    root: Path, tmp_path: Path, kind: str, key: list[str], column: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6, for each of the three tables an image's row comes from."""
    site = tmp_path / "mimic"
    shutil.copytree(root, site)
    path = site / f"mimic-cxr-2.0.0-{kind}.csv.gz"
    table = pd.read_csv(path, dtype={"dicom_id": str})
    expected = get_site("mimic").load_index(root)
    write_gzip_text(pd.concat([table, table.iloc[[0]]]).to_csv(index=False), path)
    with caplog.at_level("WARNING"):
        pd.testing.assert_frame_equal(get_site("mimic").load_index(site).drop(columns="path"), expected.drop(columns="path"))
    assert f"{path.name}: dropped 1 identical duplicate row(s) of 1 image id(s)" in caplog.text
    other = table.iloc[[0]].copy()
    other[column] = value if other[column].iloc[0] != value else "AP"
    write_gzip_text(pd.concat([table, other]).to_csv(index=False), path)
    with pytest.raises(DataError, match=rf"{re.escape(path.name)}: 1 image id\(s\) listed more than once.*'{column}'"):
        get_site("mimic").load_index(site)


def test_missing_or_zero_sizes_in_the_metadata_become_unreadable(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12/14.7: size 0 (or blank) would reach the DBB sampler; it is -1 like an unreadable header."""
    site = tmp_path / "mimic"
    shutil.copytree(root, site)
    path = site / "mimic-cxr-2.0.0-metadata.csv.gz"
    meta = pd.read_csv(path, dtype={"dicom_id": str})
    meta.loc[0, "Rows"] = 0
    meta.loc[1, "Columns"] = None
    write_gzip_text(meta.to_csv(index=False), path)
    with caplog.at_level("WARNING"):
        df = get_site("mimic").load_index(site).set_index("image_id")
    assert df.loc[meta.loc[0, "dicom_id"], "height"] == -1 and df.loc[meta.loc[1, "dicom_id"], "width"] == -1
    assert (df.drop(index=meta.loc[:1, "dicom_id"])[["height", "width"]] > 0).all().all()
    assert "1 image(s) with a missing or non-positive Rows" in caplog.text
