"""Reliability of real `bench run`s under kills, signals and concurrency (issues 9 and 14).

Every test drives the real CLI in subprocesses (local executor: submitit workers,
SQLite MLflow) on a tiny synthetic matrix and then checks what a user relies on:

- a worker killed with SIGKILL mid-stage is reported with its signal, its stage becomes
  `interrupted` (never stuck `running`), and the next `bench run` resumes it from the
  checkpoint to outputs bit-identical to an uninterrupted run;
- `bench run`s started at once on one results folder (same or overlapping matrices)
  all succeed and execute every stage exactly once, without rewriting done outputs and
  without racing on the MLflow schema;
- SIGTERM to a backgrounded `bench run` leaves no process behind; a `bench` killed with
  SIGKILL leaves its worker running, and the next run waits for that worker instead of
  running the stage a second time;
- an interrupted and resumed stage stays ONE MLflow run whose metric history covers
  every epoch exactly once.

`BENCH_CHECKPOINT_SECONDS=0` makes training checkpoint after every step, so a kill at
any moment finds a mid-epoch checkpoint to resume from (which is what these tests are
about; the math does not depend on how often checkpoints are written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from bench.store import pid_alive
import torch

pytestmark = pytest.mark.slow

TIMEOUT = 900  # one `bench run` on a loaded 2-core machine


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root, seed=3, scale=0.25, sites=["nih"])
    return root


def _matrix(path: Path, data: Path, *, pretrain_epochs: int | None = 2, ft_epochs: int = 3, seeds: tuple[int, ...] = (0,)) -> Path:
    """A one-experiment matrix: [pre-training ->] fine-tune per seed -> one evaluation."""
    pre = f"pretrain: {{method: mae, dataset: nih, epochs: {pretrain_epochs}, batch_size: 8}}" if pretrain_epochs else ""
    path.write_text(textwrap.dedent(f"""
        name: {path.stem}
        data: {{root: {data}}}
        defaults:
          backbone: vit_tiny_demo
          image_size: 32
          {pre}
          finetune: {{dataset: nih, seeds: {list(seeds)}, epochs: {ft_epochs}, batch_size: 8}}
          evaluate: [{{column: NIH, site: nih, split: test}}]
        experiments: [{{id: a}}]
    """))
    return path


def _cmd(matrix: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(results), "--threads", "1", "--no-report", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_CHECKPOINT_SECONDS": "0", "PYTHONUNBUFFERED": "1"}


def _popen(cmd: list[str], **kw) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, **{"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": _env(), **kw})


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=TIMEOUT)


def _wait(cond: Callable[[], object], what: str, proc: subprocess.Popen[str] | None = None, timeout: float = 600) -> object:
    """Poll `cond` until it is truthy; fail early (with the output) when `proc` ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"bench ended (rc {proc.returncode}) before {what}:\n{out[-4000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _key(store: Path, kind: str) -> str:
    keys = sorted(p.name for p in store.glob(f"{kind}-*"))
    assert len(keys) == 1, keys
    return keys[0]


def _status(store: Path, key: str) -> dict:
    p = store / key / "status.json"
    return json.loads(p.read_text()) if p.exists() else {"state": "pending"}


def _log(store: Path, key: str) -> str:
    p = store / key / "log.txt"
    return p.read_text() if p.exists() else ""


