"""The shared training loop: schedule, NaN detection, bit-exact resume after a kill."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from bench.tracking import StageLogger
from bench.data.batches import ImageBatches
from bench.train.loop import NonFiniteLoss, OptimCfg, default_param_groups, fit, lr_at


@pytest.fixture()
def batches(tmp_path: Path) -> ImageBatches:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        arr = (rng.random((20, 24)) * 255).astype(np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(p)
        rows.append({"image_id": str(i), "path": str(p), "patient_id": str(i // 2), "split": "train", "A": float(i % 2), "B": np.nan if i % 5 == 0 else float(i % 3 == 0)})
    index = pd.DataFrame(rows)
    return ImageBatches(index, image_size=16, in_chans=1, classes=["A", "B"], batch_size=4, seed=3, drop_last=True)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * 7 * 7, 2))


def step_fn_for(model: nn.Module):
    def step_fn(x, y, gen):
        noise = torch.randn_like(x) * 0.1  # consumes the global RNG, like masking in SSL methods
        logits = model(x + noise)
        known = ~torch.isnan(y)
        return nn.functional.binary_cross_entropy_with_logits(logits[known], y[known]), {}

    return step_fn


def run(batches: ImageBatches, ckpt: Path, stop: int | None = None, model: nn.Module | None = None) -> nn.Module:
    model = model or tiny()
    cfg = OptimCfg(epochs=3, lr=1e-2, min_lr=1e-4, warmup_epochs=1, clip_grad=1.0)
    fit(
        model=model,
        groups=default_param_groups(model, 0.05),
        batches=batches,
        step_fn=step_fn_for(model),
        cfg=cfg,
        seed=11,
        checkpoint=ckpt,
        logger=StageLogger(None, None, None),
        stop_after_steps=stop,
    )
    return model


def test_resume_after_kill_is_bit_exact(batches: ImageBatches, tmp_path: Path) -> None:
    ref = run(batches, tmp_path / "ref.pt")
    # "kill" after 7 steps (mid-epoch 2 of 3: 5 steps per epoch), then resume in a fresh model
    run(batches, tmp_path / "a.pt", stop=7)
    resumed = run(batches, tmp_path / "a.pt", model=tiny())
    for (k, v1), (_, v2) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v1, v2), k


def test_lr_schedule_warmup_and_cosine() -> None:
    assert lr_at(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_at(mid, 100, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 10, 1.0, 1e-6) == pytest.approx(1e-6)


def test_nan_loss_stops_with_step(batches: ImageBatches, tmp_path: Path) -> None:
    model = tiny()

    def bad(x, y, gen):
        return model(x).sum() * float("nan"), {}

    with pytest.raises(NonFiniteLoss, match=r"epoch 0 step 0"):
        fit(model=model, groups=default_param_groups(model, 0.0), batches=batches, step_fn=bad,
            cfg=OptimCfg(epochs=1, lr=1e-3), seed=0, checkpoint=tmp_path / "c.pt", logger=StageLogger(None, None, None))


def test_batches_cover_every_image_once_and_reshuffle(batches: ImageBatches) -> None:
    e0 = np.concatenate([rows for _, rows, _, _ in batches.epoch_batches(0)])
    e1 = np.concatenate([rows for _, rows, _, _ in batches.epoch_batches(1)])
    assert sorted(e0.tolist()) == list(range(20)) and sorted(e1.tolist()) == list(range(20))
    assert e0.tolist() != e1.tolist()
    again = np.concatenate([rows for _, rows, _, _ in batches.epoch_batches(0)])
    assert again.tolist() == e0.tolist()


def test_corrupt_image_skip_and_fail(tmp_path: Path) -> None:
    good = tmp_path / "g.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(good.read_bytes()[:20])  # truncated
    index = pd.DataFrame([{"image_id": "g", "path": str(good)}, {"image_id": "b", "path": str(bad)}])
    skip = ImageBatches(index, image_size=8, in_chans=1, classes=None, batch_size=2, seed=0, shuffle=False)
    (_, rows, x, _), = list(skip.epoch_batches(0))
    assert rows.tolist() == [0] and x.shape == (1, 1, 8, 8)
    assert list(skip.bad.paths) == [str(bad)]
    fail = ImageBatches(index, image_size=8, in_chans=1, classes=None, batch_size=2, seed=0, shuffle=False, policy="fail")
    with pytest.raises(Exception, match="b.png"):
        list(fail.epoch_batches(0))


def test_per_tensor_clipping_rule() -> None:
    from bench.train.loop import clip_gradients

    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5 -> scaled to norm ~2
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> untouched
    clip_gradients([a, b], 2.0, "per_tensor")
    assert torch.allclose(a.grad, torch.tensor([3.0, 4.0, 0.0]) * 2.0 / (5.0 + 1e-6))
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))


def test_mae_pretraining_resume_is_bit_exact(batches: ImageBatches, tmp_path: Path) -> None:
    """A real SSL method (random masking and augmentation draw from torch's RNG every step)."""
    import ssl_methods

    def make():
        torch.manual_seed(0)
        return ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=16, in_chans=1)

    def go(method, ckpt: Path, stop: int | None = None):
        fit(model=method, groups=method.param_groups(0.05), batches=batches, step_fn=lambda x, y, g: method(x),
            cfg=OptimCfg(epochs=2, lr=1e-3, warmup_epochs=1, clip_grad=3.0), seed=5, checkpoint=ckpt,
            logger=StageLogger(None, None, None), after_step=method.after_step, stop_after_steps=stop)
        return method

    ref = go(make(), tmp_path / "ref.pt")
    go(make(), tmp_path / "k.pt", stop=3)
    resumed = go(make(), tmp_path / "k.pt")
    for (k, v1), (_, v2) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v1, v2), k


