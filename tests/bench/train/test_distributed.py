"""Data-parallel pre-training on CPU (gloo): a 2-process run reproduces a 1-process run.

The processes are real: `python worker.py` started twice with torchrun-style RANK /
WORLD_SIZE / MASTER_ADDR / MASTER_PORT variables (the path `bench.distributed.setup`
takes outside SLURM), one thread each, against a 1-process reference run with the same
global batch. Also: rank-0 checkpoints resume bit-exactly on every rank, a stop request
seen by one rank stops all ranks at the same step, a NaN on one rank fails every rank
(no hang), and the DBB / fixed-size batch sources shard global batches evenly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.distributed import free_port
from bench.data.batches import BinnedBatches, ImageBatches, shard_rows

REPO = Path(__file__).resolve().parents[3]

# Tolerances of the 1- vs 2-process comparison after 4 AdamW steps (lr 1e-3), measured
# on x86 CPU with one thread per process (max |w1 - w2|):
# * all weights except attention key biases: 5.1e-7 (MAE), 1.1e-6 (SimMIM, with its
#   default stochastic depth 0.1). Float32 rounding: DDP averages two half-batch
#   gradients, summed in another order than one full-batch backward (relative gradient
#   difference ~5e-7). TOL = 1e-5 leaves a 9x margin for other CPUs/BLAS builds and is
#   100x below one step's weight change, so a sharding or randomness bug (one sample
#   with another mask, crop or drop-path draw) fails.
# * attention key biases (the middle third of `qkv.bias`): 4.1e-5 (MAE), 3.2e-6 (SimMIM).
#   Their exact gradient is zero (softmax ignores a shift shared by all keys), so they
#   move only by AdamW normalising float rounding noise to lr-sized steps, which differs
#   between the runs. TOL_KEY_BIAS = 1e-4 (2.5x the measurement) only bounds that noise.
TOL = 1e-5
TOL_KEY_BIAS = 1e-4

WORKER = textwrap.dedent(
    r'''
    import os, sys, json
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import numpy as np, pandas as pd
    import ssl_methods
    from ssl_methods import shard
    from bench import distributed, preempt
    from bench.env import StageEnv
    from bench.tracking import StageLogger
    from bench.data.batches import ImageBatches
    from bench.train.loop import NonFiniteLoss, OptimCfg, fit

    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    phases = sys.argv[3].split(",")
    env = distributed.setup(StageEnv())
    rank, world = env.rank, env.world_size
    index = pd.read_csv(data / "index.csv")
    result = {}

    def make(method, **opts):
        torch.manual_seed(0)
        m = ssl_methods.create(method, backbone="vit_tiny_demo", img_size=32, in_chans=1, **opts)
        shard.split_invariant_drop_path(m)  # as the pre-training stage does
        return m

    def train(method_name, ckpt, stop=None, epochs=2, poison=None, request_at=None, **opts):
        method = make(method_name, **opts)
        method.set_epochs(epochs)
        engine = distributed.wrap(method, "cpu")
        batches = ImageBatches(index, image_size=32, in_chans=1, classes=None, batch_size=8, seed=3,
                               drop_last=True, rank=rank, world_size=world)

        def step_fn(x, y, gen):
            b = x.shape[0]
            with shard.sample_rows(rank * b, b, b * world):
                loss, logs = engine(x)
            if poison is not None and poison == (rank, int(torch.initial_seed())):
                loss = loss * float("nan")
            return loss, logs

        def after(progress):
            method.after_step(progress)
            if request_at is not None and request_at[0] == rank and round(progress * 4) == request_at[1]:
                preempt.request()

        fit(model=engine, groups=method.param_groups(0.05), batches=batches, step_fn=step_fn,
            cfg=OptimCfg(epochs=epochs, lr=1e-3, warmup_epochs=1, clip_grad=3.0), seed=5, checkpoint=ckpt,
            logger=StageLogger(None, None, None), after_step=after, stop_after_steps=stop)
        return {k: v.detach().clone() for k, v in method.state_dict().items()}

    tag = f"w{world}"
    if "equiv" in phases:
        result["mae"] = train("mae", out / f"mae-{tag}.pt")
        # SimMIM's default stochastic depth (0.1) included: its masks are split-invariant too
        result["simmim"] = train("simmim", out / f"simmim-{tag}.pt", mask_patch_size=16)
    if "resume" in phases:
        train("mae", out / f"resume-{tag}.pt", stop=3)
        result["mae_resumed"] = train("mae", out / f"resume-{tag}.pt")
    if "preempt" in phases:
        # rank 1 alone receives the stop request after global step 2; every rank must stop
        preempt.reset()
        try:
            train("mae", out / f"pre-{tag}.pt", request_at=(world - 1, 1))
            result["preempted"] = None
        except preempt.Preempted as exc:
            result["preempted"] = exc.signum
        preempt.reset()
        result["mae_after_preempt"] = train("mae", out / f"pre-{tag}.pt")
    if "nan" in phases:
        from bench.train.loop import step_seed
        try:
            train("mae", out / f"nan-{tag}.pt", poison=(world - 1, step_seed(5, 0, 1)))
            result["nan"] = "no error"
        except NonFiniteLoss as exc:
            result["nan"] = str(exc)
    if "methods" in phases:
        # one DDP epoch of the methods with momentum teachers / BN heads: runs, ranks stay equal
        # DINO's last layer gets no gradient in epoch 0 (unused parameters for DDP), then trains
        for name, opts in (("dino", {"n_local": 2, "freeze_last_layer_epochs": 1}), ("mocov3", {}), ("sit", {}), ("gmml", {})):
            result[name] = train(name, out / f"{name}-{tag}.pt", epochs=2, **opts)
        # a layer no rank uses in any step keeps grad None under DDP: AdamW leaves it untouched
        result["dino_frozen"] = train("dino", out / f"dino-frozen-{tag}.pt", epochs=1, n_local=2, freeze_last_layer_epochs=1)
    if "syncs" in phases:
        # cross-rank syncs of the methods: MoCo v3 / SiT keys gathered over ranks, DINO's centre
        # from the global batch; the test recomputes both in one process
        from ssl_methods.contrastive import info_nce
        g = torch.Generator().manual_seed(1)
        q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
        result["info_nce"] = info_nce(q[rank * 4 : rank * 4 + 4], k[rank * 4 : rank * 4 + 4], 0.2).reshape(1)
        dino = make("dino", n_local=2, augment=False, drop_path_rate=0.0)
        x = torch.randn(8, 1, 32, 32, generator=g)
        dino(x[rank * 4 : rank * 4 + 4])
        result["dino_center"] = dino.center.clone()
    torch.save(result, out / f"result-{tag}-r{rank}.pt")
    distributed.teardown()
    '''
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        arr = (rng.random((40, 36)) * 255).astype(np.uint8)
        p = root / f"{i}.png"
        Image.fromarray(arr).save(p)
        rows.append({"image_id": str(i), "path": str(p), "patient_id": str(i), "split": "train"})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    (root / "worker.py").write_text(WORKER)
    return root


def _launch(data: Path, out: Path, world: int, phases: str) -> list[subprocess.Popen[str]]:
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = [sys.executable, str(data / "worker.py"), str(out), str(data), phases]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait(procs: list[subprocess.Popen[str]], timeout: float = 600) -> None:
    """Wait for every process; on a timeout (a hang in a collective) kill them all and show their output."""
    import time

    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                p.kill()
        logs = [p.communicate()[0][-2000:] for p in procs]
        pytest.fail(f"workers did not finish within {timeout:.0f} s:\n" + "\n---\n".join(logs))
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-4000:]


def _results(out: Path, world: int) -> list[dict]:
    return [torch.load(out / f"result-w{world}-r{r}.pt", weights_only=True) for r in range(world)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _split_key_biases(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights without attention key biases, key biases): see TOL_KEY_BIAS."""
    rest, keys = {}, {}
    for k, v in sd.items():
        if k.endswith("attn.qkv.bias"):
            d = v.numel() // 3
            rest[k] = torch.cat([v[:d], v[2 * d :]])
            keys[k] = v[d : 2 * d]
        else:
            rest[k] = v
    return rest, keys


