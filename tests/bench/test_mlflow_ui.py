"""The MLflow UI in a real (headless Chromium) browser: runs are readable and compare by their axes.

`bench ui` must work from any shell (no venv on PATH), bind 127.0.0.1, and show what a
researcher compares: readable run names in the runs table and, in the compare view of two
fine-tunes, the pre-training method that differs. The runs are created through the job
body's own `_start_run` with the tags `bench run` gives every stage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench.job import JobContext, _start_run
from bench.matrix import load_matrix
from bench.plan import build_plan
from bench.run_tags import stage_tags
from bench.store import Store
from bench.tracking import Tracker

MATRIX = """
name: ui
data: {root: /nonexistent}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  finetune: {dataset: nih, seeds: [0], epochs: 1}
  evaluate: [{column: NIH, site: nih, split: test}]
experiments:
  - {id: "3.1", pretrain: {method: mae, dataset: nih}}
  - {id: "3.2", pretrain: {method: simmim, dataset: nih}}
"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def _texts(exe: str, profiles: Path, *urls: str) -> list[str]:
    """The rendered text of each page (tags and styles stripped), one headless Chromium per page (each
    with its own profile folder under `profiles`), all at once: each spends its time loading and
    running the UI's scripts on one core."""
    procs = [
        subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=30000",
             f"--user-data-dir={profiles / f'chromium{i}'}", "--window-size=2400,3000", "--dump-dom", url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for i, url in enumerate(urls)
    ]
    out = []
    for proc in procs:
        try:
            html, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
        out.append(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_runs_table_and_compare_view_in_a_browser(tmp_path: Path) -> None:
    exe = _chromium()
    res = tmp_path / "results"
    res.mkdir()
    m = res / "ui.yaml"
    m.write_text(textwrap.dedent(MATRIX))
    plan = build_plan(load_matrix(m))
    uri = f"sqlite:///{res / 'mlflow.db'}"
    tracker = Tracker(uri, experiment="ui", artifact_root=res / "mlartifacts")
    store = Store(res / "store")
    ctx = JobContext(store_root=str(store.root), tracking_uri=uri, experiment="ui", stage_tags=stage_tags(plan))
    runs: dict[str, tuple[str, str]] = {}
    for s in plan.ordered():
        store.begin(s.key, s.to_json())
        rid = _start_run(tracker, s, ctx, 1, None)
        tracker.end(rid)
        runs[s.key] = (rid, s.kind)

    port = _free_port()
    # from "any shell": PATH without the venv's bin directory
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    ui = subprocess.Popen([sys.executable, "-m", "bench.cli", "ui", "--results", str(res), "--port", str(port)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except OSError:
                assert ui.poll() is None, ui.stdout.read() if ui.stdout else ""
                time.sleep(1)
        else:
            pytest.fail("MLflow UI did not come up in 300 s")
        # bound to loopback only
        with socket.socket() as s:
            s.settimeout(2)
            addrs = [a for a in {socket.gethostbyname(socket.gethostname())} if not a.startswith("127.")]
            for a in addrs:
                assert s.connect_ex((a, port)) != 0, f"UI reachable on {a}"

        ft = [rid for rid, kind in runs.values() if kind == "finetune"]
        q = "runs=" + urllib.parse.quote(json.dumps(ft)) + "&experiments=" + urllib.parse.quote(json.dumps([tracker.experiment_id]))
        table, compare = _texts(exe, tmp_path, f"http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}/runs",
                                f"http://127.0.0.1:{port}/#/compare-runs?{q}")
        for name in ("3.1 · MAE→ChestX-ray14 · seed 0 · finetune ChestX-ray14", "3.2 · SimMIM→ChestX-ray14 · seed 0 · eval ChestX-ray14 test"):
            assert name in table, table[:2000]

        assert "Comparing 2 Runs" in compare, compare[:2000]
        # the parameter and tag rows of the compare view show the method that differs
        rows = [set(m.groups()) for m in re.finditer(r"(?:axis\.)?pretrain_method (\S+) (\S+)", compare)]
        assert {"mae", "simmim"} in rows, compare[:3000]
        assert "Parameters Show diff only" in compare and "Tags Show diff only" in compare
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
