"""`benchmarks/prepare_throughput.py` (issue 13 §4) runs end to end on a few small images and
prints every figure the README quotes. No speed is asserted: the machine is shared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # starts fork servers and decodes the images about ten times (~10-30 s on 2 loaded cores)
def test_benchmark_prints_breakdown_projection_and_contention(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "prepare_throughput.py"), "--n", "8", "--source-size", "96",
           "--size", "32", "--repeats", "1", "--workdir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for stage in ("read", "decode", "rescale", "resize", "write"):
        assert re.search(rf"CPU time \(ms\): .*{stage} \d+\.\d+", text), stage
    assert re.search(r"fixed costs per prepare \(wall\): worker start \d+\.\d+ s, merge \d+\.\d+ s, merge CPU", text)
    assert re.search(r"prepare, 2 process\(es\): .*CPU-time projection on 2 idle core\(s\): \d+\.\d+x steady state", text)
    assert re.search(r"2 plain decode loops at once need \d+\.\d+ ms CPU/image", text)
