"""`bench data prepare --executor slurm` on the real test cluster (``tests/slurm_cluster.py``):
one array task per unfinished shard, a merge job ``afterok`` on the array, the cache committed
only by the merge and bit-identical to a local prepare; a resubmission does only the shards that
are left; a failing task leaves no cache and its merge job is not left in the queue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def _bench(cluster: SlurmCluster, *args: object) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "OMP_NUM_THREADS": "1"}
    env.pop("BENCH_DATA_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    from bench.data.synthetic.padchest import write

    write(tmp_path / "pc", seed=2, scale=0.02)
    return tmp_path / "pc"


def test_prepare_as_a_job_array_then_merge(slurm: SlurmCluster, site: Path, tmp_path: Path) -> None:
    from bench.data.cache import MANIFEST, prepare, prepare_shard
    from bench.data.index import load_index
    from bench.data.sources import cache_dir_for, site_read_options

    cache = tmp_path / "c"
    out = cache_dir_for(cache, "padchest", {}) / "size16"
    index = load_index("padchest", str(site), {}, None)
    png16 = site_read_options("padchest").get("png16", "container")
    # shard 1 of 3 was finished earlier (e.g. by a task of an earlier submission): only 0 and 2 are submitted
    prepare_shard(index, out, 16, shard=1, n_shards=3, png16=png16)
    args = ["data", "prepare", "padchest", "--root", site, "--size", "16", "--cache-dir", cache, "--executor", "slurm"]
    res = _bench(slurm, *args, "--n-shards", "3", "--wait")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "submitted 2 of 3 shard(s)" in res.stdout and "cache committed" in res.stdout
    array = res.stdout.split(" as array ")[1].split(",")[0]
    merge_job = res.stdout.split("merge job ")[1].split(" ")[0]
    merged = _scontrol(merge_job)
    tasks = [_scontrol(f"{array}_{i}") for i in range(2)]
    assert merged.get("JobState") == "COMPLETED" and all(t.get("JobState") == "COMPLETED" for t in tasks)
    assert all(t.get("ArrayJobId") == array for t in tasks)  # the shards ran as one array
    # afterok (SLURM clears a met dependency, so check the order): the merge started after every task ended
    assert all(merged["StartTime"] >= t["EndTime"] for t in tasks), (merged["StartTime"], [t["EndTime"] for t in tasks])

    local = prepare(index, tmp_path / "local", 16, png16=png16)
    assert json.loads((out / MANIFEST).read_text()) == local
    for name in ("images_16.npy", "report.json"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert not (out / "shards").exists()

    again = _bench(slurm, *args, "--wait")
    assert again.returncode == 0 and "is complete; nothing to submit" in again.stdout


def test_a_failing_task_commits_nothing(slurm: SlurmCluster, site: Path, tmp_path: Path) -> None:
    from bench.data.cache import MANIFEST

    victim = sorted(site.rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated: fails under --on-error fail
    cache = tmp_path / "c"
    args = ["data", "prepare", "padchest", "--root", site, "--size", "16", "--cache-dir", cache, "--executor", "slurm"]
    res = _bench(slurm, *args, "--n-shards", "2", "--on-error", "fail", "--wait")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "without committing the cache" in res.stderr
    assert not list(cache.rglob(MANIFEST))
    merge_job = res.stdout.split("merge job ")[1].split(" ")[0]
    state = _scontrol(merge_job).get("JobState", "")
    assert state in ("CANCELLED", ""), state  # not left pending on a dependency that can never be met
