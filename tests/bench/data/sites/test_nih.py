"""NIH adapter on the generator's official layout, the Kaggle layout and split files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.labels import NIH14
from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.synthetic import generate

# The spellings of docs/DATA_AND_METRICS.md §1 ("Exact strings"), mapped by hand to canonical names.
NIH_SPELLING = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Effusion": "Pleural Effusion", "Emphysema": "Emphysema", "Fibrosis": "Fibrosis",
    "Hernia": "Hernia", "Infiltration": "Infiltration", "Mass": "Mass", "Nodule": "Nodule",
    "Pleural_Thickening": "Pleural Thickening", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
}  # fmt: skip
CSV_NAME = "Data_Entry_2017_v2020.csv"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=3, sites=("nih",), scale=0.12)["nih"]


@pytest.fixture(scope="module")
def index(root: Path) -> pd.DataFrame:
    return get_site("nih").load_index(root)


def csv_truth(root: Path) -> dict[str, dict]:
    """Image name -> {patient, view, labels} parsed with the csv module (not the adapter)."""
    with (root / CSV_NAME).open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        assert header[:7] == ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                              "Patient Gender", "View Position"]  # fmt: skip
        out = {}
        for r in reader:
            tokens = set(r[1].split("|")) - {"No Finding"}
            out[r[0]] = {
                "patient": int(r[3]),
                "view": r[6],
                "labels": {NIH_SPELLING[t]: 1.0 for t in tokens},
            }
    return out


def test_pandas_splits_the_real_header_into_eleven_columns(root: Path) -> None:
    cols = list(pd.read_csv(root / CSV_NAME, nrows=1).columns)
    assert cols[7:] == ["OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def test_index_round_trips_the_csv_exactly(root: Path, index: pd.DataFrame) -> None:
    truth = csv_truth(root)
    assert list(index.columns) == list(INDEX_COLUMNS) + list(NIH14)
    assert len(index) == len(truth) == len(list((root / "images").glob("*.png")))
    for rec in index.itertuples(index=False):
        row = rec._asdict()
        t = truth[Path(row["path"]).name]
        assert int(row["patient_id"]) == t["patient"]
        assert row["view"] == t["view"]
        got = {lab: index.loc[index["image_id"] == row["image_id"], lab].item() for lab in NIH14}
        assert got == {lab: t["labels"].get(lab, 0.0) for lab in NIH14}
    assert index["site"].eq("nih").all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in index["path"])


def test_sizes_come_from_the_files(index: pd.DataFrame) -> None:
    for rec in index.head(5).itertuples():
        with Image.open(rec.path) as im:
            assert (rec.height, rec.width) == (im.size[1], im.size[0]) == (128, 128)


def test_official_split_is_patient_disjoint_with_val_from_train_val(root: Path, index: pd.DataFrame) -> None:
    test_names = set((root / "test_list.txt").read_text().split())
    assert set(index.loc[index["split"] == "test", "path"].map(lambda p: Path(p).name)) == test_names
    groups = {s: set(g) for s, g in index.groupby("split")["patient_id"]}
    assert set(groups) == {"train", "val", "test"}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    n_trainval = len(groups["train"] | groups["val"])
    assert len(groups["val"]) == round(0.13 * n_trainval)


def test_val_split_is_seeded(root: Path, index: pd.DataFrame) -> None:
    again = get_site("nih").load_index(root)
    other = get_site("nih").load_index(root, seed=1)
    assert again["split"].tolist() == index["split"].tolist()
    assert other["split"].tolist() != index["split"].tolist()
    assert (other["split"] == "test").tolist() == (index["split"] == "test").tolist()


def test_kaggle_layout_and_2017_csv(root: Path, index: pd.DataFrame, tmp_path: Path) -> None:
    kag = tmp_path / "kaggle"
    for i, png in enumerate(sorted((root / "images").glob("*.png"))):
        dest = kag / f"images_{1 + i % 2:03d}" / "images" / png.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, dest)
    for name in ("train_val_list.txt", "test_list.txt"):
        shutil.copy(root / name, kag / name)
    lines = (root / CSV_NAME).read_text().splitlines()
    (kag / "Data_Entry_2017.csv").write_text("\n".join(line + "," for line in lines) + "\n")  # 2017 trailing comma
    kaggle = get_site("nih").load_index(kag)
    assert kaggle.drop(columns="path").equals(index.drop(columns="path"))
    assert kaggle["path"].str.contains("/images_00[12]/images/").all()


def test_split_files_layout(root: Path, index: pd.DataFrame, tmp_path: Path) -> None:
    site = tmp_path / "splitfiles"
    shutil.copytree(root, site)
    files = {}
    for split in ("train", "val", "test"):
        part = index[index["split"] == split]
        lines = [
            f"images/{Path(p).name} " + " ".join(str(int(v)) for v in vals)
            for p, vals in zip(part["path"], part[list(NIH14)].to_numpy())
        ]
        (site / "labels").mkdir(exist_ok=True)
        (site / "labels" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        files[split] = f"labels/{split}.txt"
    via_files = get_site("nih").load_index(site, split_files=files)
    a = via_files.drop(columns="path").sort_values("image_id").reset_index(drop=True)
    b = index.drop(columns="path").sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_views_filter(root: Path, index: pd.DataFrame) -> None:
    pa = get_site("nih").load_index(root, views=["PA"])
    assert len(pa) == int((index["view"] == "PA").sum()) > 0
    assert pa["view"].eq("PA").all()


def test_errors_name_the_problem(root: Path, tmp_path: Path) -> None:
    site = get_site("nih")
    with pytest.raises(DataError, match="does not exist"):
        site.load_index(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['val_frac'\].*val_fraction"):
        site.load_index(root, val_frac=0.1)
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / CSV_NAME).unlink()
    with pytest.raises(DataError, match="Data_Entry_2017"):
        site.load_index(broken)
    df = pd.read_csv(root / CSV_NAME).drop(columns=["Finding Labels"])
    df.to_csv(broken / CSV_NAME, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Finding Labels'\]; found \['Image Index'"):
        site.load_index(broken)
    text = (root / CSV_NAME).read_text().replace("No Finding", "Nothing", 1)
    (broken / CSV_NAME).write_text(text)
    with pytest.raises(DataError, match=r"row \d+: unknown finding label\(s\) \['Nothing'\]"):
        site.load_index(broken)


def test_missing_image_is_an_error_or_dropped(root: Path, tmp_path: Path) -> None:
    site_dir = tmp_path / "gap"
    shutil.copytree(root, site_dir)
    victim = sorted((site_dir / "images").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=victim.name):
        get_site("nih").load_index(site_dir)
    kept = get_site("nih").load_index(site_dir, missing="drop")
    assert victim.stem not in set(kept["image_id"])
    assert len(kept) == len(list((site_dir / "images").glob("*.png")))
    assert np.isin(kept["split"], ["train", "val", "test"]).all()


def test_duplicate_csv_rows_are_dropped_when_identical_and_rejected_when_conflicting(
    root: Path, index: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: an image listed twice in Data_Entry used to enter the index twice."""
    site_dir = tmp_path / "dup"
    shutil.copytree(root, site_dir)
    lines = (root / CSV_NAME).read_text().splitlines()
    (site_dir / CSV_NAME).write_text("\n".join([*lines, lines[1], lines[1]]) + "\n")
    with caplog.at_level("WARNING"):
        copies = get_site("nih").load_index(site_dir)
    pd.testing.assert_frame_equal(copies.drop(columns="path"), index.drop(columns="path"))
    assert f"{CSV_NAME}: dropped 2 identical duplicate row(s) of 1 image id(s)" in caplog.text

    name, findings = lines[2].split(",")[:2]
    other = "Hernia" if findings != "Hernia" else "Mass"
    conflicting = lines[2].replace(f"{name},{findings},", f"{name},{other},", 1)
    (site_dir / CSV_NAME).write_text("\n".join([*lines, lines[1], conflicting]) + "\n")
    with pytest.raises(DataError) as err:
        get_site("nih").load_index(site_dir)
    msg = str(err.value)
    assert str(site_dir / CSV_NAME) in msg and f"['{name}']" in msg and "Finding Labels" in msg
    assert "1 image id(s) listed more than once with conflicting values (2 rows)" in msg


def test_split_files_listing_an_image_in_two_splits_is_rejected(root: Path, index: pd.DataFrame, tmp_path: Path) -> None:
    site_dir = tmp_path / "twice"
    shutil.copytree(root, site_dir)
    (site_dir / "labels").mkdir()
    row = index.iloc[0]
    line = f"images/{Path(row['path']).name} " + " ".join(str(int(v)) for v in row[list(NIH14)])
    (site_dir / "labels" / "train.txt").write_text(f"{line}\n{line}\n")  # an identical copy is dropped
    (site_dir / "labels" / "test.txt").write_text(f"{line}\n")
    one = get_site("nih").load_index(site_dir, split_files={"train": "labels/train.txt"})
    assert list(one["image_id"]) == [row["image_id"]]
    with pytest.raises(DataError, match=rf"test.txt.*1 image id\(s\) listed more than once.*{row['image_id']}.*'split'"):
        get_site("nih").load_index(site_dir, split_files={"train": "labels/train.txt", "test": "labels/test.txt"})
