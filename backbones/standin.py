"""Stand-in initialisation weights for demo twins: real timm files of tiny models, never ImageNet.

The paper matrices initialise from downloaded weights (ImageNet-1k/21k, DINOv2); their
demo twins run on tiny backbones for which no such weights exist. To exercise the same
code path (file lookup by `<timm_name>.<tag>`, 3 -> 1 channel adaptation, dropping the
classifier head, positional-embedding resampling) a twin loads a *stand-in*: the tiny
timm model, built with 3 input channels and a 1000-class head exactly as timm's
pretrained checkpoints are, initialised from a fixed seed and saved as `.safetensors`
under the name `backbones.weights.resolve_pretrained_file` looks for. The file's metadata
says it is a stand-in (`bench_standin`), and reports label such initialisations
"(stand-in)": the numbers say nothing about ImageNet pre-training.
"""

from __future__ import annotations

import zlib
from pathlib import Path

STANDIN_KEY = "bench_standin"  # safetensors metadata key marking a stand-in file


def standin_path(backbone: str, init: str, weights_dir: str | Path) -> Path:
    """Where the lookup expects the `init` weights of `backbone` in `weights_dir`."""
    import backbones

    spec = backbones.get_spec(backbone)
    tag = spec.weight_tags.get(init)
    if tag is None:
        have = ", ".join(sorted(spec.weight_tags)) or "none"
        raise ValueError(f"backbone {backbone!r} has no weight tag for init {init!r} (tags: {have}); no stand-in can be named")
    return Path(weights_dir) / f"{spec.timm_name}.{tag}.safetensors"


def write_standin(backbone: str, init: str, weights_dir: str | Path) -> Path:
    """Write (once) the stand-in `init` weights of `backbone`; returns the file.

    Deterministic (the seed derives from backbone and init), so every process that
    writes it writes the same bytes; written under a temporary name and renamed, so a
    concurrent reader never sees a partial file.
    """
    import os

    import timm
    import torch
    from safetensors.torch import save_file

    import backbones

    path = standin_path(backbone, init, weights_dir)
    if path.is_file():
        return path
    spec = backbones.get_spec(backbone)
    kwargs = dict(spec.timm_kwargs)
    # a ViT keeps timm's default input size, as real checkpoints do (DINOv2: 518 px), so loading
    # resamples its positional embeddings like it resamples the real file's
    if spec.family == "swin":
        kwargs["img_size"] = spec.default_img_size
    torch.manual_seed(zlib.crc32(f"{backbone}/{init}".encode()))
    model = timm.create_model(spec.timm_name, pretrained=False, in_chans=3, num_classes=1000, **kwargs)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(state, str(tmp), metadata={STANDIN_KEY: f"{backbone} {init}: tiny timm model, seeded init, not trained"})
    os.replace(tmp, path)
    return path


def is_standin(path: str | Path) -> bool:
    """True when a weights file was written by `write_standin`."""
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as fh:
        return STANDIN_KEY in (fh.metadata() or {})
