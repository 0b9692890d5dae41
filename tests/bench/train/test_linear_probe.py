"""Linear probes learn from frozen features that carry the signal, and only from the signal.

The task is built in the encoder's own feature space: random smooth images go through a
fixed (seeded, untrained) encoder, and each image's class is the quadrant of its
standardised features along the two leading principal directions, images near a
boundary left out. The classes are therefore linearly separable in exactly the
features the probe reads (mean-pooled, CLS or flattened tokens). The probe is trained
by the project's training loop with the demo's short schedule (AdamW, lr 3e-3, a few
dozen steps), and must reach high balanced accuracy on held-out images; trained on
shuffled labels it must stay at chance. Before the probe standardised its features, a
schedule like this one left it at the class prior (balanced accuracy = chance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

import backbones
from bench.tracking import StageLogger
from bench.train.finetune import LinearProbe, build_model, cross_entropy_onehot
from bench.train.loop import OptimCfg, default_param_groups, fit

SIZE = 32
N_TRAIN, N_TEST = 192, 96


class TensorBatches:
    """In-memory stand-in for `ImageBatches` (same iteration contract), seeded per epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, np.ndarray, torch.Tensor, torch.Tensor]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        for step in range(start_step, len(self)):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield step, rows, self.x[rows], self.y[rows]


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """(n, 1, SIZE, SIZE) standardised random images with blob-like structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x + 0.1 * torch.randn(n, 1, SIZE, SIZE, generator=g)


def quadrant_task(probe: LinearProbe, n_train: int, n_test: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Images and 4 linearly separable classes (quadrants along the top-2 principal directions)."""
    x = smooth_images(3 * (n_train + n_test), seed=1)
    f = probe.features(x).double().numpy()
    z = (f - f[: 3 * n_train].mean(0)) / (f[: 3 * n_train].std(0) + 1e-6)
    _, _, vt = np.linalg.svd(z[: 3 * n_train], full_matrices=False)
    p = z @ vt[:2].T
    margin = np.abs(p).min(axis=1)
    keep = np.flatnonzero(margin > np.quantile(margin, 0.4))  # clear of the boundaries
    labels = 2 * (p[:, 0] > 0) + (p[:, 1] > 0)
    keep = keep[: n_train + n_test]
    tr, te = keep[:n_train], keep[n_train:]
    return x[tr], labels[tr], x[te], labels[te]


def train_probe(probe: LinearProbe, x: torch.Tensor, labels: np.ndarray, tmp_path: Path, epochs: int = 6) -> None:
    y = torch.from_numpy(np.eye(4, dtype=np.float32)[labels])
    tmp_path.mkdir(parents=True, exist_ok=True)

    def step_fn(xb: torch.Tensor, yb: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        assert yb is not None
        return cross_entropy_onehot(probe(xb), yb), {}

    fit(
        model=probe,
        groups=default_param_groups(probe, 0.05),
        batches=TensorBatches(x, y, batch_size=32, seed=0),  # type: ignore[arg-type]
        step_fn=step_fn,
        cfg=OptimCfg(epochs=epochs, lr=3e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=1),
        seed=0,
        checkpoint=tmp_path / "probe.pt",
        logger=StageLogger(None, None, None),
    )


def balanced_acc(probe: LinearProbe, x: torch.Tensor, labels: np.ndarray) -> float:
    probe.eval()
    with torch.no_grad():
        pred = probe(x).argmax(1).numpy()
    return float(balanced_accuracy_score(labels, pred))


def make_probe(pool: str, common: float = 0.0) -> LinearProbe:
    """A probe on a seeded, untrained tiny ViT.

    `common` > 0 adds a fixed random offset of that many standard deviations to every
    patch embedding, so that all images' features share a large common component and
    differ by a few percent of their scale, as a pre-trained MAE encoder's do (measured
    on the demo's OCT encoder: between-image sd / mean |feature| = 0.03; `common=4` gives
    0.03 for mean and CLS pooling).
    """
    torch.manual_seed(0)
    model = build_model("vit_tiny_demo", init="random", in_chans=1, num_classes=4, img_size=SIZE, pool=pool, mode="linear_probe")
    assert isinstance(model, LinearProbe)
    if common:
        bias = model.encoder.patch_embed.proj.bias
        with torch.no_grad():
            bias += common * torch.randn(bias.shape, generator=torch.Generator().manual_seed(7))
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pool", "common"),
    [("avg", 4.0), ("token", 4.0), ("flatten", 4.0), ("avg", 0.0)],
    ids=["mean-common", "cls-common", "flattened-common", "mean-plain"],
)
def test_probe_learns_linearly_separable_classes_and_not_shuffled_labels(pool: str, common: float, tmp_path: Path) -> None:
    probe = make_probe(pool, common)
    encoder = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    x_tr, y_tr, x_te, y_te = quadrant_task(probe, N_TRAIN, N_TEST)
    assert min(np.bincount(y_tr, minlength=4)) >= 20  # every class present
    train_probe(probe, x_tr, y_tr, tmp_path / "true")
    assert balanced_acc(probe, x_te, y_te) >= 0.85
    assert all(torch.equal(v, probe.encoder.state_dict()[k]) for k, v in encoder.items())  # frozen

    shuffled = make_probe(pool, common)
    train_probe(shuffled, x_tr, np.random.default_rng(0).permutation(y_tr), tmp_path / "shuffled")
    assert balanced_acc(shuffled, x_te, y_te) < 0.45  # chance is 0.25; sd about 0.045 at n = 96


def test_probe_keeps_a_batchnorm_encoder_frozen_and_in_eval_mode() -> None:
    """A CNN encoder's BatchNorm statistics must not drift while the probe trains."""
    torch.manual_seed(0)
    probe = build_model("resnet_tiny_demo", init="random", in_chans=1, num_classes=3, img_size=SIZE, mode="linear_probe")
    before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    probe.train()
    assert not probe.encoder.training and probe.norm.training
    probe(smooth_images(8, seed=3) * 5 + 2)
    assert all(torch.equal(v, probe.encoder.state_dict()[k]) for k, v in before.items())
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


def test_probe_features_are_standardised_whatever_their_scale() -> None:
    """The head sees unit-scale features even when the encoder's differ by a few percent
    around a large common component (the MAE case that left the probe at chance)."""
    probe = make_probe("avg")
    probe.train()
    f = probe.features(smooth_images(64, seed=4))
    common = f.mean(0, keepdim=True)
    squeezed = common * 50 + (f - common) * 0.02
    out = probe.norm(squeezed)
    assert torch.allclose(out.mean(0), torch.zeros(out.shape[1]), atol=1e-2)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(out.shape[1]), atol=0.05)


def test_flatten_pool_is_for_probes_only() -> None:
    with pytest.raises(ValueError, match="linear-probe"):
        build_model("vit_tiny_demo", init="random", in_chans=1, num_classes=2, img_size=SIZE, pool="flatten")


def test_flattened_features_cover_every_patch_token() -> None:
    probe = make_probe("flatten")
    enc = probe.encoder
    tokens = (SIZE // 8) ** 2
    assert probe.head.in_features == tokens * backbones.feature_dim(enc)
