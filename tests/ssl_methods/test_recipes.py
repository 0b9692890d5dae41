"""Each method's defaults equal its authors' published configuration.

Every expected value below is written out with its source (repository + file / argument),
read from the reference repositories at these commits:
facebookresearch/mae efb2a80, microsoft/SimMIM d3e29bc, Sara-Ahmed/GMML 1882712,
Sara-Ahmed/SiT 7f22e9c, facebookresearch/dino 7c446df, facebookresearch/moco-v3 c349e6e.
A default that drifts from the reference fails here.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import ssl_methods
from bench.cli import main as cli_main
from bench.matrix import load_matrix
from ssl_methods.dino import DINOConfig
from ssl_methods.gmml import GMMLConfig
from ssl_methods.mae import DECODERS, MAEConfig
from ssl_methods.mocov3 import MoCoV3Config
from ssl_methods.recipe import STAGE_FIELDS, Recipe
from ssl_methods.simmim import SimMIMConfig
from ssl_methods.sit import SiTConfig

# method -> (optimiser recipe fields, method option defaults), each value with its source
REFERENCE: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mae": (
        {
            "optimizer": "adamw",  # mae main_pretrain.py: torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.95))
            "betas": (0.9, 0.95),  # mae main_pretrain.py: betas=(0.9, 0.95)
            "base_lr": 1.5e-4,  # mae PRETRAIN.md: --blr 1.5e-4
            "lr_batch": 256,  # mae main_pretrain.py: args.lr = args.blr * eff_batch_size / 256
            "min_lr": 0.0,  # mae main_pretrain.py: --min_lr default 0.
            "weight_decay": 0.05,  # mae PRETRAIN.md: --weight_decay 0.05
            "weight_decay_end": None,  # mae: constant weight decay (no wd schedule in engine_pretrain.py)
            "clip_grad": None,  # mae engine_pretrain.py: loss_scaler(loss, optimizer, parameters=...) -> clip_grad=None
            "warmup_epochs": 40,  # mae PRETRAIN.md: --warmup_epochs 40
            "epochs": 800,  # mae PRETRAIN.md: --epochs 800
            "batch_size": 4096,  # mae PRETRAIN.md: 64 per GPU x 8 nodes x 8 GPUs
        },
        {
            "mask_ratio": 0.75,  # mae PRETRAIN.md: --mask_ratio 0.75
            "norm_pix_loss": True,  # mae PRETRAIN.md: --norm_pix_loss
            "fixed_pos_embed": True,  # mae models_mae.py: pos_embed nn.Parameter(..., requires_grad=False)
            "drop_path_rate": 0.0,  # mae models_mae.py: Block(...) without drop_path
            "crop_scale": (0.2, 1.0),  # mae main_pretrain.py: RandomResizedCrop(args.input_size, scale=(0.2, 1.0))
            "hflip": 0.5,  # mae main_pretrain.py: RandomHorizontalFlip()
        },
    ),
    "simmim": (
        {
            "optimizer": "adamw",  # SimMIM config.py: _C.TRAIN.OPTIMIZER.NAME = 'adamw'
            "betas": (0.9, 0.999),  # SimMIM config.py: _C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)
            "eps": 1e-8,  # SimMIM config.py: _C.TRAIN.OPTIMIZER.EPS = 1e-8
            "base_lr": 1e-4,  # SimMIM configs/vit_base__800ep/simmim_pretrain__vit_base__img224__800ep.yaml: BASE_LR 1e-4
            "lr_batch": 512,  # SimMIM main_simmim.py: BASE_LR * DATA.BATCH_SIZE * world_size / 512.0
            "min_lr": 5e-6,  # SimMIM config.py: _C.TRAIN.MIN_LR = 5e-6 (scaled like the lr)
            "scale_min_lr": True,  # SimMIM main_simmim.py: linear_scaled_min_lr = MIN_LR * batch * world / 512
            "weight_decay": 0.05,  # SimMIM ViT-B 800ep yaml: WEIGHT_DECAY 0.05
            "weight_decay_end": None,  # SimMIM: constant weight decay
            "clip_grad": 5.0,  # SimMIM config.py: _C.TRAIN.CLIP_GRAD = 5.0
            "clip_mode": "global",  # SimMIM main_simmim.py: torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD)
            "warmup_epochs": 10,  # SimMIM ViT-B 800ep yaml: WARMUP_EPOCHS 10
            "epochs": 800,  # SimMIM ViT-B 800ep yaml: EPOCHS 800
            "batch_size": 2048,  # SimMIM README: 16 GPUs x 128
        },
        {
            "mask_ratio": 0.6,  # SimMIM ViT-B 800ep yaml: DATA.MASK_RATIO 0.6
            "mask_patch_size": 32,  # SimMIM ViT-B 800ep yaml: DATA.MASK_PATCH_SIZE 32
            "crop_scale": (0.67, 1.0),  # SimMIM data/data_simmim.py: RandomResizedCrop(IMG_SIZE, scale=(0.67, 1.))
            "crop_ratio": (3 / 4, 4 / 3),  # SimMIM data/data_simmim.py: ratio=(3. / 4., 4. / 3.)
            "hflip": 0.5,  # SimMIM data/data_simmim.py: RandomHorizontalFlip()
        },
    ),
    "gmml": (
        {
            "optimizer": "adamw",  # GMML main.py: torch.optim.AdamW(params_groups)
            "betas": (0.9, 0.999),  # GMML main.py: AdamW without betas -> PyTorch default (0.9, 0.999)
            "base_lr": 5e-4,  # GMML main.py: --lr 0.0005
            "lr_batch": 256,  # GMML main.py: args.lr * (args.batch_size * utils.get_world_size()) / 256.
            "min_lr": 1e-6,  # GMML main.py: --min_lr 1e-6
            "weight_decay": 0.04,  # GMML main.py: --weight_decay 0.04
            "weight_decay_end": 0.4,  # GMML main.py: --weight_decay_end 0.4
            "clip_grad": 3.0,  # GMML main.py: --clip_grad 3.0
            "clip_mode": "per_tensor",  # GMML utils.py: clip_gradients, one norm per parameter tensor
            "warmup_epochs": 10,  # GMML main.py: --warmup_epochs 10
            "epochs": 800,  # GMML main.py: --epochs 800
            "batch_size": 256,  # GMML README: --nproc_per_node=4 x main.py --batch_size 64
        },
        {
            "n_views": 2,  # GMML datasets_utils.py DataAugmentationSiT: two clean/corrupted global crops
            "coverage": (0.5, 0.75),  # GMML main.py --drop_perc 0.75; GMML_drop_rand_patches U(min(0.5, 0.75), 0.75)
            "fill": "noise",  # GMML main.py: --drop_type noise
            "replace_prob": 0.5,  # GMML datasets_utils.py GMML_replace_list: rep_drop = 1 / (1 + 1)
            "replace_coverage": (0.3, 0.3),  # GMML main.py: --drop_replace 0.3
            "max_side_frac": 0.3,  # GMML datasets_utils.py GMML_drop_rand_patches(max_block_sz=0.3)
            "align": 1,  # GMML main.py: --drop_align 1
            "drop_path_rate": 0.1,  # GMML vision_transformer.py: VisionTransformer(drop_path_rate=0.1), not overridden
            "crop_scale": (0.05, 1.0),  # GMML datasets_utils.py: global_crops_scale = (0.05, 1.) if no local crops
            "hflip": 0.5,  # GMML datasets_utils.py: RandomHorizontalFlip(p=0.5)
            "jitter_p": 0.3,  # GMML datasets_utils.py color_jitter1: RandomApply([ColorJitter(...)], p=0.3)
            "jitter_strength": 0.1,  # GMML datasets_utils.py color_jitter1: ColorJitter(brightness=0.1, contrast=0.1, ...)
            "blur_p": 0.1,  # GMML datasets_utils.py clean_transfo: GaussianBlur(0.1)
        },
    ),
    "sit": (
        {
            "optimizer": "adamw",  # SiT main.py: torch.optim.AdamW(utils.get_params_groups(student))
            "betas": (0.9, 0.999),  # SiT main.py: AdamW without betas -> PyTorch default
            "base_lr": 5e-4,  # SiT main.py: --lr 0.0005
            "lr_batch": 256,  # SiT main.py: args.lr * (args.batch_size * utils.get_world_size()) / 256.
            "min_lr": 1e-6,  # SiT main.py: --min_lr 1e-6
            "weight_decay": 0.04,  # SiT main.py: --weight_decay 0.04
            "weight_decay_end": 0.1,  # SiT main.py: --weight_decay_end 0.1
            "clip_grad": 3.0,  # SiT main.py: --clip_grad 3.0
            "clip_mode": "per_tensor",  # SiT utils.py: clip_gradients
            "warmup_epochs": 10,  # SiT main.py: --warmup_epochs 10
            "epochs": 800,  # SiT main.py: --epochs 800
            "batch_size": 256,  # SiT README: --nproc_per_node=4 ... --batch_size 64
        },
        {
            "coverage": (0.5, 0.5),  # SiT main.py: --drop_perc 0.5 -> U(min(0.5, 0.5), 0.5)
            "fill": "zeros",  # SiT main.py: --drop_type zeros
            "replace_prob": 0.5,  # SiT main.py collate_batch -> GMML_replace_list(drop_type='noise'): 1 / 2
            "replace_coverage": (0.3, 0.3),  # SiT main.py: --drop_replace 0.3
            "max_side_frac": 0.3,  # SiT datasets_utils.py: GMML_drop_rand_patches(max_block_sz=0.3)
            "align": 1,  # SiT main.py: --drop_align 1
            "out_dim": 256,  # SiT main.py: --out_dim 256
            "temperature": 0.2,  # SiT main.py: --simclr_temp 0.2
            "lmbda": 1.0,  # SiT main.py: --lmbda 1
            "momentum": 0.996,  # SiT main.py: --momentum_teacher 0.996
            "drop_path_rate": 0.1,  # SiT main.py: --drop_path_rate 0.1
            "crop_scale": (0.2, 1.0),  # SiT datasets_utils.py: RandomResizedCrop(224, scale=(0.2, 1.))
            "hflip": 0.5,  # SiT datasets_utils.py: RandomHorizontalFlip(p=0.5)
        },
    ),
    "dino": (
        {
            "optimizer": "adamw",  # dino main_dino.py: --optimizer adamw; torch.optim.AdamW(params_groups)
            "betas": (0.9, 0.999),  # dino main_dino.py: AdamW without betas -> PyTorch default
            "base_lr": 5e-4,  # dino main_dino.py: --lr 0.0005 ("for a reference batch size of 256")
            "lr_batch": 256,  # dino main_dino.py: args.lr * (batch_size_per_gpu * world_size) / 256.
            "min_lr": 1e-6,  # dino main_dino.py: --min_lr 1e-6
            "weight_decay": 0.04,  # dino main_dino.py: --weight_decay 0.04
            "weight_decay_end": 0.4,  # dino main_dino.py: --weight_decay_end 0.4
            "clip_grad": 3.0,  # dino main_dino.py: --clip_grad 3.0
            "clip_mode": "per_tensor",  # dino utils.py: clip_gradients (per parameter)
            "warmup_epochs": 10,  # dino main_dino.py: --warmup_epochs 10
            "epochs": 100,  # dino main_dino.py: --epochs 100 (README vanilla ViT-S run; the 300-epoch boost keeps 10 warm-up)
            "batch_size": 512,  # dino README vanilla run: 8 GPUs x --batch_size_per_gpu 64
        },
        {
            "norm_last_layer": True,  # dino main_dino.py: --norm_last_layer default True
            "student_temp": 0.1,  # dino main_dino.py: DINOLoss(..., student_temp=0.1)
            "teacher_temp": 0.07,  # dino README boost: --teacher_temp 0.07
            "warmup_teacher_temp": 0.04,  # dino main_dino.py: --warmup_teacher_temp 0.04
            "warmup_teacher_temp_epochs": 30,  # dino README boost: --warmup_teacher_temp_epochs 30
            "center_momentum": 0.9,  # dino main_dino.py: DINOLoss(..., center_momentum=0.9)
            "momentum": 0.996,  # dino main_dino.py: --momentum_teacher 0.996
            "freeze_last_layer_epochs": 1,  # dino main_dino.py: --freeze_last_layer 1
            "n_local": 8,  # dino main_dino.py: --local_crops_number 8
            "global_scale": (0.4, 1.0),  # dino main_dino.py: --global_crops_scale 0.4 1.
            "local_scale": (0.05, 0.4),  # dino main_dino.py: --local_crops_scale 0.05 0.4
            "drop_path_rate": 0.1,  # dino main_dino.py: --drop_path_rate 0.1
        },
    ),
    "mocov3": (
        {
            "optimizer": "adamw",  # moco-v3 CONFIG.md ViT commands: --optimizer=adamw
            "betas": (0.9, 0.999),  # moco-v3 main_moco.py: torch.optim.AdamW(model.parameters(), lr, weight_decay=wd)
            "base_lr": 1.5e-4,  # moco-v3 CONFIG.md ViT commands: --lr=1.5e-4
            "lr_batch": 256,  # moco-v3 main_moco.py: args.lr = args.lr * args.batch_size / 256
            "min_lr": 0.0,  # moco-v3 main_moco.py adjust_learning_rate: half-cycle cosine to 0
            "weight_decay": 0.1,  # moco-v3 CONFIG.md ViT commands: --weight-decay=.1
            "weight_decay_end": None,  # moco-v3: constant weight decay
            "clip_grad": None,  # moco-v3 main_moco.py: scaler.step(optimizer), no clipping
            "warmup_epochs": 40,  # moco-v3 CONFIG.md ViT commands: --warmup-epochs=40
            "epochs": 300,  # moco-v3 CONFIG.md ViT commands: --epochs=300
            "batch_size": 4096,  # moco-v3 main_moco.py: -b default 4096 ("Below are our pre-trained ViT models ... batch 4096")
        },
        {
            "out_dim": 256,  # moco-v3 main_moco.py: --moco-dim 256
            "momentum": 0.99,  # moco-v3 main_moco.py: --moco-m 0.99 (+ --moco-m-cos in every CONFIG.md command)
            "drop_path_rate": 0.0,  # moco-v3 vits.py: no drop path
            "hflip": 0.5,  # moco-v3 main_moco.py: RandomHorizontalFlip()
        },
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_recipe_equals_the_published_configuration(name: str) -> None:
    optimiser, options = REFERENCE[name]
    rec = ssl_methods.recipe(name)
    assert rec.method == name and rec.family == "vit"
    got = {k: getattr(rec, k) for k in optimiser}
    assert got == optimiser
    assert rec.clip_mode in ("global", "per_tensor")
    cls = ssl_methods.METHODS.get(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_class)}
    assert {k: defaults[k] for k in options} == options
    # every optimiser item and every pinned option names its source
    for key in ("betas", "base_lr", "weight_decay", "clip_grad", "warmup_epochs", *options):
        assert rec.sources.get(key), f"{name}: no source for {key}"


def test_family_dependent_defaults_resolve_to_the_reference() -> None:
    """Options left `None` in the config resolve per backbone family as the references do."""
    torch.manual_seed(0)
    # moco-v3: ViT --moco-t=.2 and --crop-min default 0.08; ResNet-50 --moco-t default 1.0 and --crop-min=.2
    vit = ssl_methods.create("mocov3", backbone="vit_tiny_demo", img_size=32)
    r50 = ssl_methods.create("mocov3", backbone="resnet_tiny_demo", img_size=32)
    assert (vit.temperature, vit.crop_scale) == (0.2, (0.08, 1.0))  # type: ignore[attr-defined]
    assert (r50.temperature, r50.crop_scale) == (1.0, (0.2, 1.0))  # type: ignore[attr-defined]
    # moco-v3 CONFIG.md ViT commands: --stop-grad-conv1
    assert not vit.encoder.patch_embed.proj.weight.requires_grad  # type: ignore[union-attr]
    # SimMIM: MODEL.DROP_PATH_RATE 0.1 in the ViT-B config, 0.0 in the Swin-B config
    sm_vit = ssl_methods.create("simmim", backbone="vit_tiny_demo", img_size=64)
    sm_swin = ssl_methods.create("simmim", backbone="swin_tiny_demo", img_size=64)
    assert sm_vit.encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # type: ignore[union-attr]
    assert all(
        not hasattr(m, "drop_prob") or m.drop_prob == 0.0 for m in sm_swin.encoder.modules()  # type: ignore[union-attr]
    )
    assert ssl_methods.recipe("simmim", "swin_tiny_demo").family == "swin"
    assert ssl_methods.recipe("mocov3", "resnet_tiny_demo").family == "resnet"
    # DINO has one published recipe: every family falls back to it
    assert ssl_methods.recipe("dino", "resnet_tiny_demo").family == "vit"


def test_mae_decoder_is_a_named_option() -> None:
    """models_mae.py mae_vit_*: decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16."""
    assert DECODERS["reference"] == (512, 8, 16)
    assert DECODERS["light"] == (256, 4, 8)  # the project's ViT-S choice
    assert MAEConfig().decoder == "auto"
    torch.manual_seed(0)
    ref = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=32, decoder="reference")
    assert ref.decoder_embed.out_features == 512 and len(ref.decoder_blocks) == 8  # type: ignore[union-attr]
    assert ref.decoder_blocks[0].attn.num_heads == 16  # type: ignore[index]
    auto = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=32)
    assert (auto.decoder_embed.out_features, len(auto.decoder_blocks)) == (128, 2)  # type: ignore[union-attr]
    with pytest.raises(ssl_methods.ConfigError, match="decoder"):
        ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=32, decoder="huge")


def test_stage_defaults_scale_lr_and_shorten_warmup() -> None:
    mae = ssl_methods.recipe("mae")
    d = mae.stage_defaults(epochs=100, batch_size=512)
    assert d["lr"] == pytest.approx(1.5e-4 * 512 / 256)  # blr * batch / 256
    assert d["warmup_epochs"] == pytest.approx(5.0)  # 40 of 800 -> 5 of 100
    assert mae.stage_defaults(epochs=1600, batch_size=4096)["warmup_epochs"] == 40  # never longer than the reference
    assert d["betas"] == (0.9, 0.95) and d["clip_grad"] is None and d["weight_decay"] == 0.05
    sm = ssl_methods.recipe("simmim").stage_defaults(epochs=800, batch_size=2048)
    assert sm["lr"] == pytest.approx(4e-4) and sm["min_lr"] == pytest.approx(2e-5)  # README example: 2048 -> 4e-4
    assert set(d) == set(STAGE_FIELDS)


BASE = """
name: t
data: {root: data/x}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  finetune: {dataset: nih, seeds: [0], epochs: 1}
  evaluate:
    - {column: "NIH", site: nih, split: test, classes: nih14}
