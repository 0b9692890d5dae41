"""submitit on the suite's real single-node SLURM cluster (tests/slurm_cluster.py).

These tests pin the scheduler behaviour the SLURM executor builds on: results come back, arrays run
every task, ``afterok`` orders jobs and cancels dependants of a failure, a requeued job runs again
(and submitit's checkpoint-and-requeue protocol works), and a 2-task job gets two torch.distributed
ranks. Job states come from ``scontrol`` (the cluster has no accounting database, so ``sacct`` -
which submitit's watcher calls - fails; see test_sacct_is_off_so_states_come_from_scontrol).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from slurm_cluster import SlurmCluster, parse_slurm_time, require_slurm

pytestmark = pytest.mark.slurm

# Jobs unpickle the submitted functions in a fresh interpreter where this test module (imported by
# pytest from tests/, not from an installed package) cannot be imported: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executor(folder: Path, cluster: SlurmCluster, **params: object) -> submitit.AutoExecutor:
    """An AutoExecutor on the test cluster (fails instead of falling back to a local executor)."""
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(timeout_min=10, slurm_partition=cluster.partition, cpus_per_task=1, **params)
    return ex


def _result(job: submitit.Job, cluster: SlurmCluster, timeout: float = 120.0) -> object:
    """The job's result once SLURM says it ended (job.result() alone would wait forever for a job that
    died outside Python: without sacct submitit cannot see that)."""
    cluster.wait_done(job.job_id, timeout=timeout)
    return job.result()


# ------------------------------------------------------------------------------------------ job bodies
def add(a: int, b: int) -> tuple[int, str]:
    """Return the sum and the SLURM job id the body ran under."""
    import os

    return a + b, os.environ["SLURM_JOB_ID"]


def square(x: int) -> tuple[int, str]:
    """Return x**2 and the array task id the body ran under."""
    import os

    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID", "")


def write_after(path: str, seconds: float) -> float:
    """Sleep, then write a marker; return the time the marker was written."""
    import time as _t

    _t.sleep(seconds)
    Path(path).write_text("upstream done")
    return _t.time()


def read_marker(path: str) -> str:
    """Return the upstream's marker (fails if the upstream has not finished)."""
    return Path(path).read_text()


def fail(message: str) -> None:
    """A stage that fails."""
    raise RuntimeError(message)


def touch(path: str) -> str:
    """Record that this body ran."""
    Path(path).write_text("ran")
    return "ran"


def count_starts(path: str, wait_for_starts: int, timeout_s: float) -> int:
    """Append one line per start; wait (up to timeout_s) until started ``wait_for_starts`` times.

    The first run blocks until the test requeues the job; the second run sees 2 lines and returns.
    """
    import time as _t

    p = Path(path)
    with p.open("a") as f:
        f.write("start\n")
    deadline = _t.time() + timeout_s
    while len(p.read_text().splitlines()) < wait_for_starts and _t.time() < deadline:
        _t.sleep(0.2)
    return len(p.read_text().splitlines())


class Countdown(submitit.helpers.Checkpointable):
    """Counts ``steps`` ticks, one per 0.5 s, appending each to a file; checkpointable in submitit's
    protocol (on USR2 the object, with its progress, is pickled and the job requeued)."""

    def __init__(self) -> None:
        self.done_steps = 0

    def __call__(self, path: str, steps: int) -> int:
        import time as _t

        with Path(path).open("a") as f:
            f.write(f"start at {self.done_steps}\n")
        while self.done_steps < steps:
            _t.sleep(0.5)
            self.done_steps += 1
            with Path(path).open("a") as f:
                f.write(f"tick {self.done_steps}\n")
        return self.done_steps


