"""COVIDx CT adapter on the generated Kaggle layout; patient-id rules; crop boxes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.sites import INDEX_COLUMNS, DataError, get_site
from bench.data.sites.covidx import patient_from_filename
from bench.data.synthetic import generate

CLASSES = ["Normal", "Pneumonia", "COVID-19"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn"), seed=0, sites=("covidx",), scale=0.3)["covidx"]


@pytest.mark.parametrize(
    "name, patient, by_rule",
    [
        ("NCP_341_1834_0022.png", "CNCB-NCP-341", True),  # class_patient_scan_slice
        ("CP_341_1834_0022.png", "CNCB-CP-341", True),
        ("LIDC-IDRI-0559-1.3.6.1.4.1.14519.5.2.1.6279.6001.1234-0100.png", "LIDC-IDRI-0559", True),
        ("COVIDCTMD-P002-IM0025.png", "COVIDCTMD-P002", True),
        ("volume-covid19-A-0070_ct-012.png", "volume-covid19-A-0070", True),
        ("normalcd3_patient420_slice12.png", "normalcd3_patient420", True),
        ("radiopaedia_40_86625_0-0042.png", "radiopaedia_40_86625_0", False),  # fallback: drop the slice number
    ],
)
def test_patient_id_rules(name: str, patient: str, by_rule: bool) -> None:
    assert patient_from_filename(name) == (patient, by_rule)


def test_index_matches_split_files(root: Path) -> None:
    df = get_site("covidx").load_index(root)
    assert list(df.columns) == list(INDEX_COLUMNS) + CLASSES
    total = 0
    for split in ("train", "val", "test"):
        lines = [ln.split() for ln in (root / f"{split}_COVIDx_CT-3A.txt").read_text().splitlines() if ln]
        total += len(lines)
        part = df[df["split"] == split].set_index("image_id")
        for name, label, *_ in lines:
            row = part.loc[Path(name).stem]
            assert [row[c] for c in CLASSES] == [float(k == int(label)) for k in range(3)]
    assert len(df) == total == len(list((root / "3A_images").glob("*.png")))
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()  # patient-disjoint splits
    assert df["view"].eq("axial").all() and df["height"].eq(128).all()


def test_crop_boxes_enclose_the_body(root: Path) -> None:
    crops = get_site("covidx").load_crops(root)
    df = get_site("covidx").load_index(root).set_index("image_id")
    for rec in crops.head(10).itertuples():
        img = np.asarray(Image.open(df.loc[rec.image_id, "path"]), dtype=float) / 255.0
        assert 0 <= rec.xmin < rec.xmax <= img.shape[1] and 0 <= rec.ymin < rec.ymax <= img.shape[0]
        outside = img.copy()
        outside[rec.ymin : rec.ymax, rec.xmin : rec.xmax] = 0.0
        outside[rec.ymax + 2 :, :] = 0.0  # the scanner table below the body is not cropped in
        assert outside.max() < 0.15
        # tight: every edge of the box touches the body
        assert min(img[rec.ymin, rec.xmin : rec.xmax].max(), img[rec.ymax - 1, rec.xmin : rec.xmax].max(),
                   img[rec.ymin : rec.ymax, rec.xmin].max(), img[rec.ymin : rec.ymax, rec.xmax - 1].max()) > 0.1  # fmt: skip


def test_classes_differ_in_lung_density(root: Path) -> None:
    """COVID-19 (ground glass) and pneumonia (consolidation) slices are brighter than normal."""
    df = get_site("covidx").load_index(root)
    means = {c: np.mean([np.asarray(Image.open(p), dtype=float).mean() for p in df.loc[df[c] == 1, "path"]]) for c in CLASSES}
    assert means["Pneumonia"] > means["Normal"] and means["COVID-19"] > means["Normal"]


def test_patient_map_and_errors(root: Path, tmp_path: Path) -> None:
    site = get_site("covidx")
    names = [ln.split()[0] for s in ("train", "val", "test") for ln in (root / f"{s}_COVIDx_CT-3A.txt").read_text().splitlines() if ln]
    (tmp_path / "map.csv").write_text("filename,patient_id\n" + "\n".join(f"{n},P{i % 7}" for i, n in enumerate(names)) + "\n")
    mapped = site.load_index(root, patient_map=str(tmp_path / "map.csv"))
    assert set(mapped["patient_id"]) == {f"P{i}" for i in range(7)}
    with pytest.raises(DataError, match=r"no split files for version '2A'.*found versions \['3A'\]"):
        site.load_index(root, version="2A")
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    with (broken / "val_COVIDx_CT-3A.txt").open("a") as fh:
        fh.write("extra.png 3 0 0 10 10\n")
    with pytest.raises(DataError, match=r"val_COVIDx_CT-3A.txt line \d+: class 3 is not"):
        site.load_index(broken)
    (broken / "val_COVIDx_CT-3A.txt").write_text("only_two_fields.png 1\n")
    with pytest.raises(DataError, match=r"line 1: expected '<filename> <class>"):
        site.load_index(broken)


def test_duplicate_slices_dropped_when_identical_rejected_when_conflicting(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14.6: a slice listed twice (same line), or in two split files / under two classes."""
    site = get_site("covidx")
    expected = site.load_index(root)
    dup = tmp_path / "dup"
    shutil.copytree(root, dup)
    train = (dup / "train_COVIDx_CT-3A.txt").read_text().splitlines()
    with (dup / "train_COVIDx_CT-3A.txt").open("a") as fh:
        fh.write(train[0] + "\n")
    with caplog.at_level("WARNING"):
        assert site.load_index(dup).drop(columns="path").equals(expected.drop(columns="path"))
    assert "dropped 1 identical duplicate row(s) of 1 image id(s)" in caplog.text
    name, label, *box = train[0].split()
    (dup / "train_COVIDx_CT-3A.txt").write_text("\n".join(train) + "\n")
    with (dup / "test_COVIDx_CT-3A.txt").open("a") as fh:
        fh.write(f"{name} {(int(label) + 1) % 3} {' '.join(box)}\n")
    with pytest.raises(DataError, match=rf"test_COVIDx_CT-3A.txt.*1 image id\(s\) listed more than once.*{name}.*'label', 'split'"):
        site.load_index(dup)
