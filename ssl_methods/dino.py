"""DINO (Caron et al. 2021; facebookresearch/dino) on timm ViT or ResNet backbones.

Multi-crop inside `forward`: 2 global crops at the input size (RRC 0.4-1; blur p 1.0
on the first, p 0.1 + solarise 0.2 on the second) and `n_local` local crops at
`local_size` (default 96/224 of the input side, RRC 0.05-0.4, blur p 0.5); all get
flip and brightness/contrast jitter (p 0.8). The teacher sees the 2 global crops, the
student all of them. Head: DINOHead (3-layer MLP, L2-normalised bottleneck,
weight-normalised last layer with g fixed to 1 when `norm_last_layer`).

Loss: mean over the 2 * (2 + n_local) - 2 pairs (teacher crop i, student crop v != i)
of -sum softmax((t_i - center) / tau_t) * log_softmax(s_v / tau_s); tau_s = 0.1;
tau_t rises linearly from `warmup_teacher_temp` to `teacher_temp` over the first
`warmup_teacher_temp_frac` of training, then stays. After the loss, the center
follows c <- 0.9 c + 0.1 mean(teacher outputs of both global crops). After each step
the teacher is the EMA of the student with m cosine from 0.996 to 1, and the last
layer stays frozen for the first `freeze_last_layer_frac` of training.
`encoder_state_dict()` exports the teacher backbone (the paper evaluates it).

Local crops get positions by DINO's own interpolation (bicubic, scale_factor with the
+0.1, no antialias; `pos_interp: dino`); `pos_interp: timm` uses timm's
`resample_abs_pos_embed` instead (antialias, size-based), as timm's dynamic_img_size.

Deviations: schedules run on the loop's progress in [0, 1] instead of epochs and
iterations; photometric augmentation is brightness/contrast only (grey images); for
encoders narrower than 384-d (the CPU demo) the head defaults shrink (hidden 512,
bottleneck 128, out_dim 4096). Multi-GPU centering (all_reduce) is not needed on one
device.
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
from ssl_methods.registry import register_method
from ssl_methods.vit_tokens import check_plain_vit, vit_tokens


@dataclass
class DINOConfig:
    out_dim: int | None = None  # None: 65536 for encoders >= 384-d, else 4096
    head_hidden: int | None = None  # None: 2048 / 512
    head_bottleneck: int | None = None  # None: 256 / 128
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_frac: float = 0.0
    center_momentum: float = 0.9
    momentum: float = 0.996
    freeze_last_layer_frac: float = 0.0
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
        self.register_buffer("progress", torch.zeros(()))

    def export_encoder(self) -> nn.Module:
        return self.teacher

    @property
    def last_layer_frozen(self) -> bool:
        return float(self.progress) < self.cfg.freeze_last_layer_frac

    def teacher_temp(self, progress: float) -> float:
        """tau_t: linear warm-up over the first `warmup_teacher_temp_frac`, then constant."""
        c = self.cfg
        if c.warmup_teacher_temp_frac <= 0 or progress >= c.warmup_teacher_temp_frac:
            return c.teacher_temp
        f = progress / c.warmup_teacher_temp_frac
        return c.warmup_teacher_temp + f * (c.teacher_temp - c.warmup_teacher_temp)

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
                batch_center = teacher.mean(dim=0, keepdim=True)
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
