"""IRMA adapter on the generated ImageCLEFmed2009 layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.irma import BODY_REGIONS, view_of
from bench.data.synthetic import generate

TRAIN_CSV = "ImageCLEFmed2009_train_codes.02.csv"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("irma",), scale=0.3)["irma"]


def codes(root: Path, name: str = TRAIN_CSV) -> dict[str, list[str]]:
    lines = (root / name).read_text().splitlines()
    assert lines[0] == "image_id;irma_code;05_class;06_class;07_class;08_class"
    return {ln.split(";")[0]: ln.split(";") for ln in lines[1:]}


def test_body_region_labels_follow_the_anatomical_code(root: Path) -> None:
    df = get_site("irma").load_index(root)
    assert list(df.columns) == list(INDEX_COLUMNS) + list(BODY_REGIONS.values())
    table = {**codes(root), **codes(root, "ImageCLEFmed2009_test_codes.03.csv")}
    assert len(df) == len(table)
    by_id = df.set_index("image_id")
    for image_id, fields in table.items():
        region = BODY_REGIONS[fields[1].split("-")[2][0]]
        row = by_id.loc[image_id]
        assert row[region] == 1.0 and row[list(BODY_REGIONS.values())].sum() == 1.0
        assert row["patient_id"] == image_id
        assert row["view"] == view_of(fields[1].split("-")[1])
    assert df["height"].nunique() > 10 and df["width"].nunique() > 10  # variable sizes
    assert set(df["split"]) == {"train", "test"}


def test_view_mapping() -> None:
    assert [view_of(d) for d in ("110", "120", "210", "200", "300", "000")] == ["PA", "AP", "L", "L", "other", "other"]


def test_code_and_class_targets(root: Path) -> None:
    by_code = get_site("irma").load_index(root, label="irma_code", splits=["train"])
    distinct = sorted({f[1] for f in codes(root).values()})
    assert list(by_code.columns[len(INDEX_COLUMNS) :]) == distinct
    by05 = get_site("irma").load_index(root, label="05_class", splits=["train"])
    label_cols = list(by05.columns[len(INDEX_COLUMNS) :])
    assert all(c.startswith("class_") for c in label_cols)
    table = codes(root)
    null = [i for i, f in table.items() if f[2] == "\\N"]
    assert null
    rows = by05.set_index("image_id")
    assert rows.loc[null, label_cols].isna().all().all()
    labelled = rows.drop(index=null)
    assert (labelled[label_cols].sum(axis=1) == 1.0).all()


def test_single_folder_layout(root: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(root / TRAIN_CSV, flat / TRAIN_CSV)
    shutil.copytree(root / "ImageCLEFmed2009_train.02" / "ImageCLEFmed2009_train.02", flat / "ImageCLEFmed2009_train.02")
    df = get_site("irma").load_index(flat)
    ref = get_site("irma").load_index(root, splits=["train"])
    assert np.array_equal(df[list(BODY_REGIONS.values())].to_numpy(), ref[list(BODY_REGIONS.values())].to_numpy())
    with pytest.raises(DataError, match="ImageCLEFmed2009_test_codes.03.csv is missing"):
        get_site("irma").load_index(flat, splits=["test"])


def test_errors(root: Path, tmp_path: Path) -> None:
    site = get_site("irma")
    with pytest.raises(DataError, match=r"label='region' is not one of"):
        site.load_index(root, label="region")
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    text = (bad / TRAIN_CSV).read_text().splitlines()
    first = text[1].split(";")
    text[1] = ";".join([first[0], "1121-12-500-700"] + first[2:])
    (bad / TRAIN_CSV).write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"malformed irma_code value\(s\), e.g. \['1121-12-500-700'\]"):
        site.load_index(bad)
    (bad / TRAIN_CSV).write_text("image_id;irma_code\n" + "\n".join(ln.split(";", 2)[0] + ";" + ln.split(";")[1] for ln in (root / TRAIN_CSV).read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DataError, match=r"has no column '07_class'"):
        site.load_index(bad, label="07_class", splits=["train"])


def test_duplicate_ids_dropped_when_identical_rejected_when_conflicting(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: an image id twice in the codes CSV, or in both the train and the test CSV."""
    site = get_site("irma")
    expected = site.load_index(root)
    dup = tmp_path / "dup"
    shutil.copytree(root, dup)
    lines = (dup / TRAIN_CSV).read_text().splitlines()
    (dup / TRAIN_CSV).write_text("\n".join([*lines, lines[1]]) + "\n")
    with caplog.at_level("WARNING"):
        assert site.load_index(dup).drop(columns="path").equals(expected.drop(columns="path"))
    assert f"{TRAIN_CSV}: dropped 1 identical duplicate row(s) of 1 image id(s)" in caplog.text
    test_csv = "ImageCLEFmed2009_test_codes.03.csv"
    first = lines[1].split(";")
    other = first[1][:9] + ("7" if first[1][9] != "7" else "5") + first[1][10:]  # another body region
    (dup / TRAIN_CSV).write_text("\n".join([*lines, ";".join([first[0], other, *first[2:]])]) + "\n")
    with pytest.raises(DataError, match=rf"1 image id\(s\) listed more than once.*'{first[0]}'.*'irma_code'"):
        site.load_index(dup)
    (dup / TRAIN_CSV).write_text("\n".join(lines) + "\n")
    with (dup / test_csv).open("a") as fh:
        fh.write(lines[1] + "\n")  # the same row, but as a test image too
    with pytest.raises(DataError, match=rf"{test_csv}.*{TRAIN_CSV}.*'{first[0]}'.*'split'"):
        site.load_index(dup)
