"""Reference pre-training recipes: what each method's authors ran, in one frozen record.

A `Recipe` holds the optimiser side of a method's published configuration (optimiser,
betas, learning-rate scaling rule, weight decay and its schedule, clipping, warm-up,
run length) with the source of every value; the method side (masking, EMA momentum,
temperatures, augmentations, heads) is the method's config dataclass, whose defaults
are the reference values and whose sources are listed in `Recipe.sources` too. Each
method module declares `RECIPE` (and per-family variants where the authors published
one, e.g. MoCo v3 ResNet-50, SimMIM Swin-B) next to its config class, so the whole
recipe is read in one place.

How a recipe becomes a stage's defaults (`Recipe.stage_defaults`, applied by the
matrix to every pre-training field the matrix does not set; an explicit matrix value
always wins):

* lr = base_lr * batch_size / lr_batch (the reference's linear scaling rule; the
  matrix `batch_size` is the effective batch over all devices);
* min_lr likewise when the reference scales it (SimMIM), else the reference value;
* warm-up = the reference's epochs, shortened in proportion for runs shorter than the
  reference (40 of 800 MAE epochs -> 5 of 100), so a short run is not all warm-up;
* betas, weight decay (start -> end of its cosine schedule), clipping (value and
  mode: global norm or per parameter tensor) as published.

Schedules the loop does not have (SimMIM's multistep decay, MoCo v3 ResNet-50's LARS)
are listed in `notes` as deviations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

# the pre-training stage fields a recipe provides (bench/matrix.py `PretrainCfg`)
STAGE_FIELDS = ("lr", "min_lr", "weight_decay", "weight_decay_end", "clip_grad", "clip_mode", "warmup_epochs", "betas")


@dataclass(frozen=True)
class Recipe:
    """One method's published optimiser recipe (for one backbone family).

    `sources` maps a field name (of this record, or of the method's config dataclass)
    to where the value is published: `repo:path` plus the argument or config key.
    """

    method: str
    family: str
    optimizer: str
    betas: tuple[float, float]
    base_lr: float
    lr_batch: int  # lr = base_lr * batch / lr_batch
    min_lr: float
    weight_decay: float
    weight_decay_end: float | None  # None: constant weight decay
    clip_grad: float | None  # None: no clipping
    clip_mode: str  # "global" (one norm over all tensors) or "per_tensor" (DINO's utils.clip_gradients)
    warmup_epochs: float
    epochs: int  # the reference run length the warm-up refers to
    batch_size: int  # the reference effective batch
    eps: float = 1e-8
    scale_min_lr: bool = False  # min_lr follows the same linear scaling rule (SimMIM)
    lr_schedule: str = "linear warm-up from 0, then half-cosine to min_lr, per iteration"
    sources: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def lr_for(self, batch_size: int) -> float:
        """The peak learning rate for an effective batch of `batch_size` images."""
        return self.base_lr * batch_size / self.lr_batch

    def warmup_for(self, epochs: int) -> float:
        """The reference warm-up epochs, shortened in proportion when the run is shorter."""
        return min(self.warmup_epochs, self.warmup_epochs * epochs / self.epochs)

    def stage_defaults(self, epochs: int, batch_size: int) -> dict[str, Any]:
        """Values for the pre-training fields in `STAGE_FIELDS` for a run of this length and batch."""
        min_lr = self.min_lr * batch_size / self.lr_batch if self.scale_min_lr else self.min_lr
        return {
            "lr": self.lr_for(batch_size),
            "min_lr": min_lr,
            "weight_decay": self.weight_decay,
            "weight_decay_end": self.weight_decay_end,
            "clip_grad": self.clip_grad,
            "clip_mode": self.clip_mode,
            "warmup_epochs": self.warmup_for(epochs),
            "betas": self.betas,
        }

    def describe(self, method_config: type | None = None) -> list[str]:
        """Human-readable lines: each optimiser item and each method option default, with its source."""
        src = self.sources
        wd = f"{self.weight_decay:g}" + (f" -> {self.weight_decay_end:g} (cosine)" if self.weight_decay_end is not None else " (constant)")
        clip = "none" if self.clip_grad is None else f"{self.clip_grad:g} ({self.clip_mode.replace('_', '-')})"
        items = [
            ("optimizer", f"{self.optimizer} betas {self.betas} eps {self.eps:g}", src.get("optimizer", src.get("betas", ""))),
            ("lr", f"{self.base_lr:g} x batch/{self.lr_batch} (reference batch {self.batch_size}); "
                   f"min_lr {self.min_lr:g}{' x batch/' + str(self.lr_batch) if self.scale_min_lr else ''}",
             src.get("base_lr", "")),
            ("schedule", self.lr_schedule, src.get("lr_schedule", "")),
            ("warm-up", f"{self.warmup_epochs:g} of {self.epochs} epochs (shortened in proportion for shorter runs)",
             src.get("warmup_epochs", "")),
            ("weight decay", wd, src.get("weight_decay", "")),
            ("clipping", clip, src.get("clip_grad", "")),
        ]
        lines = [f"  recipe ({self.family}):"]
        lines += [f"    {k:<26} {v}" + (f"   [{s}]" if s else "") for k, v, s in items]
        if method_config is not None:
            for f in dataclasses.fields(method_config):
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
                )
                s = src.get(f.name, "")
                lines.append(f"    {f.name:<26} {default!r}" + (f"   [{s}]" if s else ""))
        lines += [f"    note: {n}" for n in self.notes]
        return lines
