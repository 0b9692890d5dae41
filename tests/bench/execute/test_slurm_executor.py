"""The SLURM executor end to end on a real single-node SLURM (``tests/slurm_cluster.py``).

Every test drives the real command line (`bench run/status/cancel/sync` in subprocesses)
against real `slurmctld`/`slurmd` daemons, so what is checked is what a user gets:
submitit job arrays with ``afterok`` dependencies, `scontrol requeue` mid-training,
failure isolation, the manifest, deferred MLflow events and DDP under `srun`.

The module runs on its own cluster with 16 CPU slots (more than the machine has: the jobs are
tiny, one slot each), so that 16 evaluations can run at once. The expensive run is shared through
the module fixture ``main_run``: the matrix ``sm`` (MAE pre-training -> fine-tune x 2 seeds ->
evaluate x 8 report columns = 19 stages; the 16 evaluations are 2 job arrays of 8) through
``--executor slurm --wait`` on the SQLite tracking default (its pre-training is requeued once
mid-way, with ``scontrol requeue``) and, side by side, through the local executor with one thread
(the same thread count the SLURM jobs get from ``cpus_per_task: 1``): the reference for predictions
and weights. Every claim about that run (bit-identical predictions, ``afterok`` order, requeue
resume, 16 concurrent jobs with MLflow events imported exactly once, nothing submitted twice) reads
it instead of paying for a run of its own.

Every `bench` command pays seconds of imports and every SLURM job again (torch, timm, scikit-learn),
so the tests use as few commands and jobs as their claims allow; commands whose claim is not about
MLflow pass ``--no-mlflow``. DDP vs one process after 8 epochs measured max |dw| = 6e-8 (key biases
1.6e-6), well inside the stated bounds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from slurm_cluster import SlurmCluster, SlurmClusterError, parse_slurm_time, require_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
SYNTH = {"seed": 3, "scale": 0.25}
# Enough pre-training steps that `scontrol requeue` lands mid-way (a checkpoint exists, not done yet).
PRETRAIN_EPOCHS = 8
ONE_CPU = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}
EVAL_TARGETS = [
    {"column": "NIH", "site": "nih", "split": "test"},
    {"column": "CX", "site": "chexpert", "split": "val", "site_options": {"split": "valid"}, "classes": "harmonised5"},
]
# The main run's 8 report columns (x 2 seeds = 16 evaluations, 2 arrays of 8): the two above, and
# CheXpert's valid/train splits under its label-uncertainty policies (NIH train/val would overlap the
# fine-tuning set: the leakage audit refuses that).
MAIN_TARGETS = EVAL_TARGETS + [
    {"column": f"CX {split} U-{u}", "site": "chexpert", "split": as_split, "site_options": {"split": split, "uncertainty": u}}
    for split, as_split, u in [("valid", "val", "ones"), ("valid", "val", "zeros"), ("valid", "val", "mixed"),
                               ("train", "train", "ignore"), ("train", "train", "ones"), ("train", "train", "zeros")]
]
# Slots of the module's cluster: enough for every evaluation of the main run at once.
CLUSTER_CPUS = 16
# DDP (2 gloo ranks x 8 images) vs one process x 16 images: the bound of tests/bench/train/test_distributed.py
# (float rounding of the all-reduced gradient; attention key biases get no gradient signal and only see
# AdamW's normalisation of rounding noise, hence their looser bound).
DDP_TOL = 5e-6
DDP_TOL_KEY_BIAS = 1e-4
RUN_TIMEOUT = 900


# ----------------------------------------------------------------------------- helpers
def _env(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    """Environment for `bench` commands: the cluster, one thread, a checkpoint every second."""
    env = {**os.environ, **cluster.env_vars, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BENCH_CHECKPOINT_SECONDS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BENCH_DATA_ROOT", None)
    env.update(extra)
    return env


def _bench_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "bench.cli", *[str(a) for a in args]]


def bench(env: dict[str, str], *args: Any, timeout: float = RUN_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `bench ARGS` to completion; on an unexpected exit code fail with its output."""
    res = subprocess.run(_bench_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        pytest.fail(f"bench {' '.join(map(str, args))} exited {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def write_matrix(
    path: Path,
    name: str,
    data_root: Path,
    *,
    experiments: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
    pretrain: dict[str, Any] | None = None,
    finetune: dict[str, Any] | None = None,
    evaluate: list[dict[str, Any]] | None = None,
) -> Path:
    """The small test matrix (`sm` by default), with parts replaced."""
    doc = {
        "name": name,
        "data": {"root": str(data_root), "synthetic": dict(SYNTH)},
        "resources": resources or {"all": dict(ONE_CPU)},
        "defaults": {
            "backbone": "vit_tiny_demo",
            "image_size": 32,
            "pretrain": pretrain or {"method": "mae", "dataset": "nih", "epochs": PRETRAIN_EPOCHS, "batch_size": 16},
            "finetune": finetune or {"dataset": "nih", "seeds": [0, 1], "epochs": 2, "batch_size": 16},
            "evaluate": evaluate or EVAL_TARGETS,
        },
        "experiments": experiments or [{"id": "a"}],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def plan_of(matrix: Path):  # -> bench.plan.Plan
    from bench.matrix import load_matrix
    from bench.plan import build_plan

    return build_plan(load_matrix(matrix))


def manifest(results: Path, name: str) -> dict[str, Any]:
    from bench.execute.manifest import Manifest

    return Manifest(results / "slurm" / name).latest()


def status(results: Path, key: str) -> dict[str, Any]:
    p = results / "store" / key / "status.json"
    return json.loads(p.read_text()) if p.exists() else {}


def load_weights(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class JobLog:
    """scontrol records of every job seen, kept past SLURM's MinJobAge (finished jobs vanish after 300 s)."""

    def __init__(self, cluster: SlurmCluster) -> None:
        self.cluster = cluster
        self.jobs: dict[str, dict[str, str]] = {}

    def poll(self) -> None:
        try:
            self.jobs.update(self.cluster.all_jobs())
        except Exception:  # noqa: BLE001 - a slow controller answer is retried on the next poll
            pass


def _wait_proc(proc: subprocess.Popen[str], out: Path, what: str, timeout: float, poll: Any = None) -> None:
    t0 = time.time()
    while proc.poll() is None:
        if poll is not None:
            poll()
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail(f"{what} did not finish in {timeout:.0f}s\n{out.read_text()[-4000:]}")
        time.sleep(1.0)
    if poll is not None:
        poll()
    if proc.returncode != 0:
        pytest.fail(f"{what} exited {proc.returncode}\n{out.read_text()[-6000:]}")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """This module's own cluster with CLUSTER_CPUS slots, ``SLURM_CONF`` set for the module (so that
    `bench.execute.slurm.squeue_states` in this process reaches it); skipped or failed like the
    session cluster of conftest.py when SLURM is not installed."""
    require_slurm()
    c = SlurmCluster(cpus=CLUSTER_CPUS)
    try:
        c.start()
    except SlurmClusterError as e:
        pytest.fail(f"the test SLURM cluster did not start: {e}", pytrace=False)
    try:
        with c.activate():
            yield c
    finally:
        c.stop()


def live_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM states of jobs and array tasks (``scontrol show job A_I`` fails for a pending array's task)."""
    from bench.execute.slurm import squeue_states

    return squeue_states(job_ids)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm_executor")


@pytest.fixture(scope="module")
def data_root(work: Path) -> Path:
    """The synthetic sites once for the module (each `bench run` then finds them complete)."""
    from bench.data.synthetic import generate

    root = work / "data"
    generate(root, sites=["nih", "chexpert"], **SYNTH)
    return root


@pytest.fixture(scope="module")
def main_run(cluster: SlurmCluster, work: Path, data_root: Path) -> dict[str, Any]:
    """`sm` through SLURM (pre-training requeued mid-way) and through the local executor, side by side.

    The local run is only the reference for weights and predictions: it tracks nothing (``--no-mlflow``)."""
    import torch  # noqa: F401 - imported now, not inside the requeue loop below (seconds under load)

    m = write_matrix(work / "sm.yaml", "sm", data_root, evaluate=MAIN_TARGETS)
    plan = plan_of(m)
    pre = next(s.key for s in plan.ordered() if s.kind == "pretrain")
    rs, rl = work / "rs", work / "rl"
    env = _env(cluster)
    t0 = time.time()
    s_out, l_out = work / "slurm_run.log", work / "local_run.log"
    with open(s_out, "w") as fs, open(l_out, "w") as fl:
        sp = subprocess.Popen(_bench_cmd("run", m, "--results", rs, "--executor", "slurm", "--wait", "--no-progress"),
                              env=env, cwd=REPO, stdout=fs, stderr=subprocess.STDOUT, text=True)
        lp = subprocess.Popen(_bench_cmd("run", m, "--results", rl, "--executor", "local", "--threads", "1", "--max-parallel", "1", "--no-progress", "--no-mlflow"),
                              env=env, cwd=REPO, stdout=fl, stderr=subprocess.STDOUT, text=True)
        jobs = JobLog(cluster)
        requeue: dict[str, Any] = {}
        ck = rs / "store" / pre / "checkpoint.pt"
        deadline = time.time() + RUN_TIMEOUT
        # requeue the running pre-training as soon as it wrote a checkpoint, while it is not done
        while sp.poll() is None and time.time() < deadline and not requeue:
            if ck.exists() and status(rs, pre).get("state") == "running":
                job = manifest(rs, "sm")[pre].job_id
                if live_states([job]).get(job) == "RUNNING":
                    cluster.requeue(job)
                    requeue = {"job": job, "at": time.time() - t0}
                    break
            if status(rs, pre).get("state") == "done":
                break
            time.sleep(0.2)
        _wait_proc(sp, s_out, "bench run --executor slurm --wait", deadline - time.time(), poll=jobs.poll)
        slurm_s = time.time() - t0
        _wait_proc(lp, l_out, "bench run --executor local", RUN_TIMEOUT)
    print(f"\nmain run: slurm {slurm_s:.0f}s, both {time.time() - t0:.0f}s; requeue {requeue}")
    return {"matrix": m, "plan": plan, "pre": pre, "rs": rs, "rl": rl, "jobs": jobs.jobs, "requeue": requeue,
            "slurm_log": s_out.read_text(), "env": env}


# ----------------------------------------------------------------------------- 1, 2, 3: one matrix, SLURM vs local
def test_slurm_predictions_equal_local_executor(main_run: dict[str, Any]) -> None:
    """Same device, thread count (1) and world size: the SLURM run's predictions are bit-identical
    to the local executor's (exact comparison, no tolerance), for every evaluate stage."""
    import pandas as pd

    plan, rs, rl = main_run["plan"], main_run["rs"], main_run["rl"]
    evals = [s for s in plan.ordered() if s.kind == "evaluate"]
    assert len(plan.stages) == 19 and len(evals) == 16
    for s in plan.ordered():
        assert status(rs, s.key).get("state") == "done", (s.key, status(rs, s.key))
        assert status(rl, s.key).get("state") == "done", (s.key, status(rl, s.key))
        assert status(rs, s.key)["provenance"]["threads"] == 1 == status(rl, s.key)["provenance"]["threads"]
        assert status(rs, s.key)["provenance"]["slurm_job"], "the SLURM run's stages ran in SLURM jobs"
    for s in evals:
        a = pd.read_parquet(rs / "store" / s.key / "predictions.parquet")
        b = pd.read_parquet(rl / "store" / s.key / "predictions.parquet")
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_dependencies_hold(main_run: dict[str, Any]) -> None:
    """No job started before all its upstream jobs ended, and those ended COMPLETED (scontrol, 1 s)."""
    plan, rs, jobs = main_run["plan"], main_run["rs"], main_run["jobs"]
    recs = manifest(rs, "sm")
    # siblings went out as job arrays: 2 fine-tunes in one array, 8 evaluations per fine-tune in one array
    arrays = {s.kind: set() for s in plan.ordered()}
    for s in plan.ordered():
        arrays[s.kind].add(recs[s.key].array_job)
    assert len(arrays["finetune"]) == 1 and len(arrays["evaluate"]) == 2, arrays
    for s in plan.ordered():
        rec = jobs[recs[s.key].job_id]
        assert rec["JobState"] == "COMPLETED", (s.key, rec["JobState"])
        start = parse_slurm_time(rec["StartTime"])
        for u in s.upstream:
            up = jobs[recs[u].job_id]
            assert up["JobState"] == "COMPLETED"
            end = parse_slurm_time(up["EndTime"])
            assert start is not None and end is not None and start >= end, (s.label, start, u, end)
            assert recs[u].job_id in recs[s.key].dependency


def test_requeue_resumes_from_checkpoint(main_run: dict[str, Any]) -> None:
    """`scontrol requeue` of the running pre-training: the restarted job resumes from the checkpoint in
    the store and its encoder equals the uninterrupted (local) run's, tensor by tensor."""
    import torch

    rq, pre, rs, rl = main_run["requeue"], main_run["pre"], main_run["rs"], main_run["rl"]
    assert rq, f"the pre-training finished before it could be requeued; raise PRETRAIN_EPOCHS ({PRETRAIN_EPOCHS})"
    log = (rs / "store" / pre / "log.txt").read_text()
    assert "resumed from checkpoint" in log, log[-3000:]
    assert int(status(rs, pre)["attempts"]) >= 2
    assert int(main_run["jobs"][rq["job"]].get("Restarts", "0")) >= 1
    mine, ref = load_weights(rs / "store" / pre / "encoder.pt"), load_weights(rl / "store" / pre / "encoder.pt")
    assert mine.keys() == ref.keys()
    for k in ref:
        assert torch.equal(mine[k], ref[k]), k


# ----------------------------------------------------------------------------- 5: nothing submitted twice
def test_second_run_of_completed_matrix_submits_nothing(main_run: dict[str, Any]) -> None:
    rs = main_run["rs"]
    before = (rs / "slurm" / "sm" / "manifest.jsonl").read_bytes()
    res = bench(main_run["env"], "run", main_run["matrix"], "--results", rs, "--executor", "slurm", "--no-progress")
    assert "submitted 0 stages" in res.stdout and "19 done" in res.stdout, res.stdout
    assert (rs / "slurm" / "sm" / "manifest.jsonl").read_bytes() == before


def test_queued_matrix_second_run_submits_nothing_and_cancel(cluster: SlurmCluster, work: Path, data_root: Path) -> None:
    """A matrix whose jobs are still queued (held by a start time an hour ahead): a second `bench run`
    submits nothing and leaves the manifest as it was; `bench cancel` cancels them and `bench status`
    shows them cancelled."""
    m = write_matrix(work / "sq.yaml", "sq", data_root, resources={"all": {**ONE_CPU, "additional": {"begin": "now+3600"}}})
    rq = work / "rq"
    env = _env(cluster)
    first = bench(env, "run", m, "--results", rq, "--executor", "slurm", "--no-progress", "--no-mlflow")
    assert "submitted 7 stages as 4 SLURM jobs/arrays" in first.stdout, first.stdout
    recs = manifest(rq, "sq")
    assert set(live_states([r.job_id for r in recs.values()]).values()) == {"PENDING"}
    before = (rq / "slurm" / "sq" / "manifest.jsonl").read_bytes()
    second = bench(env, "run", m, "--results", rq, "--executor", "slurm", "--no-progress", "--no-mlflow")
    assert "submitted 0 stages" in second.stdout and "7 already queued or running" in second.stdout, second.stdout
    assert (rq / "slurm" / "sq" / "manifest.jsonl").read_bytes() == before
    cancel = bench(env, "cancel", m, "--results", rq)
    assert "cancelled 7 queued/running job(s)" in cancel.stdout, cancel.stdout
    assert set(live_states([r.job_id for r in recs.values()]).values()) == {"CANCELLED"}
    st = bench(env, "status", m, "--results", rq)
    rows = [ln for ln in st.stdout.splitlines() if any(k in ln for k in recs)]
    assert len(rows) == 7 and all(ln.startswith("cancelled") for ln in rows), st.stdout
    assert all(r.state == "CANCELLED" for r in manifest(rq, "sq").values())


# ----------------------------------------------------------------------------- 4: failure isolation and --retry-failed
def test_failed_stage_blocks_only_its_branch_and_retry_failed(cluster: SlurmCluster, work: Path, data_root: Path, main_run: dict[str, Any]) -> None:
    """Experiment `bad` fine-tunes from an initialisation file that is not there (a path typo, or
    weights not copied to the cluster yet): its fine-tune fails at run time, its evaluation never runs
    (SLURM cancels it), experiment `ok` completes; `bench status` shows the failure and its log tail;
    once the file exists, `--retry-failed` reruns only `bad`'s fine-tune and evaluation."""
    weights = work / "weights" / "enc_missing.pt"
    m = write_matrix(
        work / "fl.yaml", "fl", data_root,
        experiments=[{"id": "ok"}, {"id": "bad", "init": f"file:{weights}"}],
        pretrain={"method": "none"},
        finetune={"dataset": "nih", "seeds": [0], "epochs": 1, "batch_size": 16},
        evaluate=[EVAL_TARGETS[0]],
    )
    plan = plan_of(m)
    ft = {s.label.split()[0]: s.key for s in plan.ordered() if s.kind == "finetune"}
    ev = {s.label.split()[0]: s.key for s in plan.ordered() if s.kind == "evaluate"}
    rf = work / "rf"
    env = _env(cluster)
    res = bench(env, "run", m, "--results", rf, "--executor", "slurm", "--wait", "--no-progress", "--no-mlflow", check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    recs = manifest(rf, "fl")
    assert status(rf, ft["ok"])["state"] == "done" and status(rf, ev["ok"])["state"] == "done"
    assert status(rf, ft["bad"])["state"] == "failed", status(rf, ft["bad"])
    assert "enc_missing.pt" in status(rf, ft["bad"])["error"]
    bad_eval = cluster.wait_done(recs[ev["bad"]].job_id, timeout=60)
    assert bad_eval["JobState"] == "CANCELLED" and "DependencyNeverSatisfied" in bad_eval.get("Reason", ""), bad_eval
    assert status(rf, ev["bad"]) == {}, "the dependant of the failed stage never ran"
    assert not Path(recs[ev["bad"]].log).exists(), "no job output: it never started"
    st = bench(env, "status", m, "--results", rf)
    lines = st.stdout.splitlines()
    failed_line = next(i for i, ln in enumerate(lines) if ft["bad"] in ln)
    assert lines[failed_line].startswith("failed") and recs[ft["bad"]].job_id in lines[failed_line], st.stdout
    tail = [ln for ln in lines[failed_line + 1:] if ln.startswith("      | ")]
    assert tail and any("enc_missing.pt" in ln for ln in tail), st.stdout
    assert next(ln for ln in lines if ev["bad"] in ln).startswith("blocked"), st.stdout
    assert sum(1 for ln in lines if ln.startswith("done")) == 2, st.stdout

    # without --retry-failed nothing is resubmitted
    again = bench(env, "run", m, "--results", rf, "--executor", "slurm", "--no-progress", "--no-mlflow", check=False)
    assert "submitted 0 stages" in again.stdout and "1 failed" in again.stdout and "1 blocked" in again.stdout, again.stdout
    # fix the cause, retry: only the failed branch gets new jobs
    weights.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(main_run["rl"] / "store" / main_run["pre"] / "encoder.pt", weights)
    before = manifest(rf, "fl")
    bench(env, "run", m, "--results", rf, "--executor", "slurm", "--retry-failed", "--wait", "--no-progress", "--no-mlflow")
    after = manifest(rf, "fl")
    for key in (ft["ok"], ev["ok"]):
        assert after[key].job_id == before[key].job_id and after[key].attempt == 1
    for key in (ft["bad"], ev["bad"]):
        assert after[key].job_id != before[key].job_id and after[key].attempt == 2
        assert status(rf, key)["state"] == "done"
    assert after[ft["bad"]].job_id in after[ev["bad"]].dependency


# ----------------------------------------------------------------------------- 6: DDP under SLURM
def test_ddp_pretraining_matches_single_process(cluster: SlurmCluster, work: Path, data_root: Path, main_run: dict[str, Any]) -> None:
    """2 tasks (gloo on CPU, launched by SLURM/submitit) x 8 images per step == 1 process x 16 images,
    within DDP_TOL (key biases DDP_TOL_KEY_BIAS), for the same pre-training stage as `main_run`."""
    from bench import distributed

    assert hasattr(distributed, "wrap") and hasattr(distributed, "setup"), "bench.distributed has no DDP support"
    m = write_matrix(work / "sd.yaml", "sd", data_root, resources={"all": dict(ONE_CPU), "pretrain": {"tasks_per_node": 2, "cpus_per_task": 1}})
    rd, pre = work / "rd", main_run["pre"]
    assert next(s.key for s in plan_of(m).ordered() if s.kind == "pretrain") == pre, "resources are not part of a stage key"
    env = _env(cluster)
    bench(env, "run", m, "--results", rd, "--executor", "slurm", "--no-progress", "--no-mlflow")
    job = manifest(rd, "sd")[pre].job_id
    rec = cluster.wait_done(job, timeout=RUN_TIMEOUT)
    bench(env, "cancel", m, "--results", rd)  # the fine-tunes and evaluations are not needed here
    st = status(rd, pre)
    assert rec["JobState"] == "COMPLETED" and st.get("state") == "done", (rec.get("JobState"), st, (rd / "store" / pre / "log.txt").read_text()[-3000:] if (rd / "store" / pre / "log.txt").exists() else "")
    assert st["provenance"]["world_size"] == 2 and rec.get("NumTasks") == "2"
    two, one = load_weights(rd / "store" / pre / "encoder.pt"), load_weights(main_run["rl"] / "store" / pre / "encoder.pt")
    diff = diff_k = 0.0
    for k, v in one.items():
        d = (two[k].float() - v.float()).abs()
        if k.endswith("attn.qkv.bias"):
            n = v.numel() // 3
            diff_k = max(diff_k, float(d[n : 2 * n].max()))
            d = d[[*range(n), *range(2 * n, 3 * n)]]
        diff = max(diff, float(d.max()) if d.numel() else 0.0)
    print(f"\nDDP 2 ranks vs 1 process after {PRETRAIN_EPOCHS} epochs: max |dw| = {diff:.3g}, key biases {diff_k:.3g}")
    assert diff < DDP_TOL and diff_k < DDP_TOL_KEY_BIAS, (diff, diff_k)


# ----------------------------------------------------------------------------- 7: 16 concurrent stages, MLflow exactly once
def test_sixteen_concurrent_stages_log_to_mlflow_exactly_once(main_run: dict[str, Any]) -> None:
    """The main run's 16 evaluation jobs (2 arrays of 8 on the module's 16 slots) ran at once on the
    SQLite tracking default: every job wrote its events into its stage folder; `--wait` imported them
    while the jobs ran and at the end (a later `bench sync` finds nothing left), and each stage - the
    evaluations, the fine-tunes and the requeued pre-training - has exactly one MLflow run with no
    repeated metric step."""
    from mlflow.tracking import MlflowClient

    from bench.tracking import default_tracking_uri

    plan, rs, jobs = main_run["plan"], main_run["rs"], main_run["jobs"]
    recs = manifest(rs, "sm")
    evals = [s.key for s in plan.ordered() if s.kind == "evaluate"]
    assert len(evals) == 16
    spans = [(parse_slurm_time(jobs[recs[k].job_id]["StartTime"]), parse_slurm_time(jobs[recs[k].job_id]["EndTime"])) for k in evals]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    print(f"\n16 evaluations: at most {overlap} running at once")
    assert overlap >= 8
    for s in plan.ordered():
        assert (rs / "store" / s.key / "mlflow_events.jsonl").exists(), f"{s.label}: the job logged no deferred events"
    sync_out = bench(main_run["env"], "sync", "--results", rs).stdout
    assert "imported 0 events of 0 stages" in sync_out, "--wait imported everything already: " + sync_out
    client = MlflowClient(tracking_uri=default_tracking_uri(rs))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    by_key: dict[str, list[Any]] = {}
    for r in runs:
        if "stage_key" in r.data.tags:
            by_key.setdefault(r.data.tags["stage_key"], []).append(r)
    assert sorted(by_key) == sorted(plan.stages), sorted(by_key)
    for key, rs_ in by_key.items():
        assert len(rs_) == 1, (key, [r.info.run_id for r in rs_])
        run = rs_[0]
        assert run.info.status == "FINISHED" and run.data.metrics, (key, run.info.status)
        for name in run.data.metrics:
            hist = client.get_metric_history(run.info.run_id, name)
            steps = [h.step for h in hist]
            assert len(steps) == len(set(steps)), (key, name, steps)
