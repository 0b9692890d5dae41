"""PadChest adapter: token table, the real 160K CSV (shipped by torchxrayvision), and
the synthetic writer's official layout read back through the adapter."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.io import ImageReadError, read_image
from bench.data.labels import HARMONISED5, NIH14
from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.padchest import (
    CSV_NAME,
    KNOWN_BAD_IMAGES,
    TOKEN_TO_LABEL,
    demographics,
    label_matrix,
    labels_from_tokens,
    parse_labels,
    read_labels_csv,
    select_rows,
)

# ------------------------------------------------------------------- token table


@pytest.mark.parametrize(
    ("token", "label"),
    [
        ("atelectasis", "Atelectasis"),
        ("laminar atelectasis", "Atelectasis"),
        ("lobar atelectasis", "Atelectasis"),
        ("segmental atelectasis", "Atelectasis"),
        ("total atelectasis", "Atelectasis"),
        ("round atelectasis", "Atelectasis"),
        ("atelectasis basal", "Atelectasis"),
        ("cardiomegaly", "Cardiomegaly"),
        ("consolidation", "Consolidation"),
        ("pulmonary edema", "Edema"),
        ("pleural effusion", "Pleural Effusion"),
        ("loculated pleural effusion", "Pleural Effusion"),
        ("loculated fissural effusion", "Pleural Effusion"),
    ],
)
def test_target_tokens(token: str, label: str) -> None:
    assert TOKEN_TO_LABEL[token] == label


@pytest.mark.parametrize(
    "token",
    ["pericardial effusion", "heart insufficiency", "subcutaneous emphysema", "air bronchogram",
     "costophrenic angle blunting", "normal", "unchanged", "exclude", "pseudonodule"],
)  # fmt: skip
def test_tokens_that_are_not_targets(token: str) -> None:
    assert token not in TOKEN_TO_LABEL


def test_table_maps_onto_canonical_names() -> None:
    assert set(TOKEN_TO_LABEL.values()) == set(NIH14)


def test_parse_labels_quirks() -> None:
    assert parse_labels("['cardiomegaly', ' pleural effusion', '']") == {"cardiomegaly", "pleural effusion"}
    assert parse_labels("['']") == frozenset()
    assert parse_labels(float("nan")) is None
    assert parse_labels(None) is None
    assert parse_labels("  ") is None
    # Not a valid literal (unterminated): the regex fallback still finds the tokens.
    assert parse_labels("['pulmonary edema', ' laminar atelectasis'") == {"pulmonary edema", "laminar atelectasis"}


def test_labels_from_tokens() -> None:
    row = labels_from_tokens(frozenset({"pericardial effusion", "laminar atelectasis"}), HARMONISED5)
    assert row == {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Consolidation": 0.0, "Edema": 0.0,
                   "Pleural Effusion": 0.0}  # fmt: skip
    assert all(math.isnan(v) for v in labels_from_tokens(None, HARMONISED5).values())


# -------------------------------------------------------------------- real CSV


def _real_csv() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (test extra) ships the real PadChest CSV; not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / (CSV_NAME + ".gz")
    if not path.is_file():
        pytest.skip(f"{path} not in this torchxrayvision version")
    return path


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return read_labels_csv(_real_csv())


@pytest.mark.slow
def test_real_csv_counts(real: pd.DataFrame) -> None:
    """Counts quoted in docs/DATA_AND_METRICS.md §3, recomputed on the file."""
    assert len(real) == 160_861 and real["ImageID"].is_unique
    assert real["PatientID"].nunique() == 67_625
    assert real["Projection"].value_counts().to_dict() == {
        "PA": 91_728, "L": 49_579, "AP_horizontal": 14_346, "AP": 4_559, "COSTAL": 630, "EXCLUDE": 11, "UNK": 8,
    }  # fmt: skip
    assert real["Labels"].isna().sum() == 103
    bad = real[real["ImageID"].isin(list(KNOWN_BAD_IMAGES))]
    assert len(bad) == 21 == len(KNOWN_BAD_IMAGES)
    assert sorted(bad["ImageDir"]) == [13, 13, 17, 19, 20, 41, 42, 42, 43, 43, 43, 44, 44, 46, 46, 46, 46, 47, 48, 49, 49]


@pytest.mark.slow
def test_real_csv_token_counts(real: pd.DataFrame) -> None:
    cells = real["Labels"].value_counts()  # parse each distinct cell once, weight by rows
    parsed = [(parse_labels(cell), n) for cell, n in cells.items()]
    count = {t: sum(n for s, n in parsed if t in s) for t in ("cardiomegaly", "pericardial effusion", "pulmonary edema")}
    assert count == {"cardiomegaly": 15_022, "pericardial effusion": 79, "pulmonary edema": 1_456}
    labels = label_matrix(real["Labels"])
    assert int(labels["Edema"].sum()) == 1_456 and int(labels["Cardiomegaly"].sum()) == 15_022
    assert labels.isna().all(axis=1).sum() == 103


@pytest.mark.slow
def test_krones_table12_subset(real: pd.DataFrame) -> None:
    """Table 12: PA/AP, projection by manual review of DICOM fields, ImageDir 0."""
    sub = select_rows(real, projections=["PA", "AP"], method_projection="manual", image_dirs=[0])
    assert len(sub) == 1_861  # "Scans [No.] 1,861"
    assert (sub["MethodLabel"] == "Physician").all()  # "all manually labelled"
    labels = label_matrix(sub["Labels"])
    pct = (100 * labels.mean()).round(1)
    # Paper: Cardiomegaly 8.7, Consolidation 0.7, Edema 0, Pleural Effusion 2.8.
    assert pct["Cardiomegaly"] == 8.7
    assert pct["Consolidation"] == 0.7
    assert pct["Edema"] == 0.0
    assert pct["Pleural Effusion"] == 2.8
    # The xrv substring rule would count the pericardial effusion too: 2.9 %.
    substring = sub["Labels"].str.contains("effusion").mean() * 100
    assert round(substring, 1) == 2.9
    # Atelectasis: 104 images (5.6 %) have any atelectasis token. The paper's 5.7 %
    # is 106 / 1,861, the sum of per-subtype counts (2 images carry two subtypes).
    assert int(labels["Atelectasis"].sum()) == 104
    tokens = sub["Labels"].map(parse_labels)
    per_subtype = sum(sum(t in s for s in tokens) for t, lab in TOKEN_TO_LABEL.items() if lab == "Atelectasis")
    assert per_subtype == 106 and round(100 * per_subtype / len(sub), 1) == 5.7
    # Patients: 1,758 distinct PatientIDs (the paper prints 1,754).
    assert sub["PatientID"].nunique() == 1_758


# ----------------------------------------------------------- hand-made fixture


def _write_fixture(root: Path) -> pd.DataFrame:
    """Four images, one per hand-chosen Labels cell, in two ImageDir folders."""
    rows = [
        ("a.png", 0, "PA", "Physician", "['cardiomegaly', ' pericardial effusion']", (20, 30)),
        ("b.png", 0, "AP", "Physician", "['laminar atelectasis', ' loculated pleural effusion', '']", (24, 24)),
        ("c.png", 1, "L", "RNN_model", "['pulmonary edema', 'heart insufficiency']", (16, 18)),
        ("d.png", 1, "PA", "RNN_model", None, (10, 12)),
    ]
    records = []
    for i, (name, folder, proj, method, labels, (h, w)) in enumerate(rows):
        values = np.full((h, w), 1000 * (i + 1), dtype=np.uint16)
        (root / str(folder)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(root / str(folder) / name)
        records.append({
            "ImageID": name, "ImageDir": folder, "StudyDate_DICOM": 20150601, "StudyID": f"s{i}",
            "PatientID": "1234567890123456789012345" if i < 2 else f"9{i}", "PatientBirth": 1950.0,
            "PatientSex_DICOM": "F" if i % 2 else "M", "Projection": proj,
            "MethodProjection": "Manual review of DICOM fields" if i != 3 else "resnet-50.t7",
            "MethodLabel": method, "Rows_DICOM": h, "Columns_DICOM": w, "Labels": labels,
        })  # fmt: skip
    frame = pd.DataFrame(records)
    frame.to_csv(root / CSV_NAME, index=True)
    return frame


def test_fixture_index(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    idx = get_site("padchest").load_index(tmp_path)
    assert list(idx.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert list(idx["image_id"]) == ["a.png", "b.png", "c.png", "d.png"]
    assert idx["patient_id"].iloc[0] == "1234567890123456789012345"  # long IDs stay exact strings
    assert list(idx["view"]) == ["PA", "AP", "L", "PA"]
    assert (idx["split"] == "train").all() and (idx["site"] == "padchest").all()
    assert list(zip(idx["height"], idx["width"])) == [(20, 30), (24, 24), (16, 18), (10, 12)]
    assert Path(idx["path"].iloc[2]) == (tmp_path / "1" / "c.png").resolve()
    got = idx.set_index("image_id")[list(HARMONISED5)]
    assert got.loc["a.png"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # pericardial effusion is not pleural
    assert got.loc["b.png"].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert got.loc["c.png"].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert got.loc["d.png"].isna().all()
    assert list(idx.columns) == list(INDEX_COLUMNS) + list(NIH14)
    demo = demographics(tmp_path)
    assert demo["age"].tolist() == [65.0] * 4 and demo["sex"].tolist() == ["M", "F", "M", "F"]
    assert demo["image_id"].tolist() == idx["image_id"].tolist()
    np.testing.assert_allclose(read_image(idx["path"].iloc[1]), np.full((24, 24), 2000 / 65535), atol=1e-7)


def test_fixture_filters_and_options(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    site = get_site("padchest")
    assert list(site.load_index(tmp_path, projections=["PA", "AP"])["image_id"]) == ["a.png", "b.png", "d.png"]
    assert list(site.load_index(tmp_path, projections="L")["image_id"]) == ["c.png"]
    assert list(site.load_index(tmp_path, method_projection="model")["image_id"]) == ["d.png"]
    assert list(site.load_index(tmp_path, method_label="physician")["image_id"]) == ["a.png", "b.png"]
    assert list(site.load_index(tmp_path, image_dirs=1)["image_id"]) == ["c.png", "d.png"]
    assert (site.load_index(tmp_path, split="test")["split"] == "test").all()
    header = site.load_index(tmp_path, sizes="header")
    assert list(zip(header["height"], header["width"])) == [(20, 30), (24, 24), (16, 18), (10, 12)]
    with pytest.raises(DataError, match="unknown options.*'projection'.*valid"):
        site.load_index(tmp_path, projection=["PA"])
    with pytest.raises(DataError, match="unknown projections \\['LATERAL'\\]"):
        site.load_index(tmp_path, projections=["LATERAL"])
    with pytest.raises(DataError, match="method_label"):
        site.load_index(tmp_path, method_label="radiologist")
    with pytest.raises(DataError, match="split"):
        site.load_index(tmp_path, split="validation")


def test_fixture_missing_files_and_flat_layout(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    (tmp_path / "1" / "c.png").unlink()
    site = get_site("padchest")
    with pytest.raises(DataError, match="1 of 4 images are missing.*c.png"):
        site.load_index(tmp_path)
    assert list(site.load_index(tmp_path, missing="drop")["image_id"]) == ["a.png", "b.png", "d.png"]
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tmp_path / CSV_NAME, flat / CSV_NAME)
    for p in [*(tmp_path / "0").iterdir(), *(tmp_path / "1").iterdir()]:
        shutil.copy(p, flat / p.name)
    idx = site.load_index(flat, missing="drop")
    assert list(idx["image_id"]) == ["a.png", "b.png", "d.png"]
    assert Path(idx["path"].iloc[0]) == (flat / "a.png").resolve()


def test_missing_csv_and_bad_csv(tmp_path: Path) -> None:
    site = get_site("padchest")
    with pytest.raises(DataError, match=CSV_NAME):
        site.load_index(tmp_path)
    pd.DataFrame({"ImageID": ["x.png"]}).to_csv(tmp_path / CSV_NAME)
    with pytest.raises(DataError, match="lacks columns"):
        site.load_index(tmp_path)


# -------------------------------------------------------------- synthetic site


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    # Through the package entry point: marker, atomic rename, writer lookup by name.
    return generate(tmp_path_factory.mktemp("synthetic"), seed=3, sites=["padchest"], scale=0.1)["padchest"]


def test_synthetic_layout_read_by_adapter(synthetic: Path) -> None:
    csv = pd.read_csv(synthetic / CSV_NAME, dtype={"PatientID": str, "ImageID": str})
    assert csv.columns[0] == "Unnamed: 0" and len(csv.columns) == 36  # the real header shape
    idx = get_site("padchest").load_index(synthetic)
    assert len(idx) == len(csv) - 1  # the known-bad file is skipped
    bad = set(csv["ImageID"]) & set(KNOWN_BAD_IMAGES)
    assert len(bad) == 1 and not bad & set(idx["image_id"])
    bits = csv.set_index("ImageID")["BitsStored_DICOM"]
    for row in idx.itertuples():
        img = np.asarray(Image.open(row.path))
        assert img.dtype == np.uint16 and img.shape == (row.height, row.width)
        assert 0 < img.max() < 2 ** bits[row.image_id]  # 10/12-bit content in a 16-bit PNG
    nulls = csv["Labels"].isna()
    assert nulls.sum() == 1
    assert idx.set_index("image_id").loc[csv.loc[nulls, "ImageID"].iloc[0], list(NIH14)].isna().all()
    assert (idx.loc[idx["image_id"] != csv.loc[nulls, "ImageID"].iloc[0], list(NIH14)].notna()).all().all()


def test_synthetic_known_bad_kept_on_request(synthetic: Path) -> None:
    idx = get_site("padchest").load_index(synthetic, skip_known_bad=False)
    bad = idx[idx["image_id"].isin(list(KNOWN_BAD_IMAGES))]
    assert len(bad) == 1
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(bad["path"].iloc[0])


def test_synthetic_is_deterministic(tmp_path: Path, synthetic: Path) -> None:
    from bench.data.synthetic.padchest import write

    write(tmp_path, seed=3, scale=0.1)
    assert (tmp_path / CSV_NAME).read_bytes() == (synthetic / CSV_NAME).read_bytes()
    first = sorted((synthetic / "0").iterdir())[0]
    assert (tmp_path / "0" / first.name).read_bytes() == first.read_bytes()


def test_read_options_brighten_12_bit_content(synthetic: Path) -> None:
    site = get_site("padchest")
    path = site.load_index(synthetic)["path"].iloc[0]
    default, scaled = read_image(path), read_image(path, **site.read_options)
    assert default.max() <= 4095 / 65535 + 1e-7  # the container divisor leaves it dark
    assert 0.5 < scaled.max() <= 1.0


def test_fixture_duplicate_rows_dropped_when_identical_rejected_when_conflicting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: an ImageID listed twice in the labels CSV."""
    frame = _write_fixture(tmp_path)
    site = get_site("padchest")
    pd.concat([frame, frame.iloc[[1]]], ignore_index=True).to_csv(tmp_path / CSV_NAME, index=True)
    with caplog.at_level("WARNING"):
        idx = site.load_index(tmp_path)
    assert list(idx["image_id"]) == ["a.png", "b.png", "c.png", "d.png"]
    assert f"{CSV_NAME}: dropped 1 identical duplicate row(s) of 1 image id(s), e.g. ['b.png']" in caplog.text
    conflicting = frame.iloc[[1]].assign(Labels="['normal']")
    pd.concat([frame, conflicting], ignore_index=True).to_csv(tmp_path / CSV_NAME, index=True)
    with pytest.raises(DataError, match=rf"{CSV_NAME}: 1 image id\(s\) .*conflicting.*\(2 rows\).*'b.png'.*'Labels'"):
        site.load_index(tmp_path)


def test_fixture_zero_sizes_and_unreadable_headers_become_minus_one(tmp_path: Path) -> None:
    """Issue 12/14.7: a size of 0 in the CSV, or a broken PNG with sizes='header', is -1, not a crash."""
    frame = _write_fixture(tmp_path)
    frame.loc[2, "Rows_DICOM"] = 0
    frame.to_csv(tmp_path / CSV_NAME, index=True)
    (tmp_path / "0" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    site = get_site("padchest")
    assert list(site.load_index(tmp_path)["height"]) == [20, 24, -1, 10]
    header = site.load_index(tmp_path, sizes="header")
    assert list(zip(header["height"], header["width"])) == [(20, 30), (-1, -1), (16, 18), (10, 12)]