@pytest.mark.slow
def test_two_process_run_matches_one_process_run(data: Path, tmp_path: Path) -> None:
    """MAE and SimMIM: 2 ranks x 4 images == 1 rank x 8 images, to float rounding."""
    phases = "equiv,resume,preempt,nan"
    two = _launch(data, tmp_path, 2, phases)
    one = _launch(data, tmp_path, 1, "equiv")
    _wait(two + one)
    (ref,) = _results(tmp_path, 1)
    r0, r1 = _results(tmp_path, 2)
    for method in ("mae", "simmim"):
        # ranks hold identical weights (DDP), and they match the 1-process run
        assert _max_diff(r0[method], r1[method]) == 0.0, method
        (ref_w, ref_k), (two_w, two_k) = _split_key_biases(ref[method]), _split_key_biases(r0[method])
        diff, diff_k = _max_diff(ref_w, two_w), _max_diff(ref_k, two_k)
        print(f"{method}: max |w(1 process) - w(2 processes)| = {diff:.3g} (key biases {diff_k:.3g})")
        assert diff < TOL and diff_k < TOL_KEY_BIAS, (method, diff, diff_k)
        # ... and training moved the weights far more than the tolerance
        init = _results_init(method)
        assert _max_diff(init, ref[method]) > 100 * TOL
    # rank-0 checkpoint, loaded by both ranks: bit-exact resume at the same world size
    assert _max_diff(r0["mae_resumed"], r0["mae"]) == 0.0
    assert _max_diff(r1["mae_resumed"], r0["mae"]) == 0.0
    # a stop request seen by rank 1 only: both ranks stopped, checkpointed, and resumed exactly
    assert r0["preempted"] is not None and r0["preempted"] == r1["preempted"]
    assert _max_diff(r0["mae_after_preempt"], r0["mae"]) == 0.0
    assert _max_diff(r1["mae_after_preempt"], r0["mae"]) == 0.0
    # a NaN loss on rank 1 only: both ranks fail at the same step instead of hanging
    assert "another rank" in r0["nan"] and "epoch 0 step 1" in r0["nan"], r0["nan"]
    assert "became nan" in r1["nan"] and "epoch 0 step 1" in r1["nan"], r1["nan"]


