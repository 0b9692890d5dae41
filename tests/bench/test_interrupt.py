"""Ctrl-C during `bench run`: finished stages stay done, the interrupted one re-runs, nothing is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sigint_keeps_finished_work_and_resumes(tmp_path: Path) -> None:
    from bench.data.synthetic import generate

    data = tmp_path / "data"
    generate(data, seed=3, scale=0.25, sites=["nih"])
    m = tmp_path / "i.yaml"
    m.write_text(textwrap.dedent(f"""
        name: i
        data: {{root: {data}}}
        defaults:
          backbone: vit_tiny_demo
          image_size: 32
          finetune: {{dataset: nih, seeds: [0], epochs: 15, batch_size: 8}}
          evaluate: [{{column: NIH, site: nih, split: test}}]
        experiments: [{{id: a}}]
    """))
    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(m), "--results", str(results), "--no-mlflow", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = results / "store"
    # wait until the first fine-tune has written a checkpoint, then press Ctrl-C
    deadline = time.time() + 240
    while time.time() < deadline and not list(store.glob("finetune-*/checkpoint.pt")):
        time.sleep(0.2)
    assert list(store.glob("finetune-*/checkpoint.pt")), "no checkpoint appeared"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    states = {p.parent.name: json.loads(p.read_text())["state"] for p in store.glob("*/status.json")}
    assert "interrupted" in states.values(), states
    interrupted = [k for k, v in states.items() if v == "interrupted"][0]
    assert (store / interrupted / "checkpoint.pt").exists()

    # re-run the same command: it resumes from the checkpoint, not from scratch
    proc2 = subprocess.run(cmd + ["--no-report"], capture_output=True, text=True, timeout=900)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    log = (store / interrupted / "log.txt").read_text()
    assert "resumed from checkpoint" in log
    assert json.loads((store / interrupted / "status.json").read_text())["state"] == "done"