"""


def _matrix(tmp_path: Path, body: str) -> Any:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(body))
    return load_matrix(p)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matrix_stage_takes_the_recipe_unless_set(tmp_path: Path, name: str) -> None:
    m = _matrix(tmp_path, f"""
experiments:
  - {{id: a, pretrain: {{method: {name}, dataset: nih, epochs: 80, batch_size: 128}}}}
  - {{id: b, pretrain: {{method: {name}, dataset: nih, epochs: 80, batch_size: 128, betas: [0.8, 0.9],
                          weight_decay: 0.01, clip_grad: null, warmup_epochs: 0, lr: 0.001}}}}
""")
    rec: Recipe = ssl_methods.recipe(name, "vit_tiny_demo")
    a, b = (e.pretrain for e in m.experiments)
    expect = rec.stage_defaults(80, 128)
    assert {k: getattr(a, k) for k in STAGE_FIELDS} == expect
    # explicit values win, unset ones still come from the recipe
    assert (b.betas, b.weight_decay, b.clip_grad, b.warmup_epochs, b.lr) == ((0.8, 0.9), 0.01, None, 0, 0.001)
    assert (b.weight_decay_end, b.clip_mode, b.min_lr) == (rec.weight_decay_end, rec.clip_mode, expect["min_lr"])
    # the stage config handed to bench/train/pretrain.py (OptimCfg) carries them
    dumped = a.model_dump(mode="json")
    assert tuple(dumped["betas"]) == rec.betas and dumped["clip_grad"] == rec.clip_grad


def test_supervised_pretraining_keeps_the_schema_defaults(tmp_path: Path) -> None:
    m = _matrix(tmp_path, """
