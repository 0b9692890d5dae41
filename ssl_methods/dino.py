"""DINO (Caron et al. 2021; facebookresearch/dino) on timm ViT or ResNet backbones.

Multi-crop inside `forward`: 2 global crops at the input size (RRC 0.4-1; blur p 1.0
on the first, p 0.1 + solarise 0.2 on the second) and `n_local` local crops at
`local_size` (default 96/224 of the input side, RRC 0.05-0.4, blur p 0.5); all get
flip and brightness/contrast jitter (p 0.8). The teacher sees the 2 global crops, the
student all of them. Head: DINOHead (3-layer MLP, L2-normalised bottleneck,
weight-normalised last layer with g fixed to 1 when `norm_last_layer`).

Loss: mean over the 2 * (2 + n_local) - 2 pairs (teacher crop i, student crop v != i)
of -sum softmax((t_i - center) / tau_t) * log_softmax(s_v / tau_s); tau_s = 0.1;
tau_t rises per epoch from `warmup_teacher_temp` 0.04 to `teacher_temp` 0.07 over the
first `warmup_teacher_temp_epochs` (30 of the reference's 300; shortened in proportion
for shorter runs), then stays. After the loss, the center follows
c <- 0.9 c + 0.1 mean(teacher outputs of both global crops). After each step the
teacher is the EMA of the student with m cosine from 0.996 to 1, and the last layer
gets no gradient during the first `freeze_last_layer_epochs` (1) epoch(s). Epochs are
counted from the loop's progress and the run length (`set_epochs`; without it, the
reference's 100). The optimiser recipe is `RECIPE`.
`encoder_state_dict()` exports the teacher backbone (the paper evaluates it).

Local crops get positions by DINO's own interpolation (bicubic, scale_factor with the
+0.1, no antialias; `pos_interp: dino`); `pos_interp: timm` uses timm's
`resample_abs_pos_embed` instead (antialias, size-based), as timm's dynamic_img_size.

Deviations: photometric augmentation is brightness/contrast only (saturation, hue and
greyscale are the identity on grey images), applied on [0, 1] pixels; for
encoders narrower than 384-d (the CPU demo) the head defaults shrink (hidden 512,
bottleneck 128, out_dim 4096). Under data parallelism the centre update averages the
teacher outputs of the global batch (an all_reduce, as the reference's `update_center`);
with one process it is the plain batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import backbones
from ssl_methods.augment import multiview_crop
from ssl_methods.base import ConfigError, SSLMethod, cosine_momentum, ema_update, parse_config
from ssl_methods.heads import DINOHead
from ssl_methods.recipe import Recipe
from ssl_methods.registry import register_method
from ssl_methods.vit_tokens import check_plain_vit, vit_tokens


@dataclass
class DINOConfig:
    out_dim: int | None = None  # None: 65536 for encoders >= 384-d, else 4096
    head_hidden: int | None = None  # None: 2048 / 512
    head_bottleneck: int | None = None  # None: 256 / 128
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    # linear warm-up of the teacher temperature over this many epochs (of the reference's 300;
    # shortened in proportion for shorter runs, like the lr warm-up)
    warmup_teacher_temp_epochs: float = 30
    center_momentum: float = 0.9
    momentum: float = 0.996
    freeze_last_layer_epochs: float = 1
    n_local: int = 8
    local_size: int | None = None  # None: round(96 / 224 * img_size) to a patch multiple
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    drop_path_rate: float = 0.1
    augment: bool = True
    # position interpolation for local crops: "dino" (reference formula) or "timm"
    pos_interp: str = "dino"

    def __post_init__(self) -> None:
        if self.pos_interp not in ("dino", "timm"):
            raise ConfigError(f"dino: pos_interp must be 'dino' or 'timm', got {self.pos_interp!r}")
        if self.n_local < 0:
            raise ConfigError(f"dino: n_local must be >= 0, got {self.n_local}")
        if self.warmup_teacher_temp_epochs < 0 or self.freeze_last_layer_epochs < 0:
            raise ConfigError("dino: warmup_teacher_temp_epochs and freeze_last_layer_epochs must be >= 0")


_DINO = "facebookresearch/dino"
_ARGS = f"{_DINO}:main_dino.py"
_BOOST = f"{_DINO}:README.md 'Boosting DINO performance' (ViT-S/16, 300 epochs)"
TEMP_WARMUP_REF_EPOCHS = 300  # the run length the boost's 30 teacher-temperature warm-up epochs belong to
RECIPE = Recipe(
    method="dino", family="vit", optimizer="adamw", betas=(0.9, 0.999), base_lr=5e-4, lr_batch=256, min_lr=1e-6,
    weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0, clip_mode="per_tensor", warmup_epochs=10, epochs=100,
    batch_size=512,
    sources={
        "optimizer": f"{_ARGS} --optimizer adamw; torch.optim.AdamW(params_groups) (PyTorch default betas)",
        "betas": f"{_ARGS} torch.optim.AdamW(params_groups): default betas (0.9, 0.999)",
        "base_lr": f"{_ARGS} --lr 0.0005 'for a reference batch size of 256'; lr * batch_size_per_gpu * world / 256",
        "min_lr": f"{_ARGS} --min_lr 1e-6",
        "weight_decay": f"{_ARGS} --weight_decay 0.04 --weight_decay_end 0.4 (cosine wd_schedule)",
        "clip_grad": f"{_ARGS} --clip_grad 3.0; utils.clip_gradients (per parameter tensor)",
        "warmup_epochs": f"{_ARGS} --warmup_epochs 10 --epochs 100 (README: 8 GPUs x 64; the 300-epoch boost keeps 10)",
        "lr_schedule": f"{_DINO}:utils.py cosine_scheduler",
        "teacher_temp": f"{_BOOST} --teacher_temp 0.07",
        "warmup_teacher_temp": f"{_ARGS} --warmup_teacher_temp 0.04",
        "warmup_teacher_temp_epochs": f"{_BOOST} --warmup_teacher_temp_epochs 30",
        "freeze_last_layer_epochs": f"{_ARGS} --freeze_last_layer 1; utils.cancel_gradients_last_layer",
        "norm_last_layer": f"{_ARGS} --norm_last_layer True (help: False for vit_small is better but can be unstable)",
        "student_temp": f"{_ARGS} DINOLoss(student_temp=0.1)",
        "center_momentum": f"{_ARGS} DINOLoss(center_momentum=0.9)",
        "momentum": f"{_ARGS} --momentum_teacher 0.996, cosine to 1 per iteration",
        "out_dim": f"{_ARGS} --out_dim 65536",
        "head_hidden": f"{_DINO}:vision_transformer.py DINOHead(hidden_dim=2048)",
        "head_bottleneck": f"{_DINO}:vision_transformer.py DINOHead(bottleneck_dim=256)",
        "n_local": f"{_ARGS} --local_crops_number 8",
        "global_scale": f"{_ARGS} --global_crops_scale 0.4 1.",
        "local_scale": f"{_ARGS} --local_crops_scale 0.05 0.4",
        "local_size": f"{_ARGS} DataAugmentationDINO RandomResizedCrop(96, ...)",
        "drop_path_rate": f"{_ARGS} --drop_path_rate 0.1",
    },
    notes=(
        "views: ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 applied as brightness/contrast 0.4 on [0, 1] pixels "
        "(saturation/hue/RandomGrayscale are the identity on grey images); blur p 1.0 / 0.1 / 0.5, solarise 0.2 "
        "on global view 2",
        "norm_last_layer True: the argparse default (the README boost uses False for ViT-S, 'can be unstable')",
        "momentum 0.996: argparse default (help: 0.9995 for batch 256)",
        "AMP: bf16 autocast (reference: fp16 + GradScaler)",
    ),
)


def dino_loss(student: Tensor, teacher: Tensor, center: Tensor, n_crops: int, tau_s: float, tau_t: float) -> Tensor:
    """DINO cross-entropy averaged over (teacher global crop i, student crop v != i).

    student: (n_crops * B, K) logits, crop-major; teacher: (2 * B, K) logits of the
    two global crops (the first two student crops); center: (1, K).
    """
    s = (student / tau_s).chunk(n_crops)
    t = F.softmax((teacher - center) / tau_t, dim=-1).detach().chunk(2)
    total = student.new_zeros(())
    n_terms = 0
    for iq, q in enumerate(t):
        for v in range(n_crops):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
            n_terms += 1
    return total / n_terms


@register_method("dino")
class DINO(SSLMethod):
    name = "dino"
    supported_families = ("vit", "resnet")
    recipes = {"vit": RECIPE}
    config_class = DINOConfig

    def __init__(
        self, *, backbone: str, img_size: int, in_chans: int = 1, init: str | Path = "random", **cfg: Any
    ) -> None:
        super().__init__(backbone=backbone, img_size=img_size, in_chans=in_chans, init=init)
        c = self.cfg = parse_config(DINOConfig, cfg, self.name)
        self.family = backbones.get_spec(backbone).family
        # stochastic depth on the ViT student only (the reference ResNet-50 has none)
        drop_path = c.drop_path_rate if self.family == "vit" else 0.0
        self.encoder = backbones.create(
            backbone, init=init, in_chans=in_chans, num_classes=0, img_size=img_size, drop_path_rate=drop_path
        )
        self.teacher = backbones.create(backbone, in_chans=in_chans, num_classes=0, img_size=img_size)
        self.teacher.load_state_dict(self.encoder.state_dict())
        if self.family == "vit":
            check_plain_vit(self.encoder, self.name)
            self.patch = int(self.encoder.patch_embed.patch_size[0])
        else:
            self.patch = 32  # total stride of a ResNet; local crops stay a multiple of it
        dim = backbones.feature_dim(self.encoder)
        wide = dim >= 384
        self.out_dim = c.out_dim or (65536 if wide else 4096)
        hidden = c.head_hidden or (2048 if wide else 512)
        bottleneck = c.head_bottleneck or (256 if wide else 128)
        self.head = DINOHead(dim, self.out_dim, hidden, bottleneck, c.norm_last_layer)
        self.teacher_head = DINOHead(dim, self.out_dim, hidden, bottleneck, c.norm_last_layer)
        self.teacher_head.load_state_dict(self.head.state_dict())
        for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, self.out_dim))
        local = c.local_size or max(self.patch, round(96 / 224 * img_size / self.patch) * self.patch)
        self.local_size = int(local)
        self.momentum = c.momentum
        # training progress in [0, 1] (teacher temperature, last-layer freeze); a buffer so
        # that a resumed run continues the schedules from its checkpoint
        # float64: a float32 progress can land just before an epoch boundary (0.01 -> 0.0099999998)
        self.register_buffer("progress", torch.zeros((), dtype=torch.float64))

    def export_encoder(self) -> nn.Module:
        return self.teacher

    @property
    def run_epochs(self) -> int:
        """The run length (`set_epochs`); without one, the reference recipe's."""
        return self.epochs or RECIPE.epochs

    def epoch_at(self, progress: float) -> int:
        """The (0-based) epoch a step at `progress` belongs to: steps done / steps per epoch."""
        return int(progress * self.run_epochs + 1e-6)

    @property
    def ddp_find_unused_parameters(self) -> bool:
        """DistributedDataParallel must expect parameters without gradient (the frozen last
        layer) in some steps; read by `bench.distributed.wrap`."""
        return self.cfg.freeze_last_layer_epochs > 0

    @property
    def last_layer_frozen(self) -> bool:
        """True during the first `freeze_last_layer_epochs` epochs (`cancel_gradients_last_layer`)."""
        return self.epoch_at(float(self.progress)) < self.cfg.freeze_last_layer_epochs

    def teacher_temp_warmup_epochs(self) -> int:
        """Warm-up length in whole epochs: the configured one, shortened in proportion when
        the run is shorter than the boost recipe's 300 epochs (as the lr warm-up)."""
        w = self.cfg.warmup_teacher_temp_epochs
        return int(round(min(w, w * self.run_epochs / TEMP_WARMUP_REF_EPOCHS)))

    def teacher_temp(self, progress: float) -> float:
        """tau_t per epoch, as DINOLoss: linspace(warmup_teacher_temp, teacher_temp, W)[epoch]
        for the first W warm-up epochs, then `teacher_temp`."""
        c = self.cfg
        w = self.teacher_temp_warmup_epochs()
        epoch = self.epoch_at(progress)
        if epoch >= w:
            return c.teacher_temp
        if w == 1:
            return c.warmup_teacher_temp
        return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * epoch / (w - 1)

    def after_step(self, progress: float) -> None:
        self.progress.fill_(float(progress))
        self.momentum = cosine_momentum(self.cfg.momentum, progress)
        ema_update(self.teacher, self.encoder, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)

    def make_crops(self, images: Tensor) -> list[Tensor]:
        """[global 1, global 2, local 1..n_local], each (B, C, h, w)."""
        c = self.cfg
        size = (images.shape[2], images.shape[3])
        if not (c.augment and self.training):
            small = F.interpolate(images, size=(self.local_size, self.local_size), mode="bilinear", antialias=True)
            return [images, images] + [small] * c.n_local
        # blur sigmas are 0.1-2 px at 224-px training; scale them with img_size for every crop
        g_ref = 224 * images.shape[2] / self.img_size
        l_ref = 224 * self.local_size / self.img_size
        crops = [
            multiview_crop(images, size, scale=c.global_scale, blur_p=1.0, ref_size=g_ref),
            multiview_crop(images, size, scale=c.global_scale, blur_p=0.1, solarize_p=0.2, ref_size=g_ref),
        ]
        for _ in range(c.n_local):
            crops.append(multiview_crop(images, self.local_size, scale=c.local_scale, blur_p=0.5, ref_size=l_ref))
        return crops

    def _features(self, net: nn.Module, crops: list[Tensor]) -> Tensor:
        """Pooled features, one backbone pass per run of equal-size crops (MultiCropWrapper)."""
        out: list[Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-2:] == crops[i].shape[-2:]:
                j += 1
            batch = torch.cat(crops[i:j], dim=0)
            if self.family == "vit":
                tokens, _, _ = vit_tokens(net, batch, pos_interp=self.cfg.pos_interp)
                out.append(net.norm(tokens)[:, 0])
            else:
                out.append(net(batch))
            i = j
        return torch.cat(out, dim=0)

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"dino: expected (B, {self.in_chans}, H, W) images, got {tuple(images.shape)}")
        crops = self.make_crops(images)
        student = self.head(self._features(self.encoder, crops), self.last_layer_frozen).float()
        with torch.no_grad():
            teacher = self.teacher_head(self._features(self.teacher, crops[:2])).float()
        tau_t = self.teacher_temp(float(self.progress))
        center = self.center.clone()
        loss = dino_loss(student, teacher, center, len(crops), c.student_temp, tau_t)
        if self.training:
            with torch.no_grad():
                batch_center = teacher.sum(dim=0, keepdim=True)
                n = teacher.shape[0]
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(batch_center)  # every rank: the global batch's mean
                    n *= torch.distributed.get_world_size()
                batch_center = batch_center / n
                self.center.mul_(c.center_momentum).add_(batch_center, alpha=1 - c.center_momentum)
        with torch.no_grad():  # collapse monitors: H(teacher targets) and KL = loss - H
            q = F.softmax((teacher - center) / tau_t, dim=-1)
            entropy = float(-(q * torch.log(q.clamp(min=1e-12))).sum(dim=-1).mean())
        logs = {
            "loss": float(loss.detach()),
            "teacher_entropy": entropy,
            "kl": float(loss.detach()) - entropy,
            "teacher_temp": tau_t,
            "momentum": self.momentum,
        }
        return loss, logs
