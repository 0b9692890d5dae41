"""VinDr-CXR adapter on hand-written label files and on the synthetic PhysioNet layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from bench.data.io import read_image
from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.vindr import LABELS, TEST_OTHER_COLUMN, VINDR_COLUMNS, VINDR_TO_LABEL
from bench.data.synthetic.vindr import save_dicom, write


def _dicom(root: Path, split: str, image_id: str, shape: tuple[int, int], seed: int = 0) -> None:
    img = np.linspace(0.0, 1.0, shape[0] * shape[1]).reshape(shape)
    save_dicom(img, root / split / f"{image_id}.dicom", image_id, np.random.default_rng(seed))


def _labels(**positive: int) -> dict[str, int]:
    row = {c: 0 for c in VINDR_COLUMNS}
    for k, v in positive.items():
        row[k.replace("_", " ")] = v
    return row


def _fixture(root: Path) -> None:
    """Train: image `a` has Atelectasis from 1 of 3 readers, Cardiomegaly from 2 of 3;
    image `b` has Pleural effusion from all 3. Test: consensus rows for `c`, `d`."""
    train = [
        {"image_id": "a", "rad_id": "R1", **_labels(Atelectasis=1, Cardiomegaly=1)},
        {"image_id": "a", "rad_id": "R2", **_labels(Cardiomegaly=1)},
        {"image_id": "a", "rad_id": "R3", **_labels(No_finding=1)},
        {"image_id": "b", "rad_id": "R8", **{**_labels(), "Pleural effusion": 1, "Nodule/Mass": 1}},
        {"image_id": "b", "rad_id": "R9", **{**_labels(), "Pleural effusion": 1}},
        {"image_id": "b", "rad_id": "R10", **{**_labels(), "Pleural effusion": 1, "Pulmonary fibrosis": 1}},
    ]
    test = [
        {"image_id": "c", **{**_labels(), "Pleural thickening": 1, "Edema": 1}},
        {"image_id": "d", **_labels(No_finding=1)},
    ]
    (root / "annotations").mkdir(parents=True)
    pd.DataFrame(train, columns=["image_id", "rad_id", *VINDR_COLUMNS]).to_csv(
        root / "annotations" / "image_labels_train.csv", index=False
    )
    pd.DataFrame(test, columns=["image_id", *VINDR_COLUMNS]).rename(
        columns={"Other diseases": TEST_OTHER_COLUMN}
    ).to_csv(root / "annotations" / "image_labels_test.csv", index=False)
    for split, image_id, shape in (("train", "a", (20, 30)), ("train", "b", (25, 25)),
                                   ("test", "c", (16, 12)), ("test", "d", (10, 14))):  # fmt: skip
        _dicom(root, split, image_id, shape)


def test_label_map_is_explicit() -> None:
    assert VINDR_TO_LABEL["Pleural effusion"] == "Pleural Effusion"
    assert VINDR_TO_LABEL["Pulmonary fibrosis"] == "Fibrosis"
    assert "Nodule/Mass" not in VINDR_TO_LABEL and "Other lesion" not in VINDR_TO_LABEL
    assert set(VINDR_TO_LABEL.values()) == set(LABELS)
    assert len(VINDR_COLUMNS) == 28


def test_fixture_majority_and_any(tmp_path: Path) -> None:
    _fixture(tmp_path)
    site = get_site("vindr")
    idx = site.load_index(tmp_path)
    assert list(idx.columns) == list(INDEX_COLUMNS) + list(LABELS)
    assert list(idx["image_id"]) == ["a", "b", "c", "d"]
    assert list(idx["split"]) == ["train", "train", "test", "test"]
    assert (idx["patient_id"] == idx["image_id"]).all() and (idx["view"] == "PA").all()
    assert list(zip(idx["height"], idx["width"])) == [(20, 30), (25, 25), (16, 12), (10, 14)]
    assert Path(idx["path"].iloc[2]) == (tmp_path / "test" / "c.dicom").resolve()
    got = idx.set_index("image_id")
    assert got.loc["a", "Atelectasis"] == 0.0 and got.loc["a", "Cardiomegaly"] == 1.0  # 1/3 vs 2/3
    assert got.loc["b", "Pleural Effusion"] == 1.0 and got.loc["b", "Fibrosis"] == 0.0
    assert got.loc["c", "Pleural Thickening"] == 1.0 and got.loc["c", "Edema"] == 1.0
    assert got.loc["d", list(LABELS)].sum() == 0.0

    union = site.load_index(tmp_path, aggregation="any").set_index("image_id")
    assert union.loc["a", "Atelectasis"] == 1.0 and union.loc["b", "Fibrosis"] == 1.0
    pd.testing.assert_frame_equal(union.loc[["c", "d"]], got.loc[["c", "d"]])  # consensus: no aggregation


def test_fixture_options_and_errors(tmp_path: Path) -> None:
    _fixture(tmp_path)
    site = get_site("vindr")
    assert list(site.load_index(tmp_path, splits="test")["image_id"]) == ["c", "d"]
    with pytest.raises(DataError, match="aggregation"):
        site.load_index(tmp_path, aggregation="mean")
    with pytest.raises(DataError, match="unknown option"):
        site.load_index(tmp_path, views=["PA"])
    with pytest.raises(DataError, match="splits"):
        site.load_index(tmp_path, splits=["val"])
    (tmp_path / "test" / "d.dicom").unlink()
    with pytest.raises(DataError, match="d.dicom"):
        site.load_index(tmp_path)
    assert list(site.load_index(tmp_path, missing="drop")["image_id"]) == ["a", "b", "c"]
    (tmp_path / "annotations" / "image_labels_test.csv").unlink()
    with pytest.raises(DataError, match="image_labels_test.csv"):
        site.load_index(tmp_path)


def test_round_trip_seeds_cover_both_photometrics(tmp_path: Path) -> None:
    kinds = {save_dicom(np.zeros((4, 4)), tmp_path / "x.dicom", "x", np.random.default_rng(s))["monochrome1"]
             for s in range(6)}  # fmt: skip
    assert kinds == {True, False}  # the parametrised round trip below meets both


@pytest.mark.parametrize("seed", range(6))
def test_dicom_writer_round_trip(tmp_path: Path, seed: int) -> None:
    """A known image written as 12-bit MONOCHROME1/2 DICOM with a window reads back."""
    rng = np.random.default_rng(100 + seed)
    img = rng.random((24, 20))
    facts = save_dicom(img, tmp_path / "x.dicom", "x", np.random.default_rng(seed))
    ds = pydicom.dcmread(tmp_path / "x.dicom")
    assert ds.PhotometricInterpretation == ("MONOCHROME1" if facts["monochrome1"] else "MONOCHROME2")
    assert int(ds.BitsStored) == 12 and ds.pixel_array.max() < 4096
    out = read_image(tmp_path / "x.dicom")
    np.testing.assert_allclose(out, img, atol=0.5 / float(facts["span"]) + 1e-6)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), seed=1, sites=["vindr"], scale=0.15)["vindr"]


def test_synthetic_read_by_adapter(synthetic: Path) -> None:
    train = pd.read_csv(synthetic / "annotations" / "image_labels_train.csv", dtype={"image_id": str})
    test = pd.read_csv(synthetic / "annotations" / "image_labels_test.csv", dtype={"image_id": str})
    assert "Other diseases" in train.columns and TEST_OTHER_COLUMN in test.columns
    assert (train.groupby("image_id").size() == 3).all() and test["image_id"].is_unique
    idx = get_site("vindr").load_index(synthetic).set_index("image_id")
    assert len(idx) == train["image_id"].nunique() + len(test)
    # Independent re-derivation: majority = at least 2 of the 3 readers.
    votes = train.groupby("image_id")[list(VINDR_TO_LABEL)].sum().rename(columns=VINDR_TO_LABEL)
    expected = (votes >= 2).astype(float)
    pd.testing.assert_frame_equal(idx.loc[expected.index, list(LABELS)], expected[list(LABELS)], check_names=False)
    consensus = test.set_index("image_id")[list(VINDR_TO_LABEL)].rename(columns=VINDR_TO_LABEL).astype(float)
    pd.testing.assert_frame_equal(idx.loc[consensus.index, list(LABELS)], consensus[list(LABELS)], check_names=False)
    # Every file is a real, decodable DICOM whose header size the index carries.
    for image_id, row in idx.iterrows():
        img = read_image(row["path"])
        assert img.shape == (row["height"], row["width"]) and 0.0 <= img.min() and img.max() <= 1.0


def test_synthetic_deterministic(tmp_path: Path, synthetic: Path) -> None:
    write(tmp_path, seed=1, scale=0.15)
    for rel in ("annotations/image_labels_train.csv", "annotations/image_labels_test.csv"):
        assert (tmp_path / rel).read_bytes() == (synthetic / rel).read_bytes()
    first = sorted((synthetic / "test").iterdir())[0]
    assert (tmp_path / "test" / first.name).read_bytes() == first.read_bytes()


def test_fixture_duplicate_reader_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14.6: the same (image, reader) twice in train, the same image twice in the test consensus."""
    _fixture(tmp_path)
    site = get_site("vindr")
    expected = site.load_index(tmp_path)
    train_csv = tmp_path / "annotations" / "image_labels_train.csv"
    test_csv = tmp_path / "annotations" / "image_labels_test.csv"
    train, test = pd.read_csv(train_csv), pd.read_csv(test_csv)
    pd.concat([train, train.iloc[[0]]]).to_csv(train_csv, index=False)  # would tip `a` to 2 of 4 readers
    pd.concat([test, test.iloc[[1]]]).to_csv(test_csv, index=False)
    with caplog.at_level("WARNING"):
        pd.testing.assert_frame_equal(site.load_index(tmp_path), expected)
    assert "image_labels_train.csv: dropped 1 identical duplicate row(s) of 1 image id(s), e.g. [('a', 'R1')]" in caplog.text
    assert "image_labels_test.csv: dropped 1 identical duplicate row(s) of 1 image id(s), e.g. ['d']" in caplog.text

    pd.concat([train, train.iloc[[0]].assign(Atelectasis=0)]).to_csv(train_csv, index=False)
    with pytest.raises(DataError, match=r"image_labels_train.csv: 1 image id\(s\).*conflicting.*\('a', 'R1'\).*'Atelectasis'"):
        site.load_index(tmp_path)
    train.to_csv(train_csv, index=False)
    pd.concat([test, test.iloc[[1]].assign(Edema=1)]).to_csv(test_csv, index=False)
    with pytest.raises(DataError, match=r"image_labels_test.csv: 1 image id\(s\).*conflicting.*\['d'\].*'Edema'"):
        site.load_index(tmp_path)
