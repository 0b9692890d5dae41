"""benchmarks/train_step_utilisation.py at tiny settings (issue 13.2): it runs, prints a
utilisation per method, and its FLOP model matches torch's FLOP counter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _module():  # type: ignore[no-untyped-def]
    """The benchmark script as a module (registered first: its dataclasses look their module up)."""
    name = "train_step_utilisation"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "train_step_utilisation.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


TINY = ["--backbone", "vit_tiny_demo", "--img-size", "32", "--batch", "2", "--threads", "1", "--repeats", "1",
        "--mm-size", "128"]


def test_tiny_run_reports_utilisation_and_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _module()
    res = mod.main([*TINY, "--profile", "--top", "5", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "MAE/SimMIM time ratio" in out and "top ops by self CPU time" in out
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"mae", "simmim"}
    for r in rows.values():
        assert r["s_per_step"] > 0 and r["cpu_s_per_step"] > 0 and r["peak_gflops"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["gflop_per_step"] / r["s_per_step"], rel=1e-9)
        assert 0 < r["utilisation"] < 5 and 0 < r["utilisation_cpu"] < 5  # ratios of measured rates
    assert res["flop_ratio_mae_simmim"] == pytest.approx(rows["mae"]["gflop_per_step"] / rows["simmim"]["gflop_per_step"])
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize("method", ["mae", "simmim"])
def test_flop_model_matches_torch_flop_counter(method: str) -> None:
    """`step_flops` (bench.compute's per-sequence model) = what FlopCounterMode counts for a
    forward + backward with timm's fused attention off (the counter then sees the matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    import ssl_methods

    mod = _module()
    torch.manual_seed(0)
    model = ssl_methods.create(method, backbone="vit_tiny_demo", img_size=32, in_chans=1)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    x = torch.randn(3, 1, 32, 32)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(x)
        loss.backward()
    counted = counter.get_total_flops()
    assert mod.step_flops(model, 3, 32, 1) == pytest.approx(counted, rel=1e-3)
