"""Mixed-shape DBB steps in training (issue 13.1): micro-batches of one grid, gradient
accumulation to one optimiser step, DDP-aligned shapes, bit-exact resume, plan-time options."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.data.dbb import plan_mixed_epoch, split_batching_options
from bench.data.sites import get_site
from bench.tracking import StageLogger
from bench.train.loop import OptimCfg, _accumulate, fit
from bench.train.mixed import MicroBatch, MixedBinnedBatches, MixedStep


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small real index with varied sizes: synthetic CheXpert images rescaled to many grids."""
    from bench.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("mixed"), seed=3, sites=["chexpert"], scale=0.1)["chexpert"]
    idx = get_site("chexpert").load_index(root, split="train").head(30).reset_index(drop=True)
    assert idx["height"].nunique() > 1 or idx["width"].nunique() > 1
    return idx


def _batches(index: pd.DataFrame, **kw: object) -> MixedBinnedBatches:
    return MixedBinnedBatches(index, patch=8, max_side=40, in_chans=1, seed=0, **kw)  # type: ignore[arg-type]


def _mae(seed: int = 0) -> torch.nn.Module:
    import ssl_methods

    torch.manual_seed(seed)
    return ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=32, in_chans=1)


def test_every_image_exactly_once_per_epoch_in_exact_grid_micro_batches(index: pd.DataFrame) -> None:
    b = _batches(index, batch_size=8)
    gh, gw = b.grid_h, b.grid_w
    for epoch in (0, 1):
        seen: list[int] = []
        for _, rows, step, y in b.epoch_batches(epoch):
            assert isinstance(step, MixedStep) and y is None
            assert sum(m.weight for m in step.micro) == pytest.approx(1.0)
            at = 0
            for m in step.micro:
                n = m.x.shape[0]
                mine = rows[at : at + n]
                at += n
                # one rank, pad_bound 0: every micro-batch is its images' exact grid (no padding)
                assert m.x.shape[-2:] == (8 * gh[mine[0]], 8 * gw[mine[0]])
                assert (gh[mine] == gh[mine[0]]).all() and (gw[mine] == gw[mine[0]]).all() and bool(m.valid.all())
                assert m.offset == at - n and m.total == len(rows)
            seen.extend(rows.tolist())
        assert sorted(seen) == list(range(len(b.index)))
    assert len(b) == -(-len(b.index) // 8)


def test_ranks_run_the_same_micro_batch_count_and_shapes() -> None:
    rng = np.random.default_rng(0)
    gh, gw = rng.integers(3, 9, 301), rng.integers(3, 9, 301)
    W = 3
    for sizing in ({"batch_size": 5}, {"token_budget": 300}):
        plan = plan_mixed_epoch(gh, gw, seed=1, epoch=2, world_size=W, **sizing)
        covered: list[int] = []
        for s in range(len(plan)):
            per_rank = [plan.aligned_micro_batches(s, r) for r in range(W)]
            shapes = [[m.shape for m in mbs] for mbs in per_rank]
            assert all(sh == shapes[0] for sh in shapes)
            assert all([len(m.indices) for m in mbs] == [len(m.indices) for m in per_rank[0]] for mbs in per_rank)
            total = per_rank[0][0].total
            slots = sorted(o for mbs in per_rank for m in mbs for o in range(m.offset, m.offset + len(m.indices)))
            assert slots == list(range(total))  # the step's rows as one global batch, each exactly once
            for mbs in per_rank:
                for m in mbs:
                    assert (gh[m.indices] <= m.shape[0]).all() and (gw[m.indices] <= m.shape[1]).all()
            weights = sum(m.tokens for mbs in per_rank for m in mbs) / per_rank[0][0].step_tokens
            assert weights == pytest.approx(1.0)
            covered.extend(i for mbs in per_rank for m in mbs for i in m.indices.tolist())
        assert set(covered) == set(range(gh.size))
        assert len(covered) - gh.size < W * len(plan)  # repeats only fill a step's last row


def test_accumulation_equals_one_big_batch_step() -> None:
    """Same-shape micro-batches with their token weights give the big batch's loss and gradients."""
    x = torch.randn(6, 1, 32, 32)
    valid = torch.ones(6, 16, dtype=torch.bool)
    seed = 1234

    big = _mae()
    big.train()
    torch.manual_seed(seed)
    loss_big, _ = big(x, valid)
    loss_big.backward()

    acc = _mae()
    acc.train()
    step = MixedStep([MicroBatch(x[:2], valid[:2], 2 / 6, 0, 6), MicroBatch(x[2:], valid[2:], 4 / 6, 2, 6)])
    loss_acc, _ = _accumulate(acc, step, lambda xb, yb, g: acc(xb, yb), seed, torch.device("cpu"), None, 1)
    assert float(loss_acc) == pytest.approx(float(loss_big.detach()), rel=1e-5)
    for (name, p), q in zip(big.named_parameters(), acc.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def _train(index: pd.DataFrame, ckpt: Path, *, stop: int | None = None) -> torch.nn.Module:
    model = _mae()
    batches = _batches(index, token_budget=400)
    fit(
        model=model, groups=model.param_groups(0.05), batches=batches, step_fn=lambda x, y, g: model(x, y),
        cfg=OptimCfg(epochs=2, lr=1e-3, warmup_epochs=0.5), seed=5, checkpoint=ckpt,
        logger=StageLogger(None, None, None), stop_after_steps=stop,
    )
    return model


def test_resume_is_bit_exact(index: pd.DataFrame, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = _train(index, tmp_path / "a.pt")
    _train(index, tmp_path / "b.pt", stop=3)  # a kill after 3 optimiser steps, mid-epoch
    resumed = _train(index, tmp_path / "b.pt")
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k


def test_options_split_and_conflicts() -> None:
    assert split_batching_options({}) == ("single", {})
    assert split_batching_options({"min_batches": 2}) == ("single", {"min_batches": 2})
    steps, kw = split_batching_options({"steps": "mixed", "pad_bound": 1})
    assert steps == "mixed" and kw["pad_bound"] == 1 and kw["pool_batches"] == 16.0
    with pytest.raises(ValueError, match=r"\['mode'\] do not apply to steps: mixed"):
        split_batching_options({"steps": "mixed", "mode": "fit"})
    with pytest.raises(ValueError, match="do not apply to steps: single"):
        split_batching_options({"pool_batches": 4})


BASE = """
name: t
data: {root: data/x}
defaults:
  backbone: vit_tiny_demo
  image_size: 32
  finetune: {dataset: nih, epochs: 1}
  evaluate:
    - {column: "NIH", site: nih, split: test, classes: nih14}
"""


@pytest.mark.parametrize(
    "options, error",
    [
        ("{steps: mixed, pad_bound: 1}", None),
        ("{steps: several}", r"batching\.options\.steps: .*'single' or 'mixed'"),
        ("{steps: mixed, min_batches: 2}", r"batching\.options: .*\['min_batches'\] do not apply to steps: mixed"),
    ],
)
def test_steps_option_is_validated_at_plan_time(tmp_path: Path, options: str, error: str | None) -> None:
    from bench.matrix import MatrixError, load_matrix

    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(f"""
        experiments:
          - {{id: "1", pretrain: {{method: mae, dataset: nih, batching: {{mode: dbb, max_side: 64, options: {options}}}}}}}
    """))
    if error is None:
        load_matrix(p)
        return
    with pytest.raises(MatrixError, match=error):
        load_matrix(p)


@pytest.mark.slow
def test_tiny_mae_pretraining_with_mixed_steps(tmp_path: Path) -> None:
    from bench.cli import main
    from bench.data.synthetic import generate

    data = tmp_path / "data"
    generate(data, seed=4, scale=0.2, sites=["nih", "chexpert"])
    m = tmp_path / "p.yaml"
    m.write_text(textwrap.dedent(f"""
        name: p
        data: {{root: {data}}}
        defaults:
          backbone: vit_tiny_demo
          image_size: 32
          finetune: {{dataset: nih, seeds: [0], epochs: 1, batch_size: 16}}
          evaluate: [{{column: NIH, site: nih, split: test}}]
        experiments:
          - {{id: x, pretrain: {{method: mae, dataset: chexpert, site_options: {{split: train}}, splits: [train], epochs: 1,
              batch_size: 8, batching: {{mode: dbb, max_side: 64, options: {{steps: mixed}}}}}}}}
    """))
    rc = main(["run", str(m), "--results", str(tmp_path / "r"), "--no-mlflow", "--threads", "1", "--no-report"])
    assert rc == 0
    (pre,) = list((tmp_path / "r" / "store").glob("pretrain-*"))
    log = (pre / "log.txt").read_text()
    assert "mixed-shape steps per epoch" in log
    enc = torch.load(pre / "encoder.pt", weights_only=True)
    assert "pos_embed" in enc and not any(k.startswith("decoder") for k in enc)


# ------------------------------------------------------------------ data parallel

WORKER = textwrap.dedent(
    r'''
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import pandas as pd
    import ssl_methods
    from bench import distributed
    from bench.env import StageEnv
    from bench.tracking import StageLogger
    from bench.train.loop import OptimCfg, fit
    from bench.train.mixed import MixedBinnedBatches

    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    env = distributed.setup(StageEnv())
    index = pd.read_csv(data / "index.csv")
    torch.manual_seed(0)
    method = ssl_methods.create("mae", backbone="vit_tiny_demo", img_size=32, in_chans=1)
    engine = distributed.wrap(method, "cpu")
    batches = MixedBinnedBatches(index, patch=8, max_side=40, in_chans=1, seed=2, batch_size=8,
                                 rank=env.rank, world_size=env.world_size)
    fit(model=engine, groups=method.param_groups(0.05), batches=batches, step_fn=lambda x, y, g: engine(x, valid=y),
        cfg=OptimCfg(epochs=2, lr=1e-3, warmup_epochs=1), seed=5, checkpoint=out / "c.pt",
        logger=StageLogger(None, None, None))
    torch.save({k: v.detach().clone() for k, v in method.state_dict().items()}, out / f"r{env.rank}.pt")
    distributed.teardown()
    '''
)


class _BothRanks:
    """One process running both ranks' micro-batches of every step: what DDP must compute."""

    def __init__(self, ranks: list[MixedBinnedBatches]) -> None:
        self.ranks = ranks
        self.bad = ranks[0].bad

    def __len__(self) -> int:
        return len(self.ranks[0])

    def epoch_batches(self, epoch: int, start_step: int = 0):  # type: ignore[no-untyped-def]
        for parts in zip(*(r.epoch_batches(epoch, start_step) for r in self.ranks)):
            assert len({p[0] for p in parts}) == 1
            shapes = [[m.x.shape for m in p[2].micro] for p in parts]
            assert shapes[0] == shapes[1]  # same micro-batch count and shapes on both ranks
            yield parts[0][0], np.concatenate([p[1] for p in parts]), MixedStep([m for p in parts for m in p[2].micro]), None


@pytest.mark.slow
def test_two_process_mixed_steps_match_one_process_accumulation(tmp_path: Path) -> None:
    """2 gloo processes (no_sync on all but the last micro-batch, loss x world) give the update
    of one process accumulating both ranks' micro-batches with the same weights."""
    import os
    import subprocess
    import sys

    from PIL import Image

    from bench.distributed import free_port

    rng = np.random.default_rng(1)
    rows = []
    for i, (h, w) in enumerate(zip(rng.integers(20, 41, 24), rng.integers(20, 41, 24))):
        p = tmp_path / f"{i}.png"
        Image.fromarray((rng.random((int(h), int(w))) * 255).astype(np.uint8)).save(p)
        rows.append({"image_id": str(i), "path": str(p), "height": int(h), "width": int(w)})
    index = pd.DataFrame(rows)
    index.to_csv(tmp_path / "index.csv", index=False)
    (tmp_path / "worker.py").write_text(WORKER)
    repo = Path(__file__).resolve().parents[3]
    port = free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path), str(tmp_path)],
                                      env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2))

    torch.set_num_threads(1)
    ranks = [MixedBinnedBatches(index, patch=8, max_side=40, in_chans=1, seed=2, batch_size=8, rank=r, world_size=2)
             for r in range(2)]
    model = _mae()
    fit(model=model, groups=model.param_groups(0.05), batches=_BothRanks(ranks),  # type: ignore[arg-type]
        step_fn=lambda x, y, g: model(x, y), cfg=OptimCfg(epochs=2, lr=1e-3, warmup_epochs=1), seed=5,
        checkpoint=tmp_path / "ref.pt", logger=StageLogger(None, None, None))
    ref = model.state_dict()
    for k in ref:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the ranks in step
        # float rounding of a different summation order; key biases only move by AdamW-normalised noise
        tol = 1e-4 if k.endswith("attn.qkv.bias") else 1e-5
        assert float((r0[k] - ref[k]).abs().max()) < tol, k
    moved = max(float((ref[k] - _mae().state_dict()[k]).abs().max()) for k in ref)
    assert moved > 1e-3  # training moved the weights far beyond the tolerance
