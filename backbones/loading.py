"""Load a state dict into a timm backbone with strict checks on the backbone part.

The rule the fine-tune stage relies on: every non-head parameter of the model must
come from the file with the right shape, or loading fails. Head keys (the timm
`classifier`, plus `fc_norm` for global-pool ViTs) may be missing (fine-tuning adds
a fresh head) or have another shape (ImageNet's 1000-way head), in which case the
file's head is dropped. Two adaptations happen before the check: the first conv
is adapted to the model's input channels (`backbones.channels`), and a ViT
`pos_embed` for another token grid is resampled with timm's
`resample_abs_pos_embed` (bicubic, antialias, prefix tokens kept). A DINOv2 file in Meta's
own layout (`dinov2_vitb14[_reg4]_pretrain.pth`: `mask_token`, `register_tokens`) is first put
into timm's layout (`meta_dinov2_to_timm`), so both downloads of the same weights load alike.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from backbones.channels import ChansAdapt, adapt_conv_weight

log = logging.getLogger(__name__)


class BackboneInitError(ValueError):
    """A weights file does not fit the backbone (missing keys or wrong shapes)."""


@dataclass
class LoadReport:
    """What happened when weights were loaded; attached to the model as `bench_init`."""

    source: str
    missing: list[str] = field(default_factory=list)  # head keys only (others raise)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # head keys with another shape
    adapted: list[str] = field(default_factory=list)  # keys changed to fit (channels, pos_embed)


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)  # type: ignore[arg-type]


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes that belong to the classification head of a timm model."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    prefixes = [p + "." for p in _as_tuple(cfg.get("classifier", "head"))]
    if hasattr(model, "fc_norm"):
        prefixes.append("fc_norm.")
    return tuple(prefixes)


def first_conv_key(model: nn.Module) -> str | None:
    """State-dict key of the first conv weight (timm `pretrained_cfg['first_conv']`)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    convs = _as_tuple(cfg.get("first_conv"))
    return f"{convs[0]}.weight" if convs else None


def _is_head(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def load_backbone_weights(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    source: str,
    chans_adapt: ChansAdapt = "mean",
) -> LoadReport:
    """Load `state_dict` into `model` in place; raise `BackboneInitError` on a misfit.

    `source` names the file in messages. Returns the report (also logged).
    """
    report = LoadReport(source=source)
    sd = dict(state_dict)
    if "mask_token" in sd and "pos_embed" in sd:
        sd = meta_dinov2_to_timm(sd)
        report.adapted.append("DINOv2 file in Meta's layout -> timm's (mask_token dropped, register_tokens -> reg_token)")
        state_dict = sd
    target = model.state_dict()
    heads = head_prefixes(model)

    conv_key = first_conv_key(model)
    if conv_key and conv_key in sd and conv_key in target:
        want = target[conv_key].shape[1]
        if sd[conv_key].ndim == 4 and sd[conv_key].shape[1] != want:
            try:
                sd[conv_key] = adapt_conv_weight(sd[conv_key], want, chans_adapt)
            except ValueError as exc:
                raise BackboneInitError(f"{source}: {conv_key}: {exc}") from None
            report.adapted.append(f"{conv_key} ({state_dict[conv_key].shape[1]}->{want} channels, {chans_adapt})")

    if "pos_embed" in sd and "pos_embed" in target and sd["pos_embed"].shape != target["pos_embed"].shape:
        sd["pos_embed"] = _resample_pos_embed(model, sd["pos_embed"], source)
        report.adapted.append(
            f"pos_embed {tuple(state_dict['pos_embed'].shape)}->{tuple(sd['pos_embed'].shape)} (resampled)"
        )

    mismatched: list[str] = []
    for key in list(sd):
        if key not in target:
            continue
        if sd[key].shape != target[key].shape:
            if _is_head(key, heads):
                report.dropped.append(key)
                del sd[key]
            else:
                mismatched.append(f"{key}: file {tuple(sd[key].shape)} vs model {tuple(target[key].shape)}")
    if mismatched:
        raise BackboneInitError(f"{source}: backbone tensors have the wrong shape: " + "; ".join(mismatched))

    missing = [k for k in target if k not in sd]
    bad_missing = [k for k in missing if not _is_head(k, heads) and not k.endswith("num_batches_tracked")]
    if bad_missing:
        shown = ", ".join(bad_missing[:12]) + (f" ... ({len(bad_missing)} in all)" if len(bad_missing) > 12 else "")
        raise BackboneInitError(f"{source}: backbone keys missing from the weights file: {shown}")
    result = model.load_state_dict(sd, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = list(result.unexpected_keys)
    log.info(
        "loaded %s: missing (head) %s, unexpected %s, dropped %s, adapted %s",
        source,
        report.missing,
        report.unexpected,
        report.dropped,
        report.adapted,
    )
    return report


def meta_dinov2_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict in Meta's layout -> timm's `vit_*_dinov2` layout.

    Block, norm and patch-embedding names already agree. Meta's files carry the masked-image
    token of the iBOT loss (`mask_token`), unused by a classifier: dropped. With registers,
    Meta's `pos_embed` has a CLS position and `register_tokens` none, whereas timm's `reg4`
    models add positions to patch tokens only (`no_embed_class`): the CLS position is folded
    into `cls_token` (what the CLS token received at pre-training) and removed from `pos_embed`,
    and `register_tokens` becomes `reg_token`. (timm's own converter does the same.)
    """
    out = {k: v for k, v in sd.items() if k != "mask_token"}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


def _resample_pos_embed(model: nn.Module, posemb: torch.Tensor, source: str) -> torch.Tensor:
    """Resample a ViT `pos_embed` (1, prefix + h*w, D) to the model's patch grid."""
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    n = posemb.shape[1] - prefix
    side = math.isqrt(n)
    if side * side != n:
        raise BackboneInitError(f"{source}: pos_embed has {n} grid tokens, not a square grid; cannot resample")
    new_size = list(model.patch_embed.grid_size)  # type: ignore[union-attr]
    return resample_abs_pos_embed(posemb, new_size=new_size, old_size=[side, side], num_prefix_tokens=prefix)
