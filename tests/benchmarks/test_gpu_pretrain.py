"""`benchmarks/gpu_pretrain.py` on the CPU with `--tiny` settings (the suite needs no GPU).

The figures themselves are the GPU run's business; here: the benchmark runs the project's
training path end to end for both workloads and every input source, prints one JSON line,
and its MAE FLOP model is what `FlopCounterMode` counts for the same steps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_pretrain", ROOT / "benchmarks" / "gpu_pretrain.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


gp = _load()


@pytest.mark.slow  # a fresh interpreter importing torch and timm: ~10 s on 2 cores
def test_tiny_cpu_run_prints_figures_and_json() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_pretrain.py"), "--tiny", "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    fixed, dbb = out["results"]
    assert (fixed["workload"], dbb["workload"]) == ("fixed", "dbb")
    for r in (fixed, dbb):
        assert r["method"] == "mae" and r["precision"] == "fp32" and r["device"] == "cpu"
        assert r["images_per_s"] > 0 and r["tflops_per_s"] > 0 and r["peak_memory_gib"] > 0
        assert r["mfu_table"] is None and r["mfu_measured"] is not None and r["mfu_measured"] > 0  # no bf16 table peak for a CPU
        assert r["flops_source"].startswith("bench.compute")
    # fixed: 4 images of 64² at patch 8 per step, all of them real tokens
    assert fixed["images_per_s"] == pytest.approx(4 / fixed["s_per_step"])
    assert fixed["tokens_per_s"] == pytest.approx(4 * 64 / fixed["s_per_step"]) == pytest.approx(fixed["real_tokens_per_s"])
    # DBB: padded bins, so fewer real than processed tokens, within the token budget per step
    assert 0 < dbb["real_tokens_per_s"] < dbb["tokens_per_s"]
    assert dbb["tokens_per_s"] * dbb["s_per_step"] <= dbb["options"]["token_budget"]
    assert "fixed mae vit_tiny_demo" in proc.stdout and "dbb   mae vit_tiny_demo" in proc.stdout


def _unfused(method: torch.nn.Module) -> None:
    for m in method.modules():  # FlopCounterMode cannot see the fused SDPA kernel on CPU
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


def test_mae_flop_model_matches_flop_counter() -> None:
    import ssl_methods

    torch.manual_seed(0)
    m = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=64, in_chans=1, init="random", epochs=1)
    _unfused(m)

    def step(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator):
        return m(x) if y is None else m(x, valid=y)

    cpu = torch.device("cpu")
    x = torch.rand(3, 1, 64, 96)  # 8 x 12 patches
    assert gp.mae_step_flops(m, x, None) == pytest.approx(gp.counted_step_flops(step, x, None, cpu, None), rel=1e-9)
    # a padded DBB batch: images keep different token counts, the encoder runs the largest
    valid = torch.zeros(3, 96, dtype=torch.bool)
    valid[0, :96] = True
    valid[1, :40] = True
    valid[2, :12] = True
    assert gp.mae_step_flops(m, x, valid) == pytest.approx(gp.counted_step_flops(step, x, valid, cpu, None), rel=1e-9)


@pytest.mark.slow
def test_loader_and_prepared_cache_sources(tmp_path: Path) -> None:
    """DataLoader workers, and a `bench data prepare` cache (fixed-size and native) as the source."""
    from bench.cli import main as bench
    from bench.data.synthetic import generate

    root = tmp_path / "data"
    generate(root, seed=0, scale=0.05, sites=["nih"])
    caches = tmp_path / "cache"
    for flags in (["--size", "64"], ["--size", "0", "--native", "--native-max-side", "128"]):
        assert bench(["data", "prepare", "nih", "--root", str(root / "nih"), "--cache-dir", str(caches), "--workers", "1", *flags]) == 0
    fixed_dir = next(caches.rglob("size64"))
    native_dir = next(caches.rglob("native"))

    loader = gp.main(["--tiny", "--device", "cpu", "--mode", "dbb", "--source", "loader", "--workers", "1", "--attention", "math"])
    assert loader[0]["source"] == "loader" and loader[0]["images_per_s"] > 0

    fixed = gp.main(["--tiny", "--device", "cpu", "--mode", "fixed", "--source", f"cache:{fixed_dir}", "--workers", "1"])
    native = gp.main(["--tiny", "--device", "cpu", "--mode", "dbb", "--source", f"cache:{native_dir}"])
    assert fixed[0]["images_per_s"] > 0 and native[0]["images_per_s"] > 0
    assert "native cache" in native[0]["batch"]

    # a CNN method: channels-last, FLOPs from FlopCounterMode, no patch tokens
    cnn = gp.main(["--tiny", "--device", "cpu", "--mode", "fixed", "--method", "mocov3", "--backbone", "resnet_tiny_demo", "--channels-last"])
    assert cnn[0]["backbone"] == "resnet_tiny_demo" and cnn[0]["flops_source"] == "torch FlopCounterMode"
    assert cnn[0]["tflops_per_s"] > 0 and cnn[0]["tokens_per_s"] == 0