def _results_init(method: str) -> dict[str, torch.Tensor]:
    import ssl_methods

    torch.manual_seed(0)
    opts = {"mask_patch_size": 16} if method == "simmim" else {}
    m = ssl_methods.create(method, backbone="vit_tiny_demo", img_size=32, in_chans=1, **opts)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.slow
def test_ema_teacher_methods_run_under_ddp(data: Path, tmp_path: Path) -> None:
    """DINO (frozen last layer early: unused parameters), MoCo v3 (BN heads), SiT and GMML under DDP:
    the EMA update runs on the unwrapped module, every rank ends with the same weights, and
    the cross-rank syncs (DINO centre, MoCo v3 key gather) match the 1-process values."""
    _wait(_launch(data, tmp_path, 2, "methods,syncs"))
    r0, r1 = _results(tmp_path, 2)
    # MoCo v3's InfoNCE with the keys of both ranks: the mean of the rank losses is the
    # 1-process loss over the global batch (negatives from the whole batch)
    from ssl_methods.contrastive import info_nce

    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert float((r0["info_nce"] + r1["info_nce"]) / 2) == pytest.approx(float(info_nce(q, k, 0.2)), rel=1e-5)
    # DINO's centre follows the teacher mean of the global batch on every rank
    import ssl_methods

    torch.manual_seed(0)
    dino = ssl_methods.create("dino", backbone="vit_tiny_demo", img_size=32, in_chans=1, n_local=2, augment=False, drop_path_rate=0.0)
    dino(torch.randn(8, 1, 32, 32, generator=g))
    for r in (r0, r1):
        torch.testing.assert_close(r["dino_center"], dino.center, rtol=1e-5, atol=1e-7)
    for name in ("dino", "mocov3", "sit", "gmml"):
        trained = {k: v for k, v in r0[name].items() if "running_" not in k and "num_batches" not in k}
        other = {k: v for k, v in r1[name].items() if k in trained}
        assert _max_diff(trained, other) == 0.0, name
    init = _results_init_dino()
    teacher = {k: v for k, v in init.items() if k.startswith("teacher.")}
    assert _max_diff({k: r0["dino"][k] for k in teacher}, teacher) > 0  # the teacher moved (EMA on the real module)
    last = {k: v for k, v in init.items() if k.startswith("head.last_layer.")}
    assert last and _max_diff({k: r0["dino"][k] for k in last}, last) > 0  # trained after the freeze
    assert _max_diff({k: r0["dino_frozen"][k] for k in last}, last) == 0.0  # frozen: untouched, not decayed


