"""Dataset tables: a hand-computed case, NIH counts and PadChest Table 12 on the real CSVs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.labels import HARMONISED5, NIH14
from bench.data.stats import (
    AGE_ROWS,
    FEMALE,
    FEMALE_SCANS,
    PATIENTS,
    SCANS,
    dataset_stats,
    dataset_summary,
    format_table,
    label_counts,
    to_latex,
    to_markdown,
    write_tables,
)


def _toy() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame(
        {
            "image_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "patient_id": ["p1", "p1", "p2", "p3", "p4", "p4"],
            "split": ["train", "train", "train", "test", "test", "test"],
            "age": [20.0, 22.0, 60.0, 40.0, nan, 50.0],
            "sex": ["F", "F", "M", "F", None, "M"],
            "Atelectasis": [1.0, 0.0, nan, 1.0, 0.0, 0.0],
            "Edema": [0.0, 0.0, 0.0, nan, nan, nan],
        }
    )


def test_hand_computed_case() -> None:
    t = dataset_stats(_toy(), ["Atelectasis", "Edema"])
    assert list(t.columns) == ["All", "Train", "Test"]
    assert t.loc[PATIENTS].tolist() == [4.0, 2.0, 2.0]
    assert t.loc[SCANS].tolist() == [6.0, 3.0, 3.0]
    assert t.loc[AGE_ROWS[0], "Train"] == pytest.approx(34.0)  # (20+22+60)/3
    assert t.loc[AGE_ROWS[1], "Train"] == pytest.approx(np.std([20, 22, 60], ddof=1))
    assert t.loc[AGE_ROWS[0], "Test"] == pytest.approx(45.0)  # the NaN age is skipped
    assert (t.loc[AGE_ROWS[2], "All"], t.loc[AGE_ROWS[3], "All"]) == (20.0, 60.0)
    # Female: patients p1 (F), p2 (M), p3 (F), p4 (first non-null: M) -> 50 %.
    assert t.loc[FEMALE, "All"] == pytest.approx(50.0)
    assert t.loc[FEMALE, "Train"] == pytest.approx(50.0) and t.loc[FEMALE, "Test"] == pytest.approx(50.0)
    # Female share of scans: F,F,M | F,(none),M -> 3 of 5 known; train 2 of 3; test 1 of 2.
    assert t.loc[FEMALE_SCANS].tolist() == pytest.approx([60.0, 200 / 3, 50.0])
    assert list(t.index).index(FEMALE_SCANS) == list(t.index).index(FEMALE) - 1
    # Atelectasis: train 1 of 2 known (50 %), test 1 of 3, all 2 of 5.
    assert t.loc["Atelectasis [% of scans]"].tolist() == pytest.approx([40.0, 50.0, 100 / 3])
    assert t.loc["Edema [% of scans]", "Train"] == 0.0 and np.isnan(t.loc["Edema [% of scans]", "Test"])
    single = dataset_stats(_toy(), ["Edema"], by=None)
    assert list(single.columns) == ["All"]

    counts = label_counts(_toy(), ["Atelectasis", "Edema"], by="split")
    row = counts[(counts["split"] == "Test") & (counts["label"] == "Atelectasis")].iloc[0]
    assert (row["positive"], row["negative"], row["unknown"]) == (1, 2, 0)


def test_demographics_join_and_missing() -> None:
    toy = _toy()
    demo = toy[["image_id", "age", "sex"]]
    bare = toy.drop(columns=["age", "sex"])
    pd.testing.assert_frame_equal(dataset_stats(bare, ["Edema"], demographics=demo), dataset_stats(toy, ["Edema"]))
    no_demo = dataset_stats(bare, ["Edema"])
    assert no_demo.loc[[*AGE_ROWS, FEMALE_SCANS, FEMALE]].isna().all().all()
    with pytest.raises(ValueError, match="Mass"):
        dataset_stats(toy, ["Mass"])
    with pytest.raises(ValueError, match="lacks columns"):
        dataset_stats(bare, ["Edema"], demographics=toy[["image_id"]])


def test_renderers() -> None:
    t = dataset_stats(_toy(), ["Atelectasis", "Edema"])
    t.loc[SCANS, "All"] = 1861.0
    cells = format_table(t)
    assert cells.loc[SCANS, "All"] == "1,861" and cells.loc["Atelectasis [% of scans]", "Test"] == "33.3"
    assert cells.loc["Edema [% of scans]", "Test"] == "–"
    tex = to_latex(t, caption="PadChest 5% subset", label="tab:pc", bold=["Atelectasis"])
    lines = tex.splitlines()
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\caption{PadChest 5\% subset}" in tex and r"\label{tab:pc}" in tex
    assert r"\textbf{Atelectasis [\% of scans]} & \textbf{40.0}" in tex
    assert r"Edema [\% of scans] & 0.0" in tex
    assert r"\begin{tabular}{lrrr}" in tex
    md = to_markdown(t, bold=["Edema"])
    md_lines = md.splitlines()
    assert md_lines[0] == "| Statistic | All | Train | Test |" and md_lines[1] == "| :--- | ---: | ---: | ---: |"
    assert len(md_lines) == 2 + len(t)
    assert "| **Edema [% of scans]** | **0.0** | **0.0** | **–** |" in md_lines


def test_write_tables(tmp_path: Path) -> None:
    t = dataset_stats(_toy(), ["Atelectasis"])
    csv, tex, md = write_tables(t, tmp_path / "tables" / "toy", bold=["Atelectasis"])
    back = pd.read_csv(csv, index_col=0)
    np.testing.assert_allclose(back.to_numpy(), t.to_numpy(), equal_nan=True)
    assert tex.read_text().startswith(r"\begin{table}") and md.read_text().startswith("| Statistic")


def test_summary_table() -> None:
    toy = _toy()
    s = dataset_summary({"toy": toy, "big": pd.DataFrame({"patient_id": range(112_120), "split": "train"})},
                        used={"big": 100_000})  # fmt: skip
    assert s.loc[0].tolist() == ["toy", 6, 4, "train 3 / test 3", "6/6"]
    assert s.loc[1, "Used/avail."] == "100k/112k"


# ------------------------------------------------------------------ real CSVs


def _xrv_file(name: str) -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (test extra) ships the real label CSVs; not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} not in this torchxrayvision version")
    return path


@pytest.mark.slow
def test_nih_counts_exact() -> None:
    """docs/DATA_AND_METRICS.md §1 per-label counts of Data_Entry_2017_v2020.csv (independent tally)."""
    csv = pd.read_csv(_xrv_file("Data_Entry_2017_v2020.csv.gz"))
    nih_to_canonical = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening"}
    tokens = csv["Finding Labels"].str.split("|")
    index = pd.DataFrame({
        "image_id": csv["Image Index"], "patient_id": csv["Patient ID"], "split": "train",
        "age": csv["Patient Age"].astype(float), "sex": csv["Patient Gender"],
    })  # fmt: skip
    for name in NIH14:
        token = next((k for k, v in nih_to_canonical.items() if v == name), name)
        index[name] = tokens.map(lambda ts, t=token: float(t in ts))
    counts = label_counts(index, "nih14").set_index("label")["positive"].to_dict()
    assert counts == {
        "Infiltration": 19_894, "Pleural Effusion": 13_317, "Atelectasis": 11_559, "Nodule": 6_331,
        "Mass": 5_782, "Pneumothorax": 5_302, "Consolidation": 4_667, "Pleural Thickening": 3_385,
        "Cardiomegaly": 2_776, "Emphysema": 2_516, "Edema": 2_303, "Fibrosis": 1_686,
        "Pneumonia": 1_431, "Hernia": 227,
    }  # fmt: skip
    t = dataset_stats(index, "nih14", by=None)
    assert t.loc[SCANS, "All"] == 112_120 and t.loc[PATIENTS, "All"] == 30_805
    assert t.loc[AGE_ROWS[3], "All"] == 95.0
    assert t.loc["Pleural Effusion [% of scans]", "All"] == pytest.approx(100 * 13_317 / 112_120)
    # Female share both ways, tallied independently (the paper's "% of patients" is the scan share)
    female_scans = 100 * (csv["Patient Gender"] == "F").sum() / len(csv)
    female_patients = 100 * (csv.groupby("Patient ID")["Patient Gender"].first() == "F").mean()
    assert t.loc[FEMALE_SCANS, "All"] == pytest.approx(female_scans) and round(female_scans, 1) == 43.5
    assert t.loc[FEMALE, "All"] == pytest.approx(female_patients) and round(female_patients, 1) == 46.0
    assert t.loc[AGE_ROWS[0], "All"] == pytest.approx(csv["Patient Age"].mean())


@pytest.mark.slow
def test_padchest_table12() -> None:
    from bench.data.sites.padchest import label_matrix, read_labels_csv, select_rows

    path = _xrv_file("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    sub = select_rows(read_labels_csv(path), projections=["PA", "AP"], method_projection="manual", image_dirs=[0])
    index = pd.DataFrame({
        "image_id": sub["ImageID"].to_numpy(), "patient_id": sub["PatientID"].to_numpy(), "split": "test",
        "sex": sub["PatientSex_DICOM"].to_numpy(),
    })  # fmt: skip
    index = pd.concat([index, label_matrix(sub["Labels"], HARMONISED5).reset_index(drop=True)], axis=1)
    table = dataset_stats(index, "harmonised5", by=None)
    shown = format_table(table)["All"]
    assert shown[SCANS] == "1,861"  # paper: 1,861
    assert shown[PATIENTS] == "1,758"  # paper prints 1,754 (see the adapter's notes)
    assert shown["Cardiomegaly [% of scans]"] == "8.7"
    assert shown["Consolidation [% of scans]"] == "0.7"
    assert shown["Edema [% of scans]"] == "0.0"
    assert shown["Pleural Effusion [% of scans]"] == "2.8"
    assert shown["Atelectasis [% of scans]"] == "5.6"  # paper 5.7 = 106 subtype mentions / 1,861
    assert shown[FEMALE] == "55.0"  # paper 54.7
    assert shown[FEMALE_SCANS] == "54.8"  # closer to the paper's 54.7: it counts scans


def test_site_stats_on_synthetic_padchest(tmp_path: Path) -> None:
    from bench.data.sites.padchest import demographics
    from bench.data.stats import site_stats
    from bench.data.synthetic.padchest import write

    write(tmp_path, seed=2, scale=0.03)
    t = site_stats("padchest", tmp_path, "harmonised5", options={"projections": ["PA", "AP"]}, by=None)
    demo = demographics(tmp_path)
    csv = pd.read_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", dtype={"ImageID": str})
    from bench.data.sites.padchest import KNOWN_BAD_IMAGES

    frontal = csv[csv["Projection"].isin(["PA", "AP"]) & ~csv["ImageID"].isin(list(KNOWN_BAD_IMAGES))]
    assert t.loc[SCANS, "All"] == len(frontal)
    ages = demo.set_index("image_id").loc[frontal["ImageID"], "age"]
    assert t.loc[AGE_ROWS[0], "All"] == pytest.approx(ages.mean())
    assert 0.0 <= t.loc[FEMALE, "All"] <= 100.0
