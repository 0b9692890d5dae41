"""Pre-training stage: an SSL method (or supervised labels) on one site; exports the encoder.

Output `encoder.pt` is a plain state dict in the backbone's own key names (no head),
which the fine-tune stage loads through `backbones.create(..., init=<path>)` with no
missing backbone keys.

Data parallel (`env.world_size` > 1, one process per rank): the matrix's `batch_size`
is the global batch, split evenly over the ranks; `lr` is the learning rate for that global batch (the
matrix's value, or the method recipe's linear scaling rule applied to the global batch)
and is used as is: the study fixes the global batch, so nothing depends on the number of
GPUs. The method runs inside
DistributedDataParallel; per-sample randomness is drawn for the global batch
(`ssl_methods.shard`), so the run matches a single-process one up to float rounding.
Rank 0 writes the checkpoints and `encoder.pt`; every rank returns the same outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench import distributed
from bench.data.dbb import split_batching_options
from bench.data.labels import label_set
from bench.data.batches import BinnedBatches, ImageBatches
from bench.data.index import load_index
from bench.data.sources import open_cache, site_read_options, source_kwargs
from bench.data.subsets import pretrain_subset
from bench.train.loop import OptimCfg, fit
from bench.train.mixed import MixedBinnedBatches
from ssl_methods.supervised import masked_bce  # noqa: F401 - the fine-tune stage's loss too

if TYPE_CHECKING:
    from bench.env import StageEnv
    from bench.plan import Stage
    from bench.store import Store
    from bench.tracking import StageLogger


def resolve_init(init: str) -> str:
    """Matrix `init` -> what `backbones.create` takes (`file:<path>` becomes the path)."""
    return init[len("file:") :] if init.startswith("file:") else init


def run_pretrain(stage: "Stage", store: "Store", logger: "StageLogger", env: "StageEnv") -> tuple[list[str], dict[str, Any]]:
    import ssl_methods
    from ssl_methods import shard

    cfg = stage.config
    p = cfg["pretrain"]
    site = p["dataset"]
    index = load_index(site, stage.paths[site], p["site_options"], p["splits"])
    seed = 0
    index = pretrain_subset(index, p["subset"])
    # a method that trains on labels (`supervised`) gets labelled batches of `pretrain.classes`
    needs_labels = bool(ssl_methods.METHODS.get(p["method"]).needs_labels)
    classes = label_set(p["classes"]) if needs_labels else None
    logger.text(f"pre-training {p['method']} on {site}: {len(index)} images, backbone {cfg['backbone']}")
    init = resolve_init(cfg["init"])
    # weights are initialised from a fixed seed: the same stage gives the same encoder in any process
    torch.manual_seed(seed)
    dbb = p["batching"]["mode"] == "dbb"
    if dbb and needs_labels:
        raise ValueError(f"batching: dbb is for self-supervised pre-training; {p['method']!r} uses fixed-size labelled batches")
    method = ssl_methods.create(
        p["method"],
        backbone=cfg["backbone"],
        img_size=cfg["image_size"],
        in_chans=cfg["in_chans"],
        init=init,
        epochs=p["epochs"],  # for schedules the references count in epochs (DINO's last-layer freeze)
        **({"num_classes": len(classes)} if classes is not None else {}),
        **p["options"],
    )
    groups = method.param_groups(p["weight_decay"])
    steps, sampler_options = split_batching_options(p["batching"]["options"]) if dbb else ("single", {})
    mixed = steps == "mixed"  # mixed-shape steps: micro-batches with gradient accumulation
    shard.split_invariant_drop_path(method)  # stochastic depth too: same masks per sample on any world size

    def step_fn(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        # this rank holds rows [rank * b, (rank + 1) * b) of the global batch: per-sample
        # draws (masks, crops) are made for the global batch and sliced, whatever the world size
        b = x.shape[0]
        if mixed:  # the loop runs each micro-batch as its rows of the step (bench.train.mixed)
            return engine(x, valid=y)
        with shard.sample_rows(env.rank * b, b, b * env.world_size):
            if needs_labels:
                return engine(x, labels=y)
            # with DBB the batch's second element is the (B, L) valid-token mask of the padded batch
            return engine(x, valid=y) if dbb else engine(x)

    if dbb:
        b = p["batching"]
        patch = int(b["patch"] or method.patch or 0)
        if not patch:
            raise ValueError(f"batching: dbb needs a patch size; method {p['method']!r} exposes none, set pretrain.batching.patch")
        batches: ImageBatches | BinnedBatches = (MixedBinnedBatches if mixed else BinnedBatches)(
            index,
            patch=patch,
            max_side=b["max_side"],
            in_chans=cfg["in_chans"],
            seed=seed,
            batch_size=p["batch_size"],
            token_budget=b["token_budget"],
            policy=env.image_policy,
            read_options=site_read_options(site),
            cache=open_cache(env.cache_root, site, p["site_options"], 0),
            rank=env.rank,
            world_size=env.world_size,
            **sampler_options,
        )
        if mixed:
            logger.text(f"DBB: {len(batches)} mixed-shape steps per epoch (micro-batches of one grid), max side {b['max_side']} px")
        else:
            logger.text(f"DBB: {len(batches)} steps per epoch, {batches.sampler.bins.n_bins} bins, max side {b['max_side']} px")
    else:
        batches = ImageBatches(
            index,
            image_size=cfg["image_size"],
            in_chans=cfg["in_chans"],
            classes=classes,
            batch_size=p["batch_size"],
            seed=seed,
            policy=env.image_policy,
            drop_last=True,
            rank=env.rank,
            world_size=env.world_size,
            **source_kwargs(site, p["site_options"], cfg["image_size"], env.cache_root),
        )
    scaling = {
        "world_size": env.world_size,
        "global_batch": p["batch_size"],
        "per_rank_batch": p["batch_size"] // env.world_size,
        "lr": p["lr"],
        "lr_rule": "global batch: lr is set for the global batch (the matrix's value, or the method recipe's "
        "base lr x global batch / recipe batch when unset) and is not rescaled by the number of ranks",
    }
    if dbb and p["batching"]["token_budget"] is not None:
        scaling["global_batch"] = f"variable (token budget {p['batching']['token_budget']} per step over all ranks)"
        scaling["per_rank_batch"] = f"variable (token budget {p['batching']['token_budget'] // env.world_size} per rank)"
    logger.text(
        f"data parallel: {env.world_size} rank(s), global batch {scaling['global_batch']}, "
        f"per-rank batch {scaling['per_rank_batch']}; learning rate {p['lr']} for the global batch "
        "(not rescaled by the number of ranks)"
    )
    device = env.resolved_device()
    method.to(device)
    engine = distributed.wrap(method, device)  # DDP when world_size > 1; the forward must go through it

    after = method.after_step
    optim = OptimCfg.of_section(p)  # betas, clipping, wd schedule: the method's reference recipe unless the matrix sets them
    state = fit(
        model=engine,
        groups=groups,
        batches=batches,
        step_fn=step_fn,
        cfg=optim,
        seed=seed,
        checkpoint=store.path(stage.key, "checkpoint.pt"),
        logger=logger,
        after_step=after,
        progress=env.progress,
        desc=f"pretrain {p['method']}",
        state={},
        device=device,
        precision=p.get("precision", "auto"),
        checkpoint_seconds=env.checkpoint_seconds,
    )
    if len(batches.bad):
        logger.text(f"skipped {len(batches.bad)} unreadable images: {sorted(batches.bad.paths)}")
    outputs = ["encoder.pt"]
    if isinstance(batches, BinnedBatches):
        # the sizes the DBB sampler binned (subset drawn, unreadable images left out): the report's
        # token table is rebuilt from the store alone, even once the data folder is gone
        outputs.append("sizes.parquet")
        if env.is_main:
            with store.write_output(stage.key, "sizes.parquet") as tmp:
                batches.index[["image_id", "height", "width"]].to_parquet(tmp, index=False)
    if env.is_main:  # the other ranks hold the same weights (DDP keeps them in step)
        with store.write_output(stage.key, "encoder.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in method.encoder_state_dict().items()}, tmp)
    summary = {
        "images": len(index),
        "bad_images": len(batches.bad),
        **scaling,
        **{k: v for k, v in state.items() if isinstance(v, float)},
    }
    return outputs, summary