def test_stop_request_writes_checkpoint_then_resumes_bit_exact(batches: ImageBatches, tmp_path: Path) -> None:
    """A SIGTERM-style request (a flag, polled after each optimiser step) checkpoints at that
    step and raises `Preempted`; the resumed run ends with the uninterrupted run's weights."""
    import signal

    from bench import preempt

    ref = run(batches, tmp_path / "ref.pt")
    model = tiny()
    log = tmp_path / "log.txt"

    def after(progress: float) -> None:
        if round(progress * 15) == 7:  # after global step 7 of 15 (epoch 1, step 2)
            preempt.request(signal.SIGTERM)

    preempt.reset()
    try:
        with pytest.raises(preempt.Preempted) as exc:
            fit(model=model, groups=default_param_groups(model, 0.05), batches=batches, step_fn=step_fn_for(model),
                cfg=OptimCfg(epochs=3, lr=1e-2, min_lr=1e-4, warmup_epochs=1, clip_grad=1.0), seed=11,
                checkpoint=tmp_path / "p.pt", logger=StageLogger(None, None, log), after_step=after)
    finally:
        preempt.reset()
    assert exc.value.signum == signal.SIGTERM
    ck = torch.load(tmp_path / "p.pt", weights_only=True)
    assert (ck["epoch"], ck["step"], ck["global_step"]) == (1, 2, 7)
    assert "stopped on SIGTERM at epoch 1 step 2 (global step 7); checkpoint written" in log.read_text()
    resumed = run(batches, tmp_path / "p.pt", model=tiny())
    for (k, v1), (_, v2) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v1, v2), k


def test_immediate_interrupt_saves_nothing_and_names_the_checkpoint_on_disk(batches: ImageBatches, tmp_path: Path) -> None:
    """A second signal (KeyboardInterrupt mid-step) must not save a possibly half-updated model;
    the log says which checkpoint is on disk (here: the time-based one of the previous step)."""
    model = tiny()
    log = tmp_path / "log.txt"
    inner = step_fn_for(model)
    calls = {"n": 0}

    def step_fn(x, y, gen):
        calls["n"] += 1
        if calls["n"] == 8:  # during global step 8 (epoch 1, step 3)
            raise KeyboardInterrupt
        return inner(x, y, gen)

    with pytest.raises(KeyboardInterrupt):
        fit(model=model, groups=default_param_groups(model, 0.05), batches=batches, step_fn=step_fn,
            cfg=OptimCfg(epochs=3, lr=1e-2), seed=11, checkpoint=tmp_path / "c.pt",
            logger=StageLogger(None, None, log), checkpoint_seconds=0.0)  # checkpoint after every step
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    assert (ck["epoch"], ck["step"], ck["global_step"]) == (1, 2, 7)
    text = log.read_text()
    assert "nothing was saved" in text and "is from epoch 1 step 2 (global step 7)" in text
    assert "checkpoint kept" not in text

    fresh = tiny()
    with pytest.raises(KeyboardInterrupt):
        fit(model=fresh, groups=default_param_groups(fresh, 0.05), batches=batches,
            step_fn=lambda x, y, g: (_ for _ in ()).throw(KeyboardInterrupt()), cfg=OptimCfg(epochs=1, lr=1e-2),
            seed=11, checkpoint=tmp_path / "none.pt", logger=StageLogger(None, None, log))
    assert "no checkpoint is on disk" in log.read_text() and not (tmp_path / "none.pt").exists()


def test_optimiser_settings_come_from_the_stage_section() -> None:
    """One construction for both stages (`OptimCfg.of_section`): what a section sets, defaults otherwise."""
    from bench.matrix import FinetuneCfg, PretrainCfg

    p = PretrainCfg(method="mae", dataset="nih", lr=1e-3, clip_grad=None, betas=(0.9, 0.95), weight_decay_end=0.4).model_dump()
    cfg = OptimCfg.of_section(p)
    assert (cfg.lr, cfg.clip_grad, cfg.betas, cfg.weight_decay_end, cfg.optimizer) == (1e-3, None, (0.9, 0.95), 0.4, "adamw")
    f = FinetuneCfg(optimizer="sgd", lr=0.1, weight_decay=0.0, epochs=3).model_dump()
    cfg = OptimCfg.of_section(f)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.clip_grad, cfg.betas) == ("sgd", 0.1, 0.0, 3, None, (0.9, 0.999))
