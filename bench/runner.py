"""Orchestrates one `bench run`: matrix -> plan -> (synthetic data) -> executor -> reports.

Also builds the report manifest (the only thing `reports/` sees of a plan) from the
plan's report cells and the store's finished evaluate stages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from bench import display_names as dn
from bench.data.labels import resolve_classes
from bench.env import StageEnv, checkpoint_seconds_default
from bench.execute import RunSummary, make_executor
from bench.job import JobContext
from bench.run_tags import eval_columns, stage_tags
from bench.matrix import Matrix
from bench.plan import Plan, build_plan
from bench.store import Store
from bench.tracking import Tracker

if TYPE_CHECKING:  # pandas is imported where a manifest or token table is built: a no-op rerun never needs it
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    results: Path
    executor: str = "inline"
    max_parallel: int = 1
    tracking_uri: str | None = None
    device: str = "cpu"
    threads: int | None = None
    image_policy: str = "skip"
    report: bool = True
    progress: bool = True
    audit: bool = True
    resource_layers: tuple[dict[str, dict[str, Any]], ...] = ()  # user file, matrix, command line (SLURM)
    retry_failed: bool = False
    wait: bool = False  # cluster executors: follow the jobs until the end, then write the reports
    kinds: set[str] | None = None  # only stages of these kinds (`--kind`)
    subset: bool = False  # `--only`/`--kind`: a partial run writes no reports (they would be partial)


def store_of(results: Path) -> Store:
    return Store(results / "store")


def reports_dir(results: Path, matrix: Matrix) -> Path:
    return results / "reports" / matrix.reports_dir_name


def ensure_synthetic(matrix: Matrix) -> None:
    """Generate the synthetic collection the matrix asks for (no-op when already complete)."""
    if not matrix.data.synthetic:
        return
    from bench.data.synthetic import generate

    opts = dict(matrix.data.synthetic)
    sites = sorted({*_sites_used(matrix), *opts.pop("sites", [])})
    generate(Path(matrix.data.root), sites=sites, **opts)


def ensure_weights(matrix: Matrix) -> list[Path]:
    """Write the stand-in initialisation weights a demo twin asks for (`data.standin_weights`).

    Why here: a user running a twin by hand (`bench run matrix/demo_krones_table1.yaml`)
    gets the files as part of the run's data set-up, like the synthetic sites; nothing
    is downloaded. Existing files are kept (writing is deterministic anyway).
    """
    if not (matrix.data.standin_weights and matrix.data.weights):
        return []
    from backbones.specs import PRETRAINED_INITS
    from backbones.standin import write_standin

    wanted = sorted({(e.backbone, e.init) for e in matrix.experiments if e.init in PRETRAINED_INITS})
    return [write_standin(b, i, matrix.data.weights) for b, i in wanted]


@contextmanager
def weights_dir(matrix: Matrix) -> Iterator[None]:
    """The matrix's `data.weights` folder as $BENCH_WEIGHTS_DIR while its stages run.

    The variable is what every stage's weight lookup (`backbones.weights`) reads, in this
    process and in the executor's workers, which inherit the environment; restored after.
    """
    if not matrix.data.weights:
        yield
        return
    from backbones.weights import WEIGHTS_DIR_ENV

    before = os.environ.get(WEIGHTS_DIR_ENV)
    os.environ[WEIGHTS_DIR_ENV] = str(Path(matrix.data.weights).expanduser().resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(WEIGHTS_DIR_ENV, None)
        else:
            os.environ[WEIGHTS_DIR_ENV] = before


def _standin(matrix: Matrix, init: str) -> bool:
    """Whether an experiment's initialisation weights are a demo twin's stand-in file (never ImageNet/DINOv2).

    The initialisation keeps its name (`ImageNet-1k`: the row a twin mirrors, and what the
    DINOv2 study's rows are keyed on); reports add a `stand-in` column and legend mark."""
    return bool(matrix.data.standin_weights) and init != "random" and not init.startswith("file:")


def _sites_used(matrix: Matrix) -> set[str]:
    used = set()
    for e in matrix.experiments:
        if e.pretrain.dataset:
            used.add(e.pretrain.dataset)
        used.add(e.finetune.dataset)
        used.update(t.site for t in e.evaluate)
    return used


def build_manifest(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per (experiment, seed, report column) whose evaluate stage is done."""
    import pandas as pd

    exps = {e.id: e for e in plan.matrix.experiments}
    rows: list[dict[str, Any]] = []
    for c in plan.cells:
        if not store.is_done(c.evaluate_key):
            continue
        e = exps[c.experiment]
        st = store.status(c.evaluate_key)
        rows.append(
            {
                "experiment": c.experiment,
                "seed": c.seed,
                "column": c.target.column,
                "site": c.target.site,
                "split": c.target.split,
                "classes": list(resolve_classes(c.target.classes, c.target.site)),
                "task": e.finetune.task,
                "n_train": store.status(c.finetune_key).get("summary", {}).get("train_images"),
                "predictions": str(store.path(c.evaluate_key, "predictions.parquet")),
                # the fine-tuned model on its val split: where reports choose decision thresholds (reports.youden)
                "val_predictions": _if_file(store.path(c.finetune_key, "val_predictions.parquet")),
                "stage_key": c.evaluate_key,
                "run_id": st.get("mlflow_run_id") or "",
                "finetune_key": c.finetune_key,
                "pretrain_key": c.pretrain_key or "",
                "location": c.target.location,
                # display names (bench.display_names): reports/ is torch-free and never sees the registries
                "finetune_site": e.finetune.dataset,
                "label": dn.experiment_label(e.id, e.backbone, e.pretrain.method, e.init, e.pretrain.dataset)
                + (" (stand-in)" if _standin(plan.matrix, e.init) else ""),
                "meta:Backbone": dn.backbone_name(e.backbone),
                "meta:Initialisation": dn.init_name(e.init),
                # demo twins: which initialisation weights are stand-ins (Table 1 shows the column)
                **({"meta:Init. weights": "stand-in" if _standin(plan.matrix, e.init) else "-"} if plan.matrix.data.standin_weights else {}),
                "meta:Pre-training": dn.method_name(e.pretrain.method),
                "meta:Pre-training dataset": dn.site_name(e.pretrain.dataset),
                "meta:Fine-tuning": dn.site_name(e.finetune.dataset),
                **_size_keys(e, c.pretrain_key, store),
            }
        )
    return pd.DataFrame(rows)


def _if_file(path: Path) -> str | None:
    """`path` as a string when the file exists (stages written before it was an output have none)."""
    return str(path) if path.is_file() else None


def _size_keys(e: Any, pretrain_key: str | None, store: Store) -> dict[str, Any]:
    """Pre-training size (images actually used) and the series it belongs to (Table 6 / Figure 3)."""
    if not pretrain_key:
        return {}
    used = store.status(pretrain_key).get("summary", {}).get("images")
    size = used or e.pretrain.subset
    if not size:
        return {}
    dbb = " + DBB" if e.pretrain.batching.mode == "dbb" else ""
    series = f"{dn.method_name(e.pretrain.method)} on {dn.site_name(e.pretrain.dataset)}{dbb} ({dn.backbone_name(e.backbone)})"
    return {"pretrain_size": int(size), "series": series}


def token_frame(plan: Plan, store: Store | None = None) -> pd.DataFrame | None:
    """Tokens/compute of the batching strategies on the image sizes of the matrix's DBB pre-training.

    This is the poster's token table computed for the data the matrix actually used
    (sizes from headers, never from pixels); None when no stage uses DBB. The sizes are
    the pre-training stage's `sizes.parquet` (what its sampler binned), so `bench report`
    needs only the store; stores written before that output existed fall back to the
    site index, leaving out (with a count) images without a usable size, as the
    pre-training did.
    """
    import pandas as pd

    for s in plan.ordered():
        if s.kind != "pretrain" or s.config["pretrain"]["batching"]["mode"] != "dbb":
            continue
        p = s.config["pretrain"]
        b = p["batching"]
        stored = store.path(s.key, "sizes.parquet") if store is not None else None
        if stored is not None and stored.is_file():
            sizes = pd.read_parquet(stored)
        else:
            from bench.data.index import load_index

            sizes = load_index(p["dataset"], s.paths[p["dataset"]], p["site_options"], p["splits"])
        usable = (sizes["height"] > 0) & (sizes["width"] > 0)
        if not usable.all():
            log.warning(
                "token table: %d of %d image(s) of %s have no usable size (unreadable or empty header) and are left out",
                int((~usable).sum()), len(sizes), p["dataset"],
            )
            sizes = sizes[usable]
        if sizes.empty:
            log.warning("token table: no image of %s has a usable size; no token table", p["dataset"])
            return None
        import backbones

        patch = int(b["patch"] or backbones.get_spec(s.config["backbone"]).timm_kwargs.get("patch_size", 16))
        from bench.dbb_report import run_benchmark  # imports torch (bench.data.dbb): only for a DBB study

        results = run_benchmark(
            sizes["height"].to_numpy(int),
            sizes["width"].to_numpy(int),
            patch=patch,
            max_side=int(b["max_side"]),
            batch_size=int(p["batch_size"]),
            min_batches=(float(b["options"].get("min_batches", 4)),),
        )
        return pd.DataFrame(
            {
                "strategy": [r.label for r in results],
                "tokens_processed": [r.processed for r in results],
                "flops": [r.flops.get("vit_base", float("nan")) for r in results],
            }
        )
    return None


def write_reports(plan: Plan, store: Store, out_dir: Path, tracker: Tracker | None = None, run_id: str | None = None) -> list[Path]:
    from reports import build_reports

    manifest = build_manifest(plan, store)
    if manifest.empty:
        log.warning("no finished evaluations yet: no reports written")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    files = build_reports(
        manifest,
        out_dir,
        title=plan.matrix.description or plan.matrix.name,
        token_frame=token_frame(plan, store),
        **plan.matrix.reports,
    )
    missing = len(plan.cells) - len(manifest)
    if missing:
        log.warning("reports cover %d of %d result cells (%d not finished)", len(manifest), len(plan.cells), missing)
    cells = warn_degenerate(manifest)
    _write_reports_stamp(out_dir, plan, store.done_status(list(plan.stages)), files, [_degenerate_text(c) for c in cells])
    if tracker and run_id:
        tracker.artifact(run_id, out_dir, "reports")
    return files


REPORTS_STAMP = ".bench_inputs.json"  # in a reports folder: what its files were built from
# code whose change changes the reports (files' size and mtime, read without importing them)
_REPORT_CODE = ("reports", "bench/runner.py", "bench/display_names.py", "bench/dbb_report.py")


def _code_fingerprint() -> list[tuple[str, int, int]]:
    root = Path(__file__).resolve().parents[1]
    out: list[tuple[str, int, int]] = []
    for name in _REPORT_CODE:
        p = root / name
        for f in sorted(p.glob("*.py")) if p.is_dir() else [p]:
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            out.append((f"{name}/{f.name}" if p.is_dir() else name, st.st_size, st.st_mtime_ns))
    return out


def reports_digest(plan: Plan, done: dict[str, dict[str, Any]]) -> str:
    """A digest of everything `write_reports` reads: the finished stages of the report cells
    (a done stage's status, and so its `finished` time, is final), the experiments, the
    matrix's report options and title, and the report code.

    Why: a rerun that ran nothing finds the same digest next to the reports and keeps them,
    instead of re-reading every prediction file and redrawing every figure (minutes for a
    study); `bench report` always rebuilds.
    """
    import hashlib

    m = plan.matrix
    cells = [
        [c.experiment, c.seed, c.target.column, c.evaluate_key, done[c.evaluate_key].get("finished"),
         done.get(c.finetune_key, {}).get("finished"), done.get(c.pretrain_key or "", {}).get("finished")]
        for c in plan.cells
        if c.evaluate_key in done
    ]
    doc = {
        "v": 1,
        "cells": cells,
        "experiments": [e.model_dump(mode="json") for e in m.experiments],
        "reports": m.reports,
        "title": m.description or m.name,
        "data": m.data.model_dump(mode="json", exclude={"root", "sites"}),
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _write_reports_stamp(out_dir: Path, plan: Plan, done: dict[str, dict[str, Any]], files: list[Path], warnings: list[str]) -> None:
    from bench.store import atomic_write_text

    body = {"digest": reports_digest(plan, done), "files": [str(Path(f).relative_to(out_dir)) for f in files], "warnings": warnings}
    atomic_write_text(out_dir / REPORTS_STAMP, json.dumps(body, indent=1))
    os.chmod(out_dir / REPORTS_STAMP, 0o644)  # like the reports next to it


def current_reports(plan: Plan, done: dict[str, dict[str, Any]], out_dir: Path) -> dict[str, Any] | None:
    """The stamp of `out_dir`'s reports when they were built from exactly these inputs and all
    their files are still there; None when they must be (re)built."""
    try:
        stamp = json.loads((out_dir / REPORTS_STAMP).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not stamp.get("files") or not all((out_dir / f).exists() for f in stamp["files"]):
        return None
    return stamp if stamp.get("digest") == reports_digest(plan, done) else None


def warn_degenerate(manifest: pd.DataFrame) -> list[Any]:
    """Warn about report cells at chance or without seed spread, naming their stages.

    Why: a broken stage (a probe that learns nothing) and a hard task look the same in a
    table; the warning points at the stages to inspect. The tables mark the same cells.
    """
    from reports import degenerate_cells

    cells = degenerate_cells(manifest)
    for c in cells:
        log.warning(_degenerate_text(c))
    return cells


def _degenerate_text(c: Any) -> str:
    return (f"degenerate result: experiment {c.experiment}, column {c.column}: {c.reason}; "
            f"evaluate stages {', '.join(c.stage_keys)} (fine-tunes {', '.join(c.finetune_keys)})")


def preflight(plan: Plan, store: Store, done: set[str] | dict[str, Any] | None = None) -> None:
    """Fail before running anything when a pending stage's data root is missing (`done`: the
    keys already known to be done, so their status is not read again)."""
    from bench.data.sites import DataError

    missing: dict[str, str] = {}
    for s in plan.ordered():
        if (s.key in done) if done is not None else store.is_done(s.key):
            continue
        for site, root in s.paths.items():
            if not Path(root).exists():
                missing[site] = root
    if missing:
        where = "; ".join(f"site {k!r} expected at {v}" for k, v in sorted(missing.items()))
        raise DataError(
            f"{plan.matrix.path}: data root does not exist: {where}. Point data.root or data.sites.<site> "
            "in the matrix (or --data-root / BENCH_DATA_ROOT) at the dataset in its official layout."
        )


def run_matrix(matrix: Matrix, opts: RunOptions) -> tuple[RunSummary, Plan, list[Path]]:
    results = opts.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    plan = build_plan(matrix)
    store = store_of(results)
    stages = [s for s in plan.ordered() if opts.kinds is None or s.kind in opts.kinds]
    # one status read per stage; what is done needs nothing below (no data, no site index, no torch)
    done = store.done_status([s.key for s in plan.ordered()])
    todo = [s for s in stages if s.key not in done]
    if todo:
        ensure_synthetic(matrix)
        ensure_weights(matrix)
        preflight(plan, store, done)
    if opts.audit and todo:
        from bench.audit import audit_plan, check_leakage

        # experiments whose stages are all done were audited when they ran
        report = audit_plan(_pending_part(plan, {s.key for s in todo}))
        check_leakage(report, matrix.path)
        # pre-training on the fine-tuning site's own train/val images is by design; evaluation overlap is not
        shared = report[(report["shared_patients"] > 0) & (report["pair"] != "pretrain-finetune")] if not report.empty else report
        for r in shared.itertuples():
            log.warning("leakage audit: experiment %s %s shares %d patients / %d images (%s vs %s)",
                        r.experiment, r.pair, r.shared_patients, r.shared_images, r.a, r.b)
    uri = opts.tracking_uri
    # nothing to run and the reports are current: a no-op, which starts no MLflow run (runs.jsonl records it)
    stamp = current_reports(plan, done, reports_dir(results, matrix)) if not todo and opts.report and not opts.subset else None
    idle = not todo and (stamp is not None or not opts.report or opts.subset)
    # one MLflow experiment per matrix, so runs of different studies do not mix
    tracker = Tracker(uri, experiment=matrix.name, artifact_root=results / "mlartifacts", description=matrix.description) if uri and not idle else None
    parent = None
    if tracker:
        parent = tracker.start(
            f"matrix:{matrix.name}",
            tags={"matrix": str(matrix.path), "kind": "matrix", "executor": opts.executor},
        )
        tracker.params(parent, {"matrix": str(matrix.path), "stages": len(stages), "executor": opts.executor})
        tracker.artifact(parent, matrix.path)
    env = StageEnv(
        device=opts.device,
        threads=opts.threads,
        progress=opts.progress,
        image_policy=opts.image_policy,
        cache_root=str(results / "cache"),
        checkpoint_seconds=checkpoint_seconds_default(),
    )
    deferred = opts.executor == "slurm" and bool(uri) and str(uri).startswith("sqlite:")
    ctx = JobContext(
        store_root=str(store.root),
        env=env,
        tracking_uri=uri,
        tracking_mode="deferred" if deferred else "direct",
        parent_run_id=parent,
        experiment=matrix.name,
        run_tags={"matrix": matrix.name},
        stage_tags=stage_tags(plan),
        eval_columns=eval_columns(plan),
    )
    started = time.time()
    executor = None if not todo else make_executor(
        opts.executor,
        results,
        opts.max_parallel,
        **(
            {"matrix_name": matrix.name, "resource_layers": (*opts.resource_layers[:1], matrix.resources, *opts.resource_layers[1:]), "retry_failed": opts.retry_failed}
            if opts.executor == "slurm"
            else {}
        ),
    )
    summary = RunSummary()
    files: list[Path] = []
    try:
        if executor is None:  # every stage is done: no executor, no job body, no torch
            summary = RunSummary(skipped=[s.key for s in stages])
        else:
            with weights_dir(matrix):
                summary = executor.run(stages, ctx)
        if executor is not None and not executor.waits and opts.wait:
            keys = [*summary.submitted, *summary.queued]
            log.info("waiting for %d stage(s) on the cluster", len(keys))
            executor.wait(keys, store, on_poll=(lambda: sync_tracking(results, uri)) if deferred else None)  # type: ignore[attr-defined]
            summary = _after_wait(summary, store)
        if deferred:
            sync_tracking(results, uri)
        if opts.subset and opts.report:
            log.info("a subset of the matrix ran (--only/--kind): reports not written; `bench report` builds them from the store")
        if opts.report and not opts.subset and (executor is None or executor.waits or opts.wait):
            if stamp is not None and not summary.ran:
                log.info("reports in %s are current (built from these finished stages); `bench report` rebuilds them",
                         reports_dir(results, matrix))
                for text in stamp.get("warnings", []):
                    log.warning(text)
            else:
                files = write_reports(plan, store, reports_dir(results, matrix), tracker, parent)
    finally:
        if tracker and parent:
            tracker.metrics(
                parent,
                {
                    "stages_ran": len(summary.ran),
                    "stages_skipped": len(summary.skipped),
                    "stages_failed": len(summary.failed),
                    "stages_submitted": len(summary.submitted),
                    "wall_seconds": time.time() - started,
                },
            )
            status = "FINISHED" if summary.ok else ("KILLED" if summary.interrupted else "FAILED")
            tracker.end(parent, status)
    _append_history(results, matrix, summary, time.time() - started, parent)
    return summary, plan, files


def _pending_part(plan: Plan, todo: set[str]) -> Plan:
    """The plan restricted to experiments with a stage still to run (what the leakage audit checks)."""
    from bench.summary import experiment_stages

    pending = {exp for exp, keys in experiment_stages(plan).items() if todo.intersection(keys)}
    matrix = plan.matrix.model_copy(update={"experiments": [e for e in plan.matrix.experiments if e.id in pending]})
    return Plan(matrix=matrix, stages=plan.stages, cells=[c for c in plan.cells if c.experiment in pending])


def _after_wait(summary: RunSummary, store: Store) -> RunSummary:
    """Turn a cluster run's submitted/queued stages into ran/failed once their jobs ended."""
    for key in [*summary.submitted, *summary.queued]:
        if store.is_done(key):
            summary.ran.append(key)
        else:
            st = store.status(key)
            if st.get("state") in ("failed", "interrupted", "requeued"):
                summary.failed[key] = st.get("error") or st["state"]
            else:
                summary.blocked.append(key)
    return summary


def sync_tracking(results: Path, uri: str | None, experiment: str | None = None) -> dict[str, int]:
    """Import the stages' deferred MLflow events (cluster runs on the SQLite store) exactly once.

    Each stage's events name their matrix (tag `matrix`), which is its MLflow experiment.
    """
    if not uri:
        return {}
    from bench.tracking import DEFAULT_EXPERIMENT, Tracker, import_events

    return import_events(results / "store", lambda name: Tracker(uri, experiment=name or experiment or DEFAULT_EXPERIMENT))


def _append_history(results: Path, matrix: Matrix, summary: RunSummary, seconds: float, run_id: str | None) -> None:
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "matrix": str(matrix.path),
        "seconds": round(seconds, 1),
        "ran": len(summary.ran),
        "skipped": len(summary.skipped),
        "failed": summary.failed,
        "blocked": len(summary.blocked),
        "interrupted": summary.interrupted,
        "submitted": summary.submitted,
        "mlflow_run_id": run_id,
    }
    with open(results / "runs.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")