experiments:
  - {id: s, pretrain: {method: supervised, dataset: nih, epochs: 2}}
""")
    p = m.experiments[0].pretrain
    assert (p.lr, p.weight_decay, p.clip_grad, p.betas) == (1e-4, 0.04, 3.0, (0.9, 0.999))


def test_list_methods_verbose_prints_each_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["list", "methods", "--verbose"]) == 0
    out = capsys.readouterr().out
    for name in REFERENCE:
        assert f"\n{name}\n" in out
    assert "betas (0.9, 0.95)" in out and "0.04 -> 0.1 (cosine)" in out and "0.04 -> 0.4 (cosine)" in out
    assert "facebookresearch/mae:main_pretrain.py" in out and "3 (per-tensor)" in out
    assert cli_main(["list", "methods"]) == 0
    assert "recipe" not in capsys.readouterr().out


def test_config_classes_are_the_ones_the_methods_parse() -> None:
    """The printed/checked defaults are those the methods use."""
    pairs = {"mae": MAEConfig, "simmim": SimMIMConfig, "gmml": GMMLConfig, "sit": SiTConfig, "dino": DINOConfig,
             "mocov3": MoCoV3Config}
    for name, cfg in pairs.items():
        assert ssl_methods.METHODS.get(name).config_class is cfg


def test_matrix_rejects_betas_out_of_range(tmp_path: Path) -> None:
    from bench.matrix import MatrixError

    with pytest.raises(MatrixError, match=r"pretrain\.betas"):
        _matrix(tmp_path, """
experiments:
  - {id: a, pretrain: {method: mae, dataset: nih, betas: [0.9, 1.0]}}
""")