def _lock_pid(store: Path, key: str) -> int | None:
    try:
        return int(json.loads((store / key / ".lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _procs_mentioning(text: str) -> list[int]:
    """Live processes (not this one) whose command line mentions `text` (the results folder)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def _cleanup(results: Path) -> None:
    """Kill what a failed test left behind (only processes this test started: they name its folder)."""
    for pid in _procs_mentioning(str(results)):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _worker_of(store: Path, key: str, coordinator: int, not_pid: int | None = None) -> Callable[[], int | None]:
    """The pid holding `key`'s lock once it is a live worker (not the coordinator, not `not_pid`)."""

    def get() -> int | None:
        pid = _lock_pid(store, key)
        return pid if pid and pid not in (coordinator, not_pid) and pid_alive(pid) else None

    return get


def _tensors_equal(a: Path, b: Path) -> None:
    """Every tensor in two saved state dicts (nested dicts allowed) is bit-identical."""
    x = torch.load(a, map_location="cpu", weights_only=True)
    y = torch.load(b, map_location="cpu", weights_only=True)

    def walk(u: object, v: object, where: str) -> int:
        if isinstance(u, torch.Tensor):
            assert isinstance(v, torch.Tensor) and torch.equal(u, v), f"{a.name}: tensor {where} differs"
            return 1
        if isinstance(u, dict):
            assert isinstance(v, dict) and set(u) == set(v), f"{a.name}: keys of {where} differ"
            return sum(walk(u[k], v[k], f"{where}.{k}") for k in u)
        assert u == v, f"{a.name}: {where} differs: {u!r} != {v!r}"
        return 0

    assert walk(x, y, "") > 0, f"{a} holds no tensors"


def _mlflow_runs(results: Path, key: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string=f"tags.stage_key = '{key}'")


def _metric_steps(results: Path, run_id: str, name: str) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, name))


def _attempt_lines(store: Path, key: str) -> list[str]:
    return [ln for ln in _log(store, key).splitlines() if " attempt " in ln and f" {key} " in ln]


# ---------------------------------------------------------------------------------------------
# 1 + 4: SIGKILL of a worker mid-stage: reported with its signal, stage interrupted, resumed
# from the checkpoint to bit-identical outputs.
# ---------------------------------------------------------------------------------------------
def test_kill9_worker_resumes_bit_identical(tmp_path: Path, data: Path) -> None:
    m = _matrix(tmp_path / "k.yaml", data, pretrain_epochs=2, ft_epochs=3)
    ref, results = tmp_path / "uninterrupted", tmp_path / "r"  # (no name starting with "r": _cleanup matches by prefix)
    store = results / "store"
    reference = None
    try:
        # the uninterrupted reference, in one process (same code, same thread count); it runs on the
        # other core while runs 1-3 below wait for workers, and is compared at the end
        # (its output goes to a file: nobody reads a pipe until the end)
        ref_out = tmp_path / "reference.log"
        with open(ref_out, "w") as fh:
            reference = _popen(_cmd(m, ref, "--no-mlflow", "--executor", "inline"), stdout=fh)

        # run 1: SIGKILL the pre-training worker once it has a checkpoint
        proc = _popen(_cmd(m, results, "--no-mlflow"))
        pre = _wait(lambda: next((p.name for p in store.glob("pretrain-*") if (p / "checkpoint.pt").exists()), None), "a pre-training checkpoint", proc)
        worker = _wait(_worker_of(store, pre, proc.pid), "the pre-training worker", proc)
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 1, out
        assert "killed by signal SIGKILL" in out, out  # issue 14: the exit status is named
        st = _status(store, pre)
        assert st["state"] == "interrupted" and "SIGKILL" in st["error"], st
        assert not (store / pre / "encoder.pt").exists()
        assert not pid_alive(worker)

        # run 2: resumes the pre-training; SIGKILL the fine-tune worker mid-way
        proc = _popen(_cmd(m, results, "--no-mlflow"))
        ft = _wait(lambda: next((p.name for p in store.glob("finetune-*") if (p / "checkpoint.pt").exists()), None), "a fine-tune checkpoint", proc)
        worker = _wait(_worker_of(store, ft, proc.pid), "the fine-tune worker", proc)
        os.kill(worker, signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 1, out
        assert "killed by signal SIGKILL" in out, out
        assert _status(store, ft)["state"] == "interrupted"
        assert _status(store, pre)["state"] == "done" and _status(store, pre)["attempts"] == 2
        assert "resumed from checkpoint" in _log(store, pre)

        # run 3: resumes the fine-tune, runs the evaluation
        r = _run(_cmd(m, results, "--no-mlflow"))
        assert r.returncode == 0, r.stdout + r.stderr
        ev = _key(store, "evaluate")
        assert "resumed from checkpoint" in _log(store, ft)
        assert [_status(store, k)["attempts"] for k in (pre, ft, ev)] == [2, 2, 1]
        assert all(_status(store, k)["state"] == "done" for k in (pre, ft, ev))

        reference.wait(timeout=TIMEOUT)
        assert reference.returncode == 0, ref_out.read_text()[-4000:]
        _tensors_equal(store / pre / "encoder.pt", ref / "store" / pre / "encoder.pt")
        _tensors_equal(store / ft / "model.pt", ref / "store" / ft / "model.pt")
        a = pd.read_parquet(store / ev / "predictions.parquet")
        b = pd.read_parquet(ref / "store" / ev / "predictions.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    finally:
        if reference is not None and reference.poll() is None:
            reference.kill()
            reference.wait(timeout=60)
        _cleanup(results)


# ---------------------------------------------------------------------------------------------
# 2: concurrent `bench run`s on one results folder: everything exactly once, no schema race.
# ---------------------------------------------------------------------------------------------
def _done_files(store: Path) -> dict[str, float]:
    """mtime of every file of every done stage (status included): a done stage is never rewritten."""
    out = {}
    for d in store.iterdir():
        if d.is_dir() and _status(store, d.name).get("state") == "done":
            for f in d.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    out[str(f)] = f.stat().st_mtime_ns
    return out


def _all_at_once(cmds: list[list[str]]) -> list[tuple[int, str]]:
    procs = [_popen(c) for c in cmds]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    return [(p.returncode, o) for p, o in zip(procs, outs)]


def test_concurrent_runs_execute_each_stage_once(tmp_path: Path, data: Path) -> None:
    results = tmp_path / "r"
    store = results / "store"
    m1 = _matrix(tmp_path / "one.yaml", data, pretrain_epochs=1, ft_epochs=1, seeds=(0,))
    m2 = _matrix(tmp_path / "two.yaml", data, pretrain_epochs=1, ft_epochs=1, seeds=(1,))  # shares the pre-training
    try:
        # a fresh results folder: the same matrix twice and an overlapping one, all at once
        runs = _all_at_once([_cmd(m1, results), _cmd(m1, results), _cmd(m2, results)])
        for rc, out in runs:
            assert rc == 0, out
            assert "CommandError" not in out and "Traceback" not in out, out  # issue 14.2: MLflow schema race
        pre = _key(store, "pretrain")  # one pre-training for both matrices
        keys = sorted(p.name for p in store.iterdir() if p.is_dir())
        assert len(keys) == 5, keys  # pre-training, 2 fine-tunes, 2 evaluations
        for k in keys:
            st = _status(store, k)
            assert st["state"] == "done" and st["attempts"] == 1, (k, st)
            assert len(_attempt_lines(store, k)) == 1, _log(store, k)
        total_ran = sum(int(out.split("   ran ")[1].split(",")[0]) for _, out in runs)
        assert total_ran == 5, [out for _, out in runs]  # executed once in all, the rest waited or skipped
        for k in keys:
            mruns = _mlflow_runs(results, k)
            assert len(mruns) == 1 and mruns[0].info.status == "FINISHED", (k, mruns)
        assert pre in keys

        # an existing results folder: a matrix adding a seed, twice at once
        before = _done_files(store)
        m3 = _matrix(tmp_path / "three.yaml", data, pretrain_epochs=1, ft_epochs=1, seeds=(0, 2))
        runs = _all_at_once([_cmd(m3, results), _cmd(m3, results)])
        for rc, out in runs:
            assert rc == 0, out
        new = sorted(set(p.name for p in store.iterdir() if p.is_dir()) - set(keys))
        assert len(new) == 2, new  # the seed-2 fine-tune and its evaluation
        for k in new:
            st = _status(store, k)
            assert st["state"] == "done" and st["attempts"] == 1, (k, st)
            assert len(_attempt_lines(store, k)) == 1
            assert len(_mlflow_runs(results, k)) == 1
        assert sum(int(out.split("   ran ")[1].split(",")[0]) for _, out in runs) == 2
        after = _done_files(store)
        assert {f: after[f] for f in before} == before  # no done output (or status) was rewritten
        assert not _procs_mentioning(str(results))
    finally:
        _cleanup(results)


# ---------------------------------------------------------------------------------------------
# 3 + 5: SIGTERM to a backgrounded `bench run`; SIGKILL of `bench` itself; one MLflow run.
# ---------------------------------------------------------------------------------------------
def _background() -> None:
    """What `cmd &` in a non-interactive shell does to the child: SIGINT (and SIGQUIT) ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def test_sigterm_background_and_kill9_of_bench(tmp_path: Path, data: Path) -> None:
    m = _matrix(tmp_path / "t.yaml", data, pretrain_epochs=1, ft_epochs=4)
    results = tmp_path / "r"
    store = results / "store"
    orphan = None
    try:
        # run 1, in the background: SIGTERM while the fine-tune is in its third epoch
        proc = _popen(_cmd(m, results), preexec_fn=_background)
        ft = _wait(lambda: next((p.name for p in store.glob("finetune-*") if _log(store, p.name).count(" step ") >= 2), None), "two fine-tune epochs", proc)
        worker = _wait(_worker_of(store, ft, proc.pid), "the fine-tune worker", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 130, out
        assert not pid_alive(worker)
        assert not _procs_mentioning(str(results)), "a process outlived bench"
        st = _status(store, ft)
        assert st["state"] == "interrupted", st
        assert "stopped on SIGTERM" in _log(store, ft)  # a graceful checkpoint, not a hard kill
        assert (store / ft / "checkpoint.pt").exists()
        (run,) = _mlflow_runs(results, ft)
        assert run.info.status == "KILLED"

        # run 2: resumes; SIGKILL `bench` itself (its worker lives on, stopped for the test's timing)
        # (no pipe: the surviving worker would hold it open, and nothing would read it)
        proc = _popen(_cmd(m, results), stdout=subprocess.DEVNULL)
        orphan = _wait(_worker_of(store, ft, proc.pid, not_pid=worker), "the resumed fine-tune worker", proc)
        _wait(lambda: "attempt 2 of" in _log(store, ft), "the second attempt", proc)
        os.kill(orphan, signal.SIGSTOP)
        proc.kill()
        proc.wait(timeout=60)

        # run 3, at once: must wait for the live worker of run 2, not run the fine-tune again
        proc = _popen(_cmd(m, results))
        subm = results / "submitit"
        _wait(lambda: any(f"being run by pid {orphan}" in p.read_text(errors="replace") for p in subm.glob("*_log.out")), "run 3 to wait for the live worker", proc)
        os.kill(orphan, signal.SIGCONT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, out
        _wait(lambda: not pid_alive(orphan), "the old worker to end", timeout=120)
        orphan = None
        pre, ev = _key(store, "pretrain"), _key(store, "evaluate")
        assert [_status(store, k)["attempts"] for k in (pre, ft, ev)] == [1, 2, 1]
        assert all(_status(store, k)["state"] == "done" for k in (pre, ft, ev))
        assert [ln.split(" attempt ")[1].split(" of ")[0] for ln in _attempt_lines(store, ft)] == ["1", "2"]
        assert len(_attempt_lines(store, ev)) == 1
        assert "resumed from checkpoint" in _log(store, ft)

        # issue 14.8: one MLflow run for the stage, every epoch in its history exactly once
        (run,) = _mlflow_runs(results, ft)
        assert run.info.status == "FINISHED" and run.data.tags["attempt"] == "2"
        assert _metric_steps(results, run.info.run_id, "train_loss") == [0, 1, 2, 3]
        _wait(lambda: not _procs_mentioning(str(results)), "every process of the run to end", timeout=60)
    finally:
        if orphan is not None:
            try:
                os.kill(orphan, signal.SIGCONT)
            except ProcessLookupError:
                pass
        _cleanup(results)


# ---------------------------------------------------------------------------------------------
# 5: Ctrl-C in a terminal (SIGINT to the whole foreground process group) mid fine-tune.
# ---------------------------------------------------------------------------------------------
def test_ctrl_c_in_terminal_keeps_one_mlflow_run(tmp_path: Path, data: Path) -> None:
    m = _matrix(tmp_path / "c.yaml", data, pretrain_epochs=None, ft_epochs=4)
    results = tmp_path / "r"
    store = results / "store"
    try:
        # its own session = a terminal's foreground job: Ctrl-C reaches bench, the controller and the worker
        proc = _popen(_cmd(m, results), start_new_session=True)
        ft = _wait(lambda: next((p.name for p in store.glob("finetune-*") if _log(store, p.name).count(" step ") >= 2), None), "two fine-tune epochs", proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 130, out
        assert _status(store, ft)["state"] == "interrupted"
        log = _log(store, ft)
        assert "stopped on SIG" in log and "without a graceful stop" not in log, log  # checkpointed at a step
        (run,) = _mlflow_runs(results, ft)
        assert run.info.status == "KILLED"
        _wait(lambda: not _procs_mentioning(str(results)), "every process to end", timeout=60)

        r = _run(_cmd(m, results))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "resumed from checkpoint" in _log(store, ft)
        (run,) = _mlflow_runs(results, ft)
        assert run.info.status == "FINISHED"
        assert _metric_steps(results, run.info.run_id, "train_loss") == [0, 1, 2, 3]
        assert _metric_steps(results, run.info.run_id, "val_mean_auc") == [0, 1, 2, 3]
    finally:
        _cleanup(results)