def _results_init_dino() -> dict[str, torch.Tensor]:
    import ssl_methods

    torch.manual_seed(0)
    m = ssl_methods.create("dino", backbone="vit_tiny_demo", img_size=32, in_chans=1, n_local=2, freeze_last_layer_epochs=1)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


# ------------------------------------------------------------------ batch sharding (one process)


def _images(root: Path, sizes: list[tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for i, (h, w) in enumerate(sizes):
        p = root / f"{i}.png"
        Image.fromarray(np.full((h, w), 7 * i % 255, np.uint8)).save(p)
        rows.append({"image_id": str(i), "path": str(p), "height": h, "width": w})
    return pd.DataFrame(rows)


def test_shard_rows_even_split_and_padding() -> None:
    rows = np.arange(10, 18)
    assert [shard_rows(rows, r, 2).tolist() for r in range(2)] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    short = np.arange(5)  # a short global batch: padded by repeating its own rows
    parts = [shard_rows(short, r, 2).tolist() for r in range(2)]
    assert parts == [[0, 1, 2], [3, 4, 0]]


def test_dbb_sharding_same_steps_and_shapes_every_image_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sizes = [(int(h), int(w)) for h, w in zip(rng.integers(24, 90, 61), rng.integers(24, 90, 61))]
    index = _images(tmp_path, sizes)
    kw = dict(patch=8, max_side=64, in_chans=1, seed=2, batch_size=4, min_batches=1)
    single = BinnedBatches(index, **kw)
    ranks = [BinnedBatches(index, rank=r, world_size=2, **kw) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for epoch in (0, 1):
        per_rank = [list(b.epoch_batches(epoch)) for b in ranks]
        ref = list(single.epoch_batches(epoch))
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])
        seen: list[int] = []
        for (s0, rows0, x0, v0), (s1, rows1, x1, v1), (s, rows, x, v) in zip(*per_rank, ref):
            assert s0 == s1 == s
            assert x0.shape == x1.shape and v0.shape == v1.shape  # same bin shape and batch on both ranks
            both = np.concatenate([rows0, rows1])
            seen.extend(both.tolist())
            if len(rows) % 2 == 0:  # full steps: the two shares are exactly the 1-process batch
                assert both.tolist() == rows.tolist()
                assert torch.equal(torch.cat([x0, x1]), x)
        plan = ranks[0].sampler.plan(epoch)
        counts = np.bincount(np.asarray(seen), minlength=len(index))
        # every image once; extra copies only where the short last step was padded to split evenly
        assert (counts >= 1).all()
        extra = int(counts.sum()) - len(index)
        assert extra == plan.n_repeated + (len(plan.steps[-1]) % 2)


def test_image_batches_sharding_keeps_shapes_with_unreadable_images(tmp_path: Path) -> None:
    index = _images(tmp_path, [(20, 20)] * 12)
    bad = Path(index.loc[5, "path"])
    bad.write_bytes(bad.read_bytes()[:20])  # truncated file: unreadable
    kw = dict(image_size=16, in_chans=1, classes=None, batch_size=6, seed=0, drop_last=True)
    single = ImageBatches(index, **kw)
    ranks = [ImageBatches(index, rank=r, world_size=2, **kw) for r in range(2)]
    for (s0, rows0, x0, _), (s1, rows1, x1, _), (s, rows, x, _) in zip(*(b.epoch_batches(0) for b in ranks), single.epoch_batches(0)):
        assert s0 == s1 == s and x0.shape == x1.shape == (3, 1, 16, 16)
        if 5 not in rows0.tolist() + rows1.tolist() and len(rows) == 6:
            assert torch.equal(torch.cat([x0, x1]), x)
    with pytest.raises(ValueError, match="divisible by the world size"):
        ImageBatches(index, image_size=16, in_chans=1, classes=None, batch_size=5, seed=0, rank=0, world_size=2)


# --------------------------------------------------------- the pre-training stage, end to end

STAGE_WORKER = textwrap.dedent(
    r'''
    import json, sys
    import torch
    torch.set_num_threads(1)
    from bench.env import StageEnv
    from bench.job import JobContext, execute_stage
    stage = json.loads(open(sys.argv[1]).read())
    print(json.dumps(execute_stage(stage, JobContext(sys.argv[2], env=StageEnv(threads=1, progress=False)))))
    '''
)


@pytest.mark.slow
def test_pretrain_stage_under_ddp(tmp_path: Path) -> None:
    """The job body with RANK/WORLD_SIZE set runs the MAE pre-training stage on 2 ranks:
    rank 0 alone writes `encoder.pt` and the status, which records the world size, the
    global and per-rank batch and the learning-rate rule; the encoder matches the
    1-process stage's."""
    import json

    from bench.data.synthetic import generate
    from bench.matrix import load_matrix
    from bench.plan import build_plan

    data = tmp_path / "data"
    generate(data, seed=4, scale=0.1, sites=["nih"])
    m = tmp_path / "m.yaml"
    m.write_text(textwrap.dedent(f"""
        name: d
        data: {{root: {data}}}
        defaults:
          backbone: vit_tiny_demo
          image_size: 32
          pretrain: {{method: mae, dataset: nih, epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0}}
          finetune: {{dataset: nih, seeds: [0], epochs: 1, batch_size: 8}}
          evaluate: [{{column: NIH, site: nih, split: test}}]
        experiments: [{{id: a}}]
    """))
    (stage,) = [s for s in build_plan(load_matrix(m)).stages.values() if s.kind == "pretrain"]
    (tmp_path / "stage.json").write_text(json.dumps(stage.to_json()))
    (tmp_path / "worker.py").write_text(STAGE_WORKER)
    procs = []
    for world, store in ((2, "w2"), (1, "w1")):
        port = free_port()
        for rank in range(world):
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR")}
            env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
            if world > 1:
                env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            cmd = [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "stage.json"), str(tmp_path / store)]
            procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    _wait(procs)
    status = json.loads((tmp_path / "w2" / stage.key / "status.json").read_text())
    assert status["state"] == "done"
    summary = status["summary"]
    assert (summary["world_size"], summary["global_batch"], summary["per_rank_batch"]) == (2, 8, 4)
    assert summary["lr"] == 1e-3 and summary["lr_rule"].startswith("global batch")
    log = (tmp_path / "w2" / stage.key / "log.txt").read_text()
    assert "data parallel: 2 rank(s), global batch 8, per-rank batch 4" in log
    e1, e2 = (torch.load(tmp_path / s / stage.key / "encoder.pt", weights_only=True) for s in ("w1", "w2"))
    (w1, k1), (w2, k2) = _split_key_biases(e1), _split_key_biases(e2)
    assert _max_diff(w1, w2) < TOL and _max_diff(k1, k2) < TOL_KEY_BIAS
