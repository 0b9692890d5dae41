"""CheXpert adapter: label policies on a hand-written CSV, and the generated valid set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.chexpert import CHEXPERT_LABELS
from bench.data.synthetic import generate

NAN = math.nan
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + list(CHEXPERT_LABELS)
# Three images; raw values for Atelectasis, Edema, Cardiomegaly, Pleural Effusion (others blank).
RAW = {
    "train/patient00001/study1/view1_frontal.jpg": ("Frontal", "AP", {"Atelectasis": -1.0, "Edema": -1.0, "Cardiomegaly": -1.0, "Pleural Effusion": 1.0}),
    "train/patient00001/study1/view2_lateral.jpg": ("Lateral", None, {"Atelectasis": 0.0, "Edema": 1.0, "Cardiomegaly": None, "Pleural Effusion": -1.0}),
    "train/patient00002/study1/view1_frontal.jpg": ("Frontal", "PA", {"Atelectasis": None, "Edema": 0.0, "Cardiomegaly": 1.0, "Pleural Effusion": None}),
}  # fmt: skip


def _tiny_release(parent: Path, prefix: str = "CheXpert-v1.0-small") -> Path:
    release = parent / prefix
    rows = []
    for i, (rel, (fl, appa, values)) in enumerate(RAW.items()):
        path = release / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20 + i, 16), 100, dtype=np.uint8)).save(path)
        row = {c: "" for c in HEADER}
        row.update({"Path": f"{prefix}/{rel}", "Sex": "Female", "Age": 50, "Frontal/Lateral": fl, "AP/PA": appa or ""})
        row.update({k: ("" if v is None else v) for k, v in values.items()})
        rows.append(row)
    pd.DataFrame(rows, columns=HEADER).to_csv(release / "train.csv", index=False)
    return release


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    _tiny_release(tmp_path)
    return tmp_path


def labels_of(df: pd.DataFrame, label: str) -> list[float]:
    return df[label].tolist()


def same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize(
    "policy, atelectasis, edema, cardiomegaly, effusion",
    [
        ("ignore", [NAN, 0.0, NAN], [NAN, 1.0, 0.0], [NAN, NAN, 1.0], [1.0, NAN, NAN]),
        ("ones", [1.0, 0.0, NAN], [1.0, 1.0, 0.0], [1.0, NAN, 1.0], [1.0, 1.0, NAN]),
        ("zeros", [0.0, 0.0, NAN], [0.0, 1.0, 0.0], [0.0, NAN, 1.0], [1.0, 0.0, NAN]),
        # mixed: U-Ones for Atelectasis and Edema, U-Zeros for the rest
        ("mixed", [1.0, 0.0, NAN], [1.0, 1.0, 0.0], [0.0, NAN, 1.0], [1.0, 0.0, NAN]),
    ],
)
def test_uncertainty_policies(tiny: Path, policy: str, atelectasis, edema, cardiomegaly, effusion) -> None:
    df = get_site("chexpert").load_index(tiny, split="train", uncertainty=policy)
    assert same(labels_of(df, "Atelectasis"), atelectasis)
    assert same(labels_of(df, "Edema"), edema)
    assert same(labels_of(df, "Cardiomegaly"), cardiomegaly)
    assert same(labels_of(df, "Pleural Effusion"), effusion)
    assert df["Fracture"].isna().all()  # blank everywhere -> unknown


def test_blank_as_zero_and_index_fields(tiny: Path) -> None:
    df = get_site("chexpert").load_index(tiny, split="train", blank="zero")
    assert same(labels_of(df, "Atelectasis"), [NAN, 0.0, 0.0])
    assert df["Fracture"].eq(0.0).all()
    assert list(df.columns) == list(INDEX_COLUMNS) + list(CHEXPERT_LABELS)
    assert df["patient_id"].tolist() == ["patient00001", "patient00001", "patient00002"]
    assert df["view"].tolist() == ["AP", "L", "PA"]
    assert df["split"].eq("train").all()
    assert df["image_id"].tolist()[0] == "train/patient00001/study1/view1_frontal"
    assert (df["height"].tolist(), df["width"].tolist()) == ([20, 21, 22], [16, 16, 16])


def test_root_may_be_the_release_folder_and_views_filter(tiny: Path) -> None:
    site = get_site("chexpert")
    a = site.load_index(tiny, split="train")
    b = site.load_index(tiny / "CheXpert-v1.0-small", split="train")
    pd.testing.assert_frame_equal(a, b)
    assert len(site.load_index(tiny, split="train", views=["frontal"])) == 2
    assert site.load_index(tiny, split="train", views="lateral")["view"].tolist() == ["L"]
    assert site.load_index(tiny, split="train", views=["PA"])["patient_id"].tolist() == ["patient00002"]


def test_test_split_without_metadata_columns(tmp_path: Path) -> None:
    release = _tiny_release(tmp_path)
    rel = "test/patient64741/study1/view1_frontal.jpg"
    (release / rel).parent.mkdir(parents=True)
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(release / rel)
    pd.DataFrame([{"Path": rel, **{c: 0.0 for c in CHEXPERT_LABELS}}]).to_csv(tmp_path / "test_labels.csv", index=False)
    df = get_site("chexpert").load_index(tmp_path, split="test")
    assert df["split"].tolist() == ["test"] and df["view"].tolist() == ["frontal"]
    assert df["patient_id"].tolist() == ["patient64741"]


def test_errors(tiny: Path) -> None:
    site = get_site("chexpert")
    with pytest.raises(DataError, match=r"uncertainty='maybe' is not one of \('ignore', 'ones', 'zeros', 'mixed'\)"):
        site.load_index(tiny, split="train", uncertainty="maybe")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['policy'\]"):
        site.load_index(tiny, split="train", policy="ones")
    with pytest.raises(DataError, match="valid.csv"):
        site.load_index(tiny)  # default split is valid; the tiny release has none
    csv = tiny / "CheXpert-v1.0-small" / "train.csv"
    df = pd.read_csv(csv)
    df.drop(columns=["Edema"]).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Edema'\]; found \['Path'"):
        site.load_index(tiny, split="train")
    df.assign(Edema=2.0).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"'Edema' has values \[2.0\]"):
        site.load_index(tiny, split="train")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("chexpert",), scale=0.05)["chexpert"]


@pytest.mark.slow  # renders the fixed 234-image valid set (~2-4 s)
def test_generated_valid_matches_the_real_counts(synthetic: Path) -> None:
    df = get_site("chexpert").load_index(synthetic)
    assert len(df) == 234
    assert df["patient_id"].nunique() == 200
    assert set(df["patient_id"]) == {f"patient{i}" for i in range(64541, 64741)}
    frontal = get_site("chexpert").load_index(synthetic, views=["frontal"], as_split="test")
    assert len(frontal) == 202 and frontal["split"].eq("test").all()
    assert set(np.unique(df[list(CHEXPERT_LABELS)].to_numpy())) <= {0.0, 1.0}
    assert (df["height"].between(112, 160) & df["width"].between(112, 160)).all()
    assert df["width"].nunique() > 5  # variable aspect ratio


@pytest.mark.slow
def test_generated_train_has_uncertain_and_blank_values(synthetic: Path) -> None:
    raw = pd.read_csv(synthetic / "CheXpert-v1.0-small" / "train.csv")
    values = raw[list(CHEXPERT_LABELS[1:])].to_numpy()
    assert (values == -1.0).any() and np.isnan(values).any() and (values == 1.0).any()
    ignore = get_site("chexpert").load_index(synthetic, split="train")
    ones = get_site("chexpert").load_index(synthetic, split="train", uncertainty="ones")
    n_unc = int((raw["Edema"] == -1.0).sum())
    assert int(ones["Edema"].eq(1.0).sum()) - int(ignore["Edema"].eq(1.0).sum()) == n_unc


def test_duplicate_rows_dropped_when_identical_rejected_when_conflicting(
    tiny: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6. The same image under another Path spelling (no release prefix) is the same image."""
    site = get_site("chexpert")
    csv = tiny / "CheXpert-v1.0-small" / "train.csv"
    df = pd.read_csv(csv)
    copy = df.iloc[[0]].assign(Path=df["Path"].iloc[0].removeprefix("CheXpert-v1.0-small/"))
    pd.concat([df, df.iloc[[1]], copy]).to_csv(csv, index=False)
    with caplog.at_level("WARNING"):
        idx = site.load_index(tiny, split="train", uncertainty="ones")
    assert idx["image_id"].is_unique and len(idx) == 3
    assert "train.csv: dropped 2 identical duplicate row(s) of 2 image id(s)" in caplog.text

    # -1 and 0 both become 0 under `zeros`; the raw rows still disagree, and that is what counts
    pd.concat([df, df.iloc[[0]].assign(Atelectasis=0.0)]).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"train.csv: 1 image id\(s\).*conflicting.*patient00001/study1/view1_frontal.*Atelectasis"):
        site.load_index(tiny, split="train", uncertainty="zeros")
