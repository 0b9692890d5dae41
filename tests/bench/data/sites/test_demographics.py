"""Demographics in the standard index (issue 11 §3): `age` and `sex` for every site that ships
them, NaN where it does not, checked against the label files read with the csv module."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.sites import DEMOGRAPHIC_COLUMNS, INDEX_COLUMNS, get_site
from bench.data.sites.generic import normalise_age, normalise_sex
from bench.data.synthetic import generate


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("syn"), seed=5, sites=("nih", "chexpert", "padchest", "mimic"), scale=0.02)


def _same(a: object, b: object) -> bool:
    return (isinstance(a, float) and math.isnan(a) and isinstance(b, float) and math.isnan(b)) or a == b


def test_normalisers_hand_cases() -> None:
    sex = normalise_sex(pd.Series(["F", "Male", " female ", "O", "Unknown", "", None, np.nan, "m"]))
    assert [v if isinstance(v, str) else "nan" for v in sex] == ["F", "M", "F", "O", "nan", "nan", "nan", "nan", "M"]
    age = normalise_age(pd.Series(["58", 0, 95.0, 414, -1, "x", None]))
    assert [None if math.isnan(v) else v for v in age] == [58.0, 0.0, 95.0, None, None, None, None]
    assert INDEX_COLUMNS[-len(DEMOGRAPHIC_COLUMNS) :] == DEMOGRAPHIC_COLUMNS


@pytest.mark.slow  # the four generated sites take ~15 s on a loaded machine
def test_nih_age_and_gender(roots: dict[str, Path]) -> None:
    index = get_site("nih").load_index(roots["nih"]).set_index("image_id")
    with (roots["nih"] / "Data_Entry_2017_v2020.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(index)
    for r in rows:
        got = index.loc[r["Image Index"][:-4]]
        assert got["age"] == float(r["Patient Age"]) and got["sex"] == r["Patient Gender"]
    assert index["age"].dtype == np.float64


@pytest.mark.slow  # the four generated sites take ~15 s on a loaded machine
def test_chexpert_age_and_sex(roots: dict[str, Path]) -> None:
    release = roots["chexpert"] / "CheXpert-v1.0-small"
    index = get_site("chexpert").load_index(roots["chexpert"], split="train").set_index("image_id")
    with (release / "train.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(index)
    for r in rows:
        got = index.loc[r["Path"].split("/", 1)[1].rsplit(".", 1)[0]]
        assert got["age"] == float(r["Age"])
        assert got["sex"] == {"Female": "F", "Male": "M"}[r["Sex"]]


@pytest.mark.slow  # the four generated sites take ~15 s on a loaded machine
def test_padchest_age_is_study_year_minus_birth_year(roots: dict[str, Path]) -> None:
    index = get_site("padchest").load_index(roots["padchest"]).set_index("image_id")
    csv_path = roots["padchest"] / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    with csv_path.open(newline="") as fh:
        rows = {r["ImageID"]: r for r in csv.DictReader(fh)}
    assert len(index) > 0
    for image_id, got in index.iterrows():
        r = rows[image_id]
        want = float(int(r["StudyDate_DICOM"]) // 10000 - float(r["PatientBirth"])) if r["PatientBirth"] else math.nan
        assert _same(got["age"], want)
        assert got["sex"] == r["PatientSex_DICOM"]


@pytest.mark.slow  # the four generated sites take ~15 s on a loaded machine
def test_mimic_demographics_only_with_mimic_iv_patients(roots: dict[str, Path], tmp_path: Path) -> None:
    root = roots["mimic"]
    plain = get_site("mimic").load_index(root)
    assert plain["age"].isna().all() and plain["sex"].isna().all()  # MIMIC-CXR-JPG alone has none

    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "rt", newline="") as fh:
        meta = list(csv.DictReader(fh))
    subjects = sorted({int(m["subject_id"]) for m in meta})
    patients = pd.DataFrame(
        {
            "subject_id": subjects[:-1],  # the last patient is not in the file -> NaN
            "gender": ["F" if i % 3 else "M" for i in range(len(subjects) - 1)],
            "anchor_age": [40 + i for i in range(len(subjects) - 1)],
            "anchor_year": [2095 + i % 5 for i in range(len(subjects) - 1)],
        }
    )
    path = tmp_path / "patients.csv"
    patients.to_csv(path, index=False)
    index = get_site("mimic").load_index(root, patients=str(path)).set_index("image_id")
    pat = patients.set_index("subject_id")
    for m in meta:
        got = index.loc[m["dicom_id"]]
        s = int(m["subject_id"])
        if s == subjects[-1]:
            assert math.isnan(got["age"]) and not isinstance(got["sex"], str)
            continue
        year = int(float(m["StudyDate"])) // 10000
        assert got["age"] == pat.loc[s, "anchor_age"] + year - pat.loc[s, "anchor_year"]
        assert got["sex"] == pat.loc[s, "gender"]


def test_sites_without_demographics_carry_nan(tmp_path: Path) -> None:
    root = generate(tmp_path, seed=1, sites=("oct",), scale=0.02)["oct"]
    index = get_site("oct").load_index(root)
    assert list(index.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert index["age"].isna().all() and index["sex"].isna().all()
