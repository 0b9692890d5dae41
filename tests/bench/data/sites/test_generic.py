"""Generic folder site: the generated MONOCHROME1 DICOM tree, and hand-made PNG trees."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from bench.data.io import read_image
from bench.data.labels import HARMONISED5
from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.synthetic import generate


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("generic",), scale=0.3)["generic"]


def test_dicom_tree_with_multilabel_csv(root: Path) -> None:
    df = get_site("generic").load_index(root, labels_csv="labels.csv", image_col="file", patient_col="patient")
    assert list(df.columns) == list(INDEX_COLUMNS) + list(HARMONISED5)
    with (root / "labels.csv").open(newline="") as fh:
        truth = {r["file"]: r for r in csv.DictReader(fh)}
    assert len(df) == len(truth) == len(list(root.rglob("*.dcm")))
    for rec in df.to_dict("records"):
        rel = Path(rec["path"]).relative_to(root).as_posix()
        row = truth[rel]
        assert rec["patient_id"] == row["patient"] == rel.split("/")[1]
        for lab in HARMONISED5:
            assert (row[lab] == "" and math.isnan(rec[lab])) or float(row[lab]) == rec[lab]
        assert rec["view"] in ("PA", "AP")


def test_without_csv_patient_and_view_come_from_dicom(root: Path) -> None:
    df = get_site("generic").load_index(root)
    assert list(df.columns) == list(INDEX_COLUMNS)
    for rec in df.head(5).to_dict("records"):
        ds = pydicom.dcmread(rec["path"], stop_before_pixels=True)
        assert rec["patient_id"] == ds.PatientID and rec["view"] == ds.ViewPosition
        assert (rec["height"], rec["width"]) == (ds.Rows, ds.Columns)
    assert df["split"].eq("train").all()


def test_dicom_is_monochrome1_and_reads_air_dark(root: Path) -> None:
    path = sorted(root.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    stored = ds.pixel_array.astype(float)
    expected = 1.0 - stored / 4095.0  # MONOCHROME1: larger stored values are darker
    got = read_image(path)
    assert got.shape == stored.shape
    assert np.abs(got - expected).max() < 2e-3
    assert got[:3, :3].mean() < 0.2 < got[-5:, got.shape[1] // 2 - 3 : got.shape[1] // 2 + 3].mean()  # air dark, abdomen bright


def _png_tree(base: Path) -> None:
    for rel in ("site_a/P1/img1.png", "site_a/P1/img2.png", "site_a/P2/img1.png", "site_b/P3/x.jpg", "site_b/P3/notes.txt"):
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".txt":
            path.write_text("not an image")
        else:
            Image.fromarray(np.full((12, 10 + len(rel) % 3), 128, dtype=np.uint8)).save(path)


def test_multiclass_csv_with_split_and_patient_pattern(tmp_path: Path) -> None:
    _png_tree(tmp_path)
    (tmp_path / "labels.csv").write_text(
        "image,body_part,split\n"
        "site_a/P1/img1.png,hand,train\n"
        "./site_a/P1/img2.png,chest,train\n"
        "site_a/P2/img1.png,chest,test\n"
        "site_b/P3/x.jpg,knee,val\n"
    )
    df = get_site("generic").load_index(
        tmp_path, labels_csv="labels.csv", class_col="body_part", split_col="split", patient_pattern=r"/(P\d+)/"
    )
    assert list(df.columns[len(INDEX_COLUMNS) :]) == ["chest", "hand", "knee"]
    assert df["image_id"].tolist() == ["site_a/P1/img1", "site_a/P1/img2", "site_a/P2/img1", "site_b/P3/x"]
    assert df["patient_id"].tolist() == ["P1", "P1", "P2", "P3"]
    assert df["split"].tolist() == ["train", "train", "test", "val"]
    assert df[["chest", "hand", "knee"]].to_numpy().tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert df["view"].eq("unknown").all() and df["height"].eq(12).all()


def test_unlisted_and_missing_images(tmp_path: Path) -> None:
    _png_tree(tmp_path)
    (tmp_path / "labels.csv").write_text("image,finding\nsite_a/P1/img1.png,1\nsite_a/P9/gone.png,0\n")
    site = get_site("generic")
    with pytest.raises(DataError, match=r"1 listed image\(s\) not found .* e.g. \['site_a/P9/gone.png'\]"):
        site.load_index(tmp_path, labels_csv="labels.csv")
    dropped = site.load_index(tmp_path, labels_csv="labels.csv", missing="drop")
    assert dropped["image_id"].tolist() == ["site_a/P1/img1"] and dropped["finding"].tolist() == [1.0]
    kept = site.load_index(tmp_path, labels_csv="labels.csv", missing="drop", unlisted="keep")
    assert len(kept) == 4 and int(kept["finding"].isna().sum()) == 3
    assert kept["patient_id"].tolist()[1:] == kept["image_id"].tolist()[1:]  # no patient info -> image id


def test_errors(tmp_path: Path) -> None:
    _png_tree(tmp_path)
    site = get_site("generic")
    (tmp_path / "bad.csv").write_text("image,finding\nsite_a/P1/img1.png,-1\n")
    with pytest.raises(DataError, match=r"label column 'finding' has values \['-1'\]"):
        site.load_index(tmp_path, labels_csv="bad.csv")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['file'\]"):
        site.load_index(tmp_path, labels_csv="bad.csv", image_col="file")
    (tmp_path / "split.csv").write_text("image,split\nsite_a/P1/img1.png,holdout\n")
    with pytest.raises(DataError, match=r"split column 'split' has values \['holdout'\]"):
        site.load_index(tmp_path, labels_csv="split.csv", split_col="split", label_cols=[])
    with pytest.raises(DataError, match="needs a capturing group"):
        site.load_index(tmp_path, patient_pattern=r"P\d+")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['csv'\]"):
        site.load_index(tmp_path, csv="labels.csv")


def test_csv_duplicates_dropped_when_identical_rejected_when_conflicting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: `./a.png` and `a.png` name one image; listed twice it is dropped or rejected."""
    _png_tree(tmp_path)
    site = get_site("generic")
    (tmp_path / "labels.csv").write_text("image,finding\nsite_a/P1/img1.png,1\n./site_a/P1/img1.png,1\nsite_a/P2/img1.png,0\n")
    with caplog.at_level("WARNING"):
        df = site.load_index(tmp_path, labels_csv="labels.csv")
    assert df["image_id"].tolist() == ["site_a/P1/img1", "site_a/P2/img1"] and df["finding"].tolist() == [1.0, 0.0]
    assert "labels.csv: dropped 1 identical duplicate row(s) of 1 image id(s), e.g. ['site_a/P1/img1.png']" in caplog.text
    (tmp_path / "labels.csv").write_text("image,finding\nsite_a/P1/img1.png,1\nsite_a/P2/img1.png,0\n./site_a/P1/img1.png,\n")
    with pytest.raises(DataError, match=r"labels.csv: 1 image id\(s\) .*conflicting.*\(2 rows\).*site_a/P1/img1.png.*'finding'"):
        site.load_index(tmp_path, labels_csv="labels.csv")


def test_check_index_rejects_an_image_id_twice(tmp_path: Path) -> None:
    """The backstop for an adapter that forgot `drop_duplicate_images`."""
    from bench.data.sites import check_index

    _png_tree(tmp_path)
    df = get_site("generic").load_index(tmp_path)
    with pytest.raises(DataError, match=r"site 'generic': 1 image id\(s\) occur more than once in the index, e.g. \['site_a/P1/img1'\]"):
        check_index(pd.concat([df, df.iloc[[0]]], ignore_index=True), "generic")
