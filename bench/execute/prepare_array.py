"""`bench data prepare --executor slurm`: the cache as a SLURM job array, then a merge job.

Why: decoding a 600,000-image collection is ~10 core-hours (issue 13 §4); on a cluster
it should spread over as many nodes as the queue gives. Each array task decodes one
shard with `bench.data.cache.prepare_shard` (its own shard folder, renamed into place
when complete); one merge job, submitted with ``afterok`` on the whole array, commits
the cache (`bench.data.cache.merge`: files renamed into place, manifest last). A task
that fails leaves the merge pending forever (SLURM's DependencyNeverSatisfied): no
stage ever reads a half-built cache. Submitting again redoes only the unfinished
shards (the others' tasks return at once) and merges.

Jobs go through submitit like the stage jobs of `bench.execute.slurm` (same resource
layers, same content-addressed code snapshot). Resources default to
`PREPARE_DEFAULTS` (one CPU per task: a task decodes one image at a time); the
``all.*`` keys of ``--resources`` and the user's slurm.yaml (partition, account, ...)
apply to these jobs too.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.execute.resources import SlurmResources, resolve

log = logging.getLogger(__name__)

PREPARE_DEFAULTS: dict[str, Any] = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 4, "timeout_min": 4 * 60}


@dataclass(frozen=True)
class PrepareSpec:
    """Everything a prepare task needs to rebuild the same index and decode its share."""

    site: str
    root: str
    options: dict[str, Any]
    out: str
    cache_kw: dict[str, Any]  # size, native, native_max_side, png16, on_error
    n_shards: int


class PrepareShardJob:
    """One array task: decode shard `shard` (a no-op when it is already finished)."""

    def __call__(self, spec: PrepareSpec, shard: int) -> str:
        from bench.data.cache import prepare_shard
        from bench.data.index import load_index

        index = load_index(spec.site, spec.root, spec.options, None)
        return str(prepare_shard(index, spec.out, **spec.cache_kw, shard=shard, n_shards=spec.n_shards))


class PrepareMergeJob:
    """The job after the array: commit the cache from its shards."""

    def __call__(self, spec: PrepareSpec) -> dict[str, Any]:
        from bench.data.cache import merge
        from bench.data.index import load_index

        return merge(load_index(spec.site, spec.root, spec.options, None), spec.out)


@dataclass
class Submitted:
    shard_jobs: list[str]  # one per unfinished shard, `<array>_<task>`
    merge_job: str
    log_folder: Path


def prepare_resources(*layers: dict[str, dict[str, Any]]) -> SlurmResources:
    return resolve("prepare", {"prepare": dict(PREPARE_DEFAULTS)}, *layers)


def submit(
    spec: PrepareSpec,
    shards: list[int],
    folder: Path,
    resources: SlurmResources,
    *,
    snapshot_root: Path | None = None,
    python: str | None = None,
) -> Submitted:
    """Submit one array task per shard in `shards` and the merge job after them."""
    import sys

    import submitit

    setup: list[str] = []
    if snapshot_root is not None:
        from bench.execute.snapshot import setup_lines, snapshot

        setup = setup_lines(snapshot(snapshot_root))
    ex = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=resources.max_requeues, python=python or sys.executable)
    params: dict[str, Any] = {
        "job_name": f"bench-prepare-{spec.site}",
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": resources.cpus_per_task,
        "mem": f"{int(resources.mem_gb * 1024)}MB",
        "time": resources.timeout_min,
        "array_parallelism": resources.array_parallelism,
        "setup": [*setup, *resources.setup],
        "additional_parameters": {"requeue": True, **resources.additional},
    }
    for opt in ("partition", "account", "qos", "constraint"):
        if getattr(resources, opt):
            params[opt] = getattr(resources, opt)
    ex.update_parameters(**params)
    shard_jobs: list[str] = []
    if shards:
        with ex.batch():
            pending = [ex.submit(PrepareShardJob(), spec, s) for s in shards]
        shard_jobs = [str(j.job_id) for j in pending]
        ex.update_parameters(dependency="afterok:" + ":".join(sorted({j.split("_")[0] for j in shard_jobs})))
    ex.update_parameters(job_name=f"bench-prepare-{spec.site}-merge")
    merge_job = str(ex.submit(PrepareMergeJob(), spec).job_id)
    log.info("prepare %s: %d shard task(s) %s, merge job %s", spec.site, len(shard_jobs), shard_jobs[:1], merge_job)
    return Submitted(shard_jobs, merge_job, folder)


def wait(submitted: Submitted, out: Path, poll_s: float = 2.0, timeout_s: float | None = None) -> bool:
    """Follow the jobs until the merge job left the queue; True when the cache is committed."""
    from bench.data.cache import MANIFEST
    from bench.execute.slurm import squeue_states

    failures = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
    start = time.time()
    while True:
        states = {j: (s.split() or [""])[0] for j, s in squeue_states([submitted.merge_job, *submitted.shard_jobs]).items()}
        merge_state = states.get(submitted.merge_job, "COMPLETED")  # forgotten by SLURM: long over
        failed = [j for j in submitted.shard_jobs if states.get(j) in failures]
        if failed and merge_state in ("PENDING", "REQUEUED"):
            # its dependency can never be satisfied now; do not leave it in the queue
            subprocess.run(["scancel", submitted.merge_job], capture_output=True, timeout=60)
        if merge_state in failures | {"COMPLETED"} or failed:
            return (Path(out) / MANIFEST).is_file() and not failed
        if timeout_s is not None and time.time() - start > timeout_s:
            raise TimeoutError(f"prepare jobs still running after {timeout_s:.0f} s: merge job {submitted.merge_job} is {merge_state}")
        time.sleep(poll_s)
