"""`generate`: determinism, per-site independence, atomic idempotent output, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.data.errors import DataError
from bench.data.synthetic import MARKER, generate, read_marker

SCALE = 0.05
SITES = ("nih", "oct")


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> file bytes for every file under `root`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def seed0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed0")
    generate(out, seed=0, sites=SITES, scale=SCALE)
    return out


def test_same_seed_gives_byte_identical_files(seed0: Path, tmp_path: Path) -> None:
    roots = generate(tmp_path, seed=0, sites=SITES, scale=SCALE)
    assert roots == {s: tmp_path / s for s in SITES}
    for site in SITES:
        a, b = tree(seed0 / site), tree(tmp_path / site)
        assert len(a) > 10
        assert a == b


def test_different_seed_differs(seed0: Path, tmp_path: Path) -> None:
    generate(tmp_path, seed=1, sites=("nih",), scale=SCALE)
    a, b = tree(seed0 / "nih"), tree(tmp_path / "nih")
    shared = set(a) & set(b)
    assert shared  # same layout conventions
    assert any(a[k] != b[k] for k in shared if k.endswith(".png"))


def test_a_site_does_not_depend_on_the_others(seed0: Path, tmp_path: Path) -> None:
    generate(tmp_path, seed=0, sites=("oct",), scale=SCALE)
    assert tree(tmp_path / "oct") == tree(seed0 / "oct")


def test_marker_is_written_and_counts_match_files(seed0: Path) -> None:
    marker = read_marker(seed0 / "nih")
    assert marker is not None and marker["seed"] == 0 and marker["scale"] == SCALE
    pngs = list((seed0 / "nih" / "images").glob("*.png"))
    assert marker["counts"]["images"] == len(pngs)
    oct_marker = json.loads((seed0 / "oct" / MARKER).read_text())
    jpegs = list((seed0 / "oct").rglob("*.jpeg"))
    assert sum(oct_marker["counts"].values()) == len(jpegs)
    assert not [p for p in seed0.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_complete_site_is_skipped(tmp_path: Path) -> None:
    generate(tmp_path, seed=0, sites=("oct",), scale=SCALE)
    files = sorted((tmp_path / "oct").rglob("*.jpeg"))
    stamps = [f.stat().st_mtime_ns for f in files]
    victim = files[0]
    victim.write_bytes(b"tampered")  # a rewrite would restore it
    generate(tmp_path, seed=0, sites=("oct",), scale=SCALE)
    assert victim.read_bytes() == b"tampered"
    assert [f.stat().st_mtime_ns for f in files[1:]] == stamps[1:]


def test_existing_folder_from_other_seed_or_without_marker_is_an_error(tmp_path: Path) -> None:
    generate(tmp_path, seed=0, sites=("oct",), scale=SCALE)
    with pytest.raises(DataError, match="seed=0"):
        generate(tmp_path, seed=1, sites=("oct",), scale=SCALE)
    (tmp_path / "nih").mkdir()
    with pytest.raises(DataError, match=MARKER):
        generate(tmp_path, seed=0, sites=("nih",), scale=SCALE)


def test_unknown_site_and_bad_scale() -> None:
    with pytest.raises(DataError, match="no synthetic writer for site 'nope'"):
        generate(Path("/nonexistent-should-not-be-created"), sites=("nope",), scale=SCALE)
    with pytest.raises(ValueError, match="scale"):
        generate(Path("/nonexistent-should-not-be-created"), scale=0)


def test_concurrent_generation_keeps_the_first_complete_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a parallel job finishing the site between our check and our rename."""
    import bench.data.synthetic as synthetic

    other = tmp_path / "other"
    generate(other, seed=0, sites=("oct",), scale=SCALE)
    real_writer = synthetic._writer("oct")

    def racing_writer(root: Path, *, seed: int, scale: float) -> dict[str, int]:
        counts = real_writer(root, seed=seed, scale=scale)
        import shutil

        shutil.copytree(other / "oct", tmp_path / "out" / "oct")  # the other job wins the race
        return counts

    monkeypatch.setattr(synthetic, "_writer", lambda site: racing_writer)
    roots = generate(tmp_path / "out", seed=0, sites=("oct",), scale=SCALE)
    assert tree(roots["oct"]) == tree(other / "oct")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


ALL_SITES = ("nih", "oct", "mimic", "covidx", "imagenet", "irma", "generic")


@pytest.mark.slow
def test_every_generated_site_is_read_by_its_adapter_and_the_pixel_reader(tmp_path: Path) -> None:
    """End to end: writer -> adapter (default options) -> `read_image` on every image's
    first and last row; shapes agree with the index's header sizes, values in [0, 1]."""
    from bench.data.io import read_image
    from bench.data.sites import check_index, get_site

    roots = generate(tmp_path, seed=5, sites=ALL_SITES, scale=0.08)
    for site, root in roots.items():
        df = check_index(get_site(site).load_index(root), site)
        assert len(df) > 3, site
        assert (df["patient_id"].str.len() > 0).all(), site
        for rec in (df.iloc[0], df.iloc[-1]):
            img = read_image(rec["path"])
            assert img.ndim == 2 and img.shape == (rec["height"], rec["width"]), site
            assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.max()) > 0.3, site


def test_signal_is_part_of_the_generation(seed0: Path, tmp_path: Path) -> None:
    """A folder generated at the default signal keeps a signal-free marker (older folders stay
    valid); another signal gives other pixels, is recorded, and is never mixed with the default."""
    assert "signal" not in read_marker(seed0 / "nih")
    assert generate(seed0, seed=0, sites=SITES, scale=SCALE, signal=1.0)  # the default: skipped, fine
    with pytest.raises(DataError, match="signal=1.0 .*not .*signal=2.0"):
        generate(seed0, seed=0, sites=["nih"], scale=SCALE, signal=2.0)
    roots = generate(tmp_path, seed=0, sites=["nih"], scale=SCALE, signal=2.0)
    assert read_marker(roots["nih"])["signal"] == 2.0
    a, b = tree(seed0 / "nih"), tree(roots["nih"])
    assert a.keys() == b.keys() - {MARKER} | {MARKER}
    assert any(a[k] != b[k] for k in a if k.endswith(".png"))
    with pytest.raises(ValueError, match="signal"):
        generate(tmp_path / "x", seed=0, sites=["nih"], scale=SCALE, signal=-1.0)


def test_a_folder_from_an_older_writer_version_is_reported(tmp_path: Path) -> None:
    """The OCT writer's output changed (more test scans) for the same seed and scale: a folder
    written by the previous version (marker without `version`) must not be reused silently."""
    from bench.data.synthetic import oct as oct_writer

    assert oct_writer.WRITER_VERSION > 1
    root = generate(tmp_path, seed=0, sites=["oct"], scale=SCALE)["oct"]
    assert read_marker(root)["version"] == oct_writer.WRITER_VERSION
    generate(tmp_path, seed=0, sites=["oct"], scale=SCALE)  # same version: skipped
    old = read_marker(root)
    del old["version"]
    (root / MARKER).write_text(json.dumps(old))
    with pytest.raises(DataError, match="writer version 1, not .* version 2"):
        generate(tmp_path, seed=0, sites=["oct"], scale=SCALE)