def all_reduce_rank() -> dict[str, object]:
    """Join a gloo process group through submitit's TorchDistributedEnvironment and all-reduce."""
    import torch
    import torch.distributed as dist

    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    job_env = submitit.JobEnvironment()
    dist.init_process_group(backend="gloo", init_method="env://")
    try:
        t = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(t)
        return {
            "rank": env.rank,
            "world_size": env.world_size,
            "local_rank": env.local_rank,
            "job_env_rank": job_env.global_rank,
            "sum": t.item(),
        }
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ tests
def test_function_job_returns_its_result(slurm: SlurmCluster, tmp_path: Path) -> None:
    job = _executor(tmp_path, slurm).submit(add, 2, 3)
    value, job_id = _result(job, slurm)
    assert value == 5
    assert job_id == job.job_id
    assert slurm.state(job.job_id) == "COMPLETED"
    start, end = slurm.times(job.job_id)
    assert start is not None and end is not None and start <= end


def test_sacct_is_off_so_states_come_from_scontrol(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Without an accounting database sacct fails; submitit bypasses the error (a warning) and reports
    UNKNOWN, so job.done() relies on the result pickle alone. scontrol has the real state."""
    job = _executor(tmp_path, slurm).submit(fail, "boom")
    slurm.wait_done(job.job_id)
    sacct = slurm.run(["sacct", "-j", job.job_id], check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr
    assert job.get_info(mode="force") == {}
    assert job.state == "UNKNOWN"
    assert slurm.state(job.job_id) == "FAILED"  # submitit re-raises in the job: non-zero exit
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom"):
        job.result()


def test_job_array_runs_every_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    ex = _executor(tmp_path, slurm, slurm_array_parallelism=3)
    jobs = ex.map_array(square, [1, 2, 3])
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(3)]
    slurm.wait_done(array_id)
    assert [j.result() for j in jobs] == [(1, "0"), (4, "1"), (9, "2")]
    records = slurm.jobs(array_id)
    assert sorted(r["ArrayTaskId"] for r in records) == ["0", "1", "2"]
    assert {r["JobState"] for r in records} == {"COMPLETED"}


def test_afterok_dependant_starts_after_upstream_ended(slurm: SlurmCluster, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    ex = _executor(tmp_path, slurm)
    up = ex.submit(write_after, str(marker), 2.0)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{up.job_id}"})
    down = ex.submit(read_marker, str(marker))
    # Held back by the dependency while the upstream runs (its body sleeps 2 s).
    _wait_for(lambda: slurm.job(down.job_id)["Reason"] == "Dependency", 10, "the dependant to wait on its upstream")
    assert slurm.state(down.job_id) == "PENDING"
    assert _result(down, slurm) == "upstream done"
    assert slurm.state(up.job_id) == "COMPLETED" and slurm.state(down.job_id) == "COMPLETED"
    up_start, up_end = slurm.times(up.job_id)
    down_start, _ = slurm.times(down.job_id)
    assert up_start is not None and up_end is not None and down_start is not None
    assert down_start >= up_end, (up_start, up_end, down_start)


def test_dependants_of_a_failed_job_are_cancelled_and_never_run(slurm: SlurmCluster, tmp_path: Path) -> None:
    ex = _executor(tmp_path, slurm)
    up = ex.submit(fail, "upstream broke")
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{up.job_id}"})
    child = ex.submit(touch, str(tmp_path / "child_ran"))
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{child.job_id}"})
    grandchild = ex.submit(touch, str(tmp_path / "grandchild_ran"))
    ex.update_parameters(slurm_additional_parameters={})
    independent = ex.submit(touch, str(tmp_path / "independent_ran"))

    assert _result(independent, slurm) == "ran"
    assert slurm.wait_done(up.job_id)["JobState"] == "FAILED"
    for dependant in (child, grandchild):
        rec = slurm.wait_done(dependant.job_id, timeout=30)
        assert rec["JobState"] == "CANCELLED", rec
        assert rec["Reason"] == "DependencyNeverSatisfied", rec
        assert not Path(rec["StdOut"]).exists(), rec  # no log: SLURM never launched it
    assert not (tmp_path / "child_ran").exists() and not (tmp_path / "grandchild_ran").exists()
    assert not child.paths.result_pickle.exists()
    # submitit cannot tell (no sacct): the cancelled job is never "done" for it.
    assert not child.done(force_check=True)


@pytest.mark.slow
def test_scontrol_requeue_runs_a_running_job_again(slurm: SlurmCluster, tmp_path: Path) -> None:
    starts = tmp_path / "starts.txt"
    job = _executor(tmp_path, slurm).submit(count_starts, str(starts), 2, 90.0)
    slurm.wait_state(job.job_id, "RUNNING", timeout=30)
    _wait_for(lambda: starts.exists() and starts.read_text().count("start") == 1, 30, "the first start")
    t0 = time.monotonic()
    slurm.requeue(job.job_id)
    assert _result(job, slurm, timeout=90) == 2
    rec = slurm.job(job.job_id)
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "1"
    print(f"requeue -> result in {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
def test_usr2_preemption_checkpoints_and_resumes(slurm: SlurmCluster, tmp_path: Path) -> None:
    """submitit's protocol: on USR2 the Checkpointable pickles itself, requeues the job with
    ``scontrol requeue``, and the restart continues from the checkpointed progress."""
    log = tmp_path / "ticks.txt"
    job = _executor(tmp_path, slurm).submit(Countdown(), str(log), 12)
    _wait_for(lambda: log.exists() and "tick 3" in log.read_text(), 60, "three ticks")
    job._interrupt(timeout=False)  # what SLURM does on preemption: SIGTERM, then the USR2 signal
    assert _result(job, slurm, timeout=90) == 12
    lines = log.read_text().splitlines()
    restarts = [line for line in lines if line.startswith("start at")]
    assert len(restarts) == 2 and restarts[0] == "start at 0"
    resumed_at = int(restarts[1].split()[-1])
    assert resumed_at >= 3  # resumed from the checkpoint, not from scratch
    assert slurm.job(job.job_id)["Restarts"] == "1"


@pytest.mark.slow
def test_two_tasks_form_a_gloo_group(slurm: SlurmCluster, tmp_path: Path) -> None:
    ex = _executor(tmp_path, slurm, nodes=1, tasks_per_node=2)
    job = ex.submit(all_reduce_rank)
    slurm.wait_done(job.job_id, timeout=180)
    results = job.results()
    assert sorted(r["rank"] for r in results) == [0, 1]
    for r in results:
        assert r["world_size"] == 2 and r["local_rank"] == r["rank"] == r["job_env_rank"]
        assert r["sum"] == 3.0
    assert slurm.state(job.job_id) == "COMPLETED"


def test_extra_cpus_run_small_jobs_side_by_side(tmp_path: Path) -> None:
    """A second, private cluster whose node advertises more CPUs than the machine has
    (``SlurmdParameters=config_overrides``): that many 1-CPU jobs run at once, as a concurrency test
    needs; the session cluster is unaffected and both are torn down independently."""
    require_slurm()
    n = (os.cpu_count() or 1) + 3
    with SlurmCluster(cpus=n) as cluster:
        ids = [cluster.sbatch(wrap="sleep 3") for _ in range(n)]
        _wait_for(lambda: all(cluster.state(i) != "PENDING" for i in ids), 30, "all jobs to start")
        for i in ids:
            cluster.wait_done(i, timeout=60)
        jobs = cluster.all_jobs()
        assert {jobs[i]["JobState"] for i in ids} == {"COMPLETED"}
        starts = [parse_slurm_time(jobs[i]["StartTime"]) for i in ids]
        ends = [parse_slurm_time(jobs[i]["EndTime"]) for i in ids]
        assert max(starts) < min(ends)  # every job started before any ended: they overlapped
        root = cluster.root
    assert root is not None and not root.exists()


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
