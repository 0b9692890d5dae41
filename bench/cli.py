"""`bench`: the command line. Commands are verbs; each maps onto one module.

    bench run MATRIX      run every unfinished stage, then write the reports
    bench plan MATRIX     print the stage DAG and counts, run nothing
    bench status MATRIX   what is done / failed / pending in the store
    bench report MATRIX   rebuild tables and figures from stored predictions
    bench audit MATRIX    leakage audit (shared images/patients between stages' data)
    bench data ...        synthetic data, dataset tables, preprocessing caches
    bench list FAMILY     registered backbones, methods, sites, label sets, metrics
    bench ui              how to open the MLflow UI on this results folder
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

DEFAULT_RESULTS = Path(os.environ.get("BENCH_RESULTS", "results"))


class CLIError(Exception):
    pass


def _add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (store, reports, mlflow.db); default: %(default)s or $BENCH_RESULTS")


def _add_slurm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resources", action="append", default=[], metavar="KIND.KEY=VALUE", help="slurm: override a resource, e.g. pretrain.gpus_per_node=4 or all.partition=gpu (repeatable)")
    p.add_argument("--slurm-config", default=None, help="slurm: user/site resource defaults (default $BENCH_SLURM_CONFIG or ~/.config/medssl-bench/slurm.yaml)")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a matrix value, validated like the file: finetune.epochs=3 (every experiment), 'experiments[3.1].pretrain.epochs=100', data.root=/x (repeatable); names a variant whose reports go to their own folder")
    p.add_argument("--only", default=None, metavar="IDS", help="only these experiments (comma-separated ids, e.g. 3.1,3.2)")
    p.add_argument("--kind", default=None, metavar="KINDS", help="only stages of these kinds (comma-separated: pretrain, finetune, evaluate)")


def _kinds(args: argparse.Namespace) -> set[str] | None:
    from bench.plan import KINDS

    if not getattr(args, "kind", None):
        return None
    kinds = {k.strip() for k in args.kind.split(",") if k.strip()}
    bad = kinds - set(KINDS)
    if bad:
        raise CLIError(f"--kind: {', '.join(sorted(bad))} is not one of {', '.join(KINDS)}")
    return kinds


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="override the matrix's data.root (sites live in ROOT/<site>)")


def _load(args: argparse.Namespace):  # -> Matrix
    from bench.matrix import MatrixError, load_matrix

    m = load_matrix(args.matrix, getattr(args, "set", None) or None)
    if getattr(args, "data_root", None):
        m.data.root = args.data_root
    only = [x.strip() for x in (getattr(args, "only", None) or "").split(",") if x.strip()]
    if only:
        ids = [e.id for e in m.experiments]
        unknown = [x for x in only if x not in ids]
        if unknown:
            raise MatrixError(f"--only: no experiment {', '.join(map(repr, unknown))} in {m.path}; ids: {', '.join(ids)}")
        m.experiments = [e for e in m.experiments if e.id in only]
    return m


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import RunOptions, reports_dir, run_matrix
    from bench.tracking import default_tracking_uri

    matrix = _load(args)
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    uri = None if args.no_mlflow else (args.tracking_uri or default_tracking_uri(results))
    threads = args.threads
    if threads is None and args.executor == "local":
        # parallel stages must not oversubscribe the cores: OpenMP spin-waiting makes that very slow
        threads = max(1, (os.cpu_count() or 1) // max(1, args.max_parallel))
    opts = RunOptions(
        results=results,
        executor=args.executor,
        max_parallel=args.max_parallel,
        tracking_uri=uri,
        device=args.device,
        threads=threads,
        image_policy=args.image_policy,
        report=not args.no_report,
        progress=not args.no_progress and sys.stderr.isatty(),
        resource_layers=_resource_layers(args),
        retry_failed=args.retry_failed,
        wait=args.wait,
        kinds=_kinds(args),
        subset=bool(args.only or args.kind),
    )
    t0 = time.time()
    summary, plan, files = run_matrix(matrix, opts)
    dt = time.time() - t0
    total = len(plan.stages)
    print(f"\n== {matrix.path}: {total} stages in {dt:.1f}s ({args.executor} executor)")
    if args.executor == "slurm" and not args.wait:
        arrays = len({j.split("_")[0] for j in summary.submitted.values()})
        print(f"   submitted {len(summary.submitted)} stages as {arrays} SLURM jobs/arrays; {len(summary.queued)} already queued or running; "
              f"{len(summary.skipped)} done; {len(summary.failed)} failed (resubmit with --retry-failed); {len(summary.blocked)} blocked")
        print(f"   follow with: bench status {matrix.path} --results {args.results}   (bench cancel ... to stop)")
        for key, err in summary.failed.items():
            print(f"   FAILED {key} ({plan.stages[key].label}): {err}")
        return 1 if summary.failed else 0
    print(f"   ran {len(summary.ran)}, skipped {len(summary.skipped)} (already done), failed {len(summary.failed)}, blocked {len(summary.blocked)}")
    if not summary.ran and not summary.failed and not summary.blocked and not summary.interrupted:
        print("   nothing to do: every stage was already done")
    for key, err in summary.failed.items():
        print(f"   FAILED {key} ({plan.stages[key].label}): {err}")
        print(f"          log: {results / 'store' / key / 'log.txt'}")
    if summary.blocked:
        print(f"   blocked (an upstream stage failed): {len(summary.blocked)} stages; fix the failure and re-run")
    if summary.interrupted:
        print("   interrupted: finished stages are kept; re-run the same command to resume")
    if files:
        print(f"   reports: {reports_dir(results, matrix)} ({len(files)} files)")
        md = [f for f in files if f.name.startswith("table2") and f.suffix == ".md"]
        if md:
            print("\n" + md[0].read_text())
    if uri:
        print(f"   mlflow: {uri}  (open with: bench ui --results {args.results})")
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


def _resource_layers(args: argparse.Namespace) -> tuple[dict, ...]:
    """(user/site file, command line) resource layers; the matrix's own layer goes between them."""
    from bench.execute.resources import ResourceError, load_user_config, parse_overrides

    try:
        user = load_user_config(Path(args.slurm_config) if getattr(args, "slurm_config", None) else None)
        cli = parse_overrides(getattr(args, "resources", None))
    except ResourceError as exc:
        raise CLIError(str(exc)) from None
    return (user, cli)


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.plan import build_plan, describe
    from bench.store import Store

    matrix = _load(args)
    plan = build_plan(matrix)
    kinds = _kinds(args)
    if kinds:
        plan.stages = {k: s for k, s in plan.stages.items() if s.kind in kinds}
    # the store `bench.runner.store_of` opens, without importing the runner (executors, tracking)
    store = Store(args.results.resolve() / "store")
    states = store.states(list(plan.stages))  # one status read per stage (10,000-stage studies)
    done = {k for k, st in states.items() if st == "done"}
    print(describe(plan, done))
    from bench.summary import summary_table

    gpu = args.gpu if args.gpu in __import__("bench.execute.estimate", fromlist=["x"]).GPU_PEAK_TFLOPS else "a100"
    print("\n" + summary_table(plan, states, gpu=gpu))
    if args.executor == "slurm":
        from bench.execute.plan_report import describe_cluster_plan

        user, cli = _resource_layers(args)
        print(describe_cluster_plan(plan, done, (user, matrix.resources, cli), gpu=args.gpu, mfu=args.mfu))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.execute.status import stage_states, format_status
    from bench.plan import build_plan
    from bench.runner import store_of, sync_tracking
    from bench.tracking import default_tracking_uri

    matrix = _load(args)
    plan = build_plan(matrix)
    kinds = _kinds(args)
    if kinds:
        plan.stages = {k: s for k, s in plan.stages.items() if s.kind in kinds}
    results = args.results.resolve()
    store = store_of(results)
    rows = stage_states(plan, store, results)
    print(format_status(plan, rows, tail=args.tail))
    from bench.summary import summary_table

    print("\n" + summary_table(plan, {r.key: r.state for r in rows}, {r.key: r.seconds or 0.0 for r in rows}))
    uri = default_tracking_uri(results)
    if any((store.root / s).joinpath("mlflow_events.jsonl").exists() for s in plan.stages):
        counts = sync_tracking(results, uri)
        if counts.get("stages"):
            print(f"mlflow: imported {counts['events']} events of {counts['stages']} stages into {uri}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    import fnmatch

    from bench.execute.slurm import SlurmExecutor
    from bench.plan import build_plan

    matrix = _load(args)
    plan = build_plan(matrix)
    keys = [s.key for s in plan.ordered() if not args.stage or fnmatch.fnmatch(s.key, args.stage) or fnmatch.fnmatch(s.label, args.stage)]
    ex = SlurmExecutor(args.results.resolve(), matrix_name=matrix.name)
    cancelled = ex.cancel(keys)
    print(f"cancelled {len(cancelled)} queued/running job(s) of {matrix.path}" + (f" matching {args.stage!r}" if args.stage else ""))
    for r in cancelled:
        print(f"  {r.job_id:>12s}  {r.key}  {r.label}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from bench.runner import sync_tracking
    from bench.tracking import default_tracking_uri

    results = args.results.resolve()
    uri = args.tracking_uri or default_tracking_uri(results)
    counts = sync_tracking(results, uri)
    print(f"mlflow: imported {counts.get('events', 0)} events of {counts.get('stages', 0)} stages into {uri}"
          + (f" (recovered {counts['recovered']} interrupted imports)" if counts.get("recovered") else ""))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from bench.audit import audit_plan, format_audit
    from bench.plan import build_plan

    report = audit_plan(build_plan(_load(args)))
    print(format_audit(report))
    if args.csv:
        report.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.plan import build_plan
    from bench.runner import reports_dir, store_of, write_reports

    from bench.tracking import Tracker, default_tracking_uri

    matrix = _load(args)
    plan = build_plan(matrix)
    results = args.results.resolve()
    out = reports_dir(results, matrix)
    files = write_reports(plan, store_of(results), out)
    if not files:
        raise CLIError(f"no finished evaluations for {matrix.path} in {results / 'store'}: run `bench run {matrix.path}` first")
    print(f"wrote {len(files)} files to {out}")
    for f in files:
        print(f"  {f}")
    uri = args.tracking_uri or default_tracking_uri(results)
    if not args.no_mlflow and (not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()):
        tracker = Tracker(uri, experiment=matrix.name)
        run_id = tracker.latest_matrix_run(str(matrix.path))
        if run_id:
            tracker.artifact(run_id, out, "reports")
            print(f"logged the reports to MLflow run {run_id} (the latest `bench run` of this matrix)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from bench.data.synthetic import generate

    sites = args.sites.split(",") if args.sites else None
    kw = {"seed": args.seed, "scale": args.scale}
    if sites:
        kw["sites"] = sites
    roots = generate(Path(args.out), **kw)
    for site, root in roots.items():
        print(f"{site}: {root}")
    return 0


def _site_options(text: str | None) -> dict:
    import json

    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--site-options must be a JSON object, e.g. '{{\"split\": \"valid\"}}': {exc}") from None
    if not isinstance(opts, dict):
        raise CLIError("--site-options must be a JSON object")
    return opts


def _site_root(args: argparse.Namespace, site: str) -> Path:
    """`--root` for a single site, else `--data-root/<site>` (default $BENCH_DATA_ROOT or data/synthetic)."""
    if args.root:
        return Path(args.root)
    return Path(args.data_root or os.environ.get("BENCH_DATA_ROOT") or "data/synthetic") / site


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from bench.data.cache import prepare
    from bench.data.index import load_index
    from bench.data.sources import cache_dir_for, site_read_options

    opts = _site_options(args.site_options)
    root = _site_root(args, args.site)
    index = load_index(args.site, str(root), opts, None)
    if args.size and args.native:
        raise CLIError("prepare the fixed-size cache (--size N) and the native cache (--size 0 --native) in two calls")
    out = cache_dir_for(args.cache_dir, args.site, opts) / (f"size{args.size}" if args.size else "native")
    png16 = site_read_options(args.site).get("png16", "container")
    kw = dict(size=args.size or None, native=args.native, native_max_side=args.native_max_side, png16=png16, on_error=args.on_error)
    t0 = time.time()
    if args.executor == "slurm":
        return _prepare_on_slurm(args, index, out, opts, str(root), kw, t0)
    if args.shard is not None:
        # one task of a cluster job array: decode one shard, merge when it was the last one missing
        from bench.data.cache import merge, missing_shards, prepare_shard

        if args.n_shards is None:
            raise CLIError("--shard needs --n-shards (the same on every task)")
        done = prepare_shard(index, out, **kw, shard=args.shard, n_shards=args.n_shards)
        print(f"shard {args.shard} of {args.n_shards} for {args.site} at {done} in {time.time() - t0:.1f}s")
        if args.merge and not missing_shards(out):
            merge(index, out)
            print(f"all shards done: cache committed at {out}")
        return 0
    manifest = prepare(index, out, **kw, workers=args.workers, n_shards=args.n_shards)
    assert manifest is not None
    dt = time.time() - t0
    print(f"cache for {args.site} ({len(index)} images) at {out} in {dt:.1f}s ({len(index) / max(dt, 1e-9):.1f} images/s)")
    counts = {k: v for k, v in manifest.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if counts:
        print("  " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"  skipped images (if any) are listed in {out / 'report.json'}")
    return 0


def _prepare_on_slurm(args: argparse.Namespace, index: Any, out: Path, opts: dict, root: str, kw: dict, t0: float) -> int:
    """`bench data prepare --executor slurm`: a job array of shards and a merge job (bench.execute.prepare_array)."""
    from bench.data.cache import MANIFEST, plan_shards
    from bench.execute import prepare_array

    if args.shard is not None:
        raise CLIError("--shard is what each array task runs; with --executor slurm bench submits the tasks itself")
    if (out / MANIFEST).is_file():
        print(f"cache for {args.site} at {out} is complete; nothing to submit")
        return 0
    n_shards, todo = plan_shards(index, out, n_shards=args.n_shards, **kw)
    spec = prepare_array.PrepareSpec(args.site, root, dict(opts), str(out), dict(kw), n_shards)
    res = prepare_array.prepare_resources(*_resource_layers(args))
    folder = Path(args.cache_dir) / "slurm" / "prepare"
    sub = prepare_array.submit(spec, todo, folder, res, snapshot_root=Path(args.cache_dir) / "slurm" / "code")
    array = sub.shard_jobs[0].split("_")[0] if sub.shard_jobs else "-"
    print(f"submitted {len(todo)} of {n_shards} shard(s) of {args.site} ({len(index)} images) as array {array}, "
          f"merge job {sub.merge_job} (afterok); logs in {folder}")
    if not args.wait:
        return 0
    if not prepare_array.wait(sub, out):
        print(f"prepare jobs ended without committing the cache at {out}; see the logs in {folder}", file=sys.stderr)
        return 1
    print(f"cache committed at {out} in {time.time() - t0:.1f}s")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from bench.data.stats import dataset_summary, site_stats, to_markdown, write_tables
    from bench.data.index import load_index

    opts = _site_options(args.site_options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    indexes = {}
    for site in args.sites:
        if args.root and len(args.sites) > 1:
            raise CLIError("--root names one site's folder; with several sites use --data-root")
        root = _site_root(args, site)
        indexes[site] = load_index(site, str(root), opts, None)  # loaded once: the stats table and the summary
        table = site_stats(site, root, args.labels, options=opts, index=indexes[site])
        files = write_tables(table, out / f"{site}_stats")
        print(f"== {site} ({root})\n{to_markdown(table)}\n   -> {', '.join(str(f) for f in files)}")
    if len(indexes) > 1:
        summary = dataset_summary(indexes)
        files = write_tables(summary, out / "datasets_summary")
        print(f"== summary\n{to_markdown(summary)}\n   -> {', '.join(str(f) for f in files)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Each registered name with a one-line description. Read from the plugins' sources and specs
    (`bench.registry`): no torch, so it answers at once."""
    fam = args.family
    rows: list[tuple[str, str]]
    if fam == "backbones":
        import backbones

        rows = [(n, backbones.get_spec(n).description) for n in backbones.list_backbones()]
    elif fam == "methods":
        import ssl_methods

        from bench.matrix import NON_SSL_METHODS

        builtin = {"none": "no pre-training stage (the backbone's init is fine-tuned directly)",
                   "supervised": "supervised pre-training on a site's labels (pretrain.classes)"}
        registered = ssl_methods.list_methods()
        if getattr(args, "verbose", False):  # each method's reference recipe, with sources
            lines = [f"{n}\n  {builtin[n]}" for n in NON_SSL_METHODS if n not in registered]
            print("\n".join([*lines, *(ln for n in registered for ln in ssl_methods.describe(n))]))
            return 0
        rows = [(n, builtin[n]) for n in NON_SSL_METHODS if n not in registered]
        rows += [(n, ssl_methods.info(n).description) for n in registered]
    elif fam == "sites":
        from bench.data.sites import SITES

        rows = SITES.describe()
    elif fam == "label-sets":
        from bench.data.labels import LABEL_SETS

        rows = [(k, ", ".join(v)) for k, v in LABEL_SETS.items()]
    else:
        from reports.metrics import METRICS

        rows = METRICS.describe() if hasattr(METRICS, "describe") else [(n, "") for n in METRICS.names()]
    width = max((len(n) for n, _ in rows), default=0)
    print("\n".join(f"{n:<{width}}  {d}".rstrip() for n, d in rows))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from bench.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.results.resolve())
    # the interpreter running bench has mlflow installed: no need for the venv on PATH
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)]
    print("MLflow UI: " + " ".join(cmd) + f"\nthen open http://127.0.0.1:{args.port}")
    if args.print_only:
        return 0
    # artifact locations are relative to the results folder (they survive moving it): serve from there
    os.chdir(args.results.resolve())
    os.execv(cmd[0], cmd)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run every unfinished stage of a matrix, then write its reports")
    r.add_argument("matrix", type=Path)
    _add_results(r)
    _add_data_root(r)
    _add_selection(r)
    r.add_argument("--executor", choices=["inline", "local", "slurm"], default="local", help="local (submitit subprocesses, dependency-aware, parallel), inline (this process, easiest to debug) or slurm (submit the whole DAG to SLURM and return); default %(default)s")
    _add_slurm(r)
    r.add_argument("--retry-failed", action="store_true", help="slurm: resubmit failed stages (and their dependants)")
    r.add_argument("--wait", action="store_true", help="slurm: follow the jobs until all ended, then write the reports")
    r.add_argument("--max-parallel", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="stages running at once with the local executor; default %(default)s (cores, at most 4)")
    r.add_argument("--tracking-uri", default=None, help="MLflow URI; default $MLFLOW_TRACKING_URI or sqlite:///RESULTS/mlflow.db")
    r.add_argument("--no-mlflow", action="store_true", help="do not track runs in MLflow")
    r.add_argument("--device", default="cpu", help="torch device (cpu, cuda); default %(default)s")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per stage")
    r.add_argument("--image-policy", choices=["skip", "fail"], default="skip", help="corrupt images: skip (counted and listed) or fail")
    r.add_argument("--no-report", action="store_true", help="skip writing reports at the end")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)

    for name, fn, help_ in (
        ("plan", cmd_plan, "print the stage DAG (with done/todo) and counts per kind; runs nothing"),
        ("status", cmd_status, "state of every stage of a matrix in the store"),
        ("report", cmd_report, "rebuild tables and figures from stored predictions (no training)"),
        ("audit", cmd_audit, "leakage audit: images/patients shared between pre-training, fine-tuning and evaluation"),
    ):
        q = sub.add_parser(name, help=help_)
        q.add_argument("matrix", type=Path)
        _add_results(q)
        _add_data_root(q)
        if name in ("plan", "status", "report", "audit"):
            _add_selection(q)
        if name == "audit":
            q.add_argument("--csv", type=Path, default=None, help="also write the audit as CSV")
        if name == "plan":
            q.add_argument("--executor", choices=["inline", "local", "slurm"], default="local", help="slurm: also show the jobs, arrays, dependencies, resources and GPU-hours")
            q.add_argument("--gpu", default="a100", help="device for the GPU-hour estimate (v100, a100, l40s, h100, h200, b200) or a bf16 peak in TFLOP/s; default %(default)s")
            q.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOP utilisation for the estimate; default %(default)s")
            _add_slurm(q)
        if name == "status":
            q.add_argument("--tail", type=int, default=5, help="log lines shown for each failed stage; default %(default)s")
        if name == "report":
            q.add_argument("--tracking-uri", default=None, help="MLflow URI (default as for `bench run`)")
            q.add_argument("--no-mlflow", action="store_true", help="do not log the reports to MLflow")
        q.set_defaults(fn=fn)

    d = sub.add_parser("data", help="datasets: synthetic generator, tables, caches")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = dsub.add_parser("synth", help="write the synthetic multi-site collection in the official layouts")
    s.add_argument("--out", default="data/synthetic", help="output root; default %(default)s")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=1.0, help="multiply the default image counts")
    s.add_argument("--sites", default=None, help="comma-separated site layouts to write (default: all)")
    s.set_defaults(fn=cmd_data_synth)

    pr = dsub.add_parser("prepare", help="decode a site once into a memory-mapped cache that stages read")
    pr.add_argument("site")
    pr.add_argument("--root", default=None, help="the site's folder (default DATA_ROOT/<site>)")
    pr.add_argument("--data-root", default=None, help="parent of the sites' folders (default $BENCH_DATA_ROOT or data/synthetic)")
    pr.add_argument("--site-options", default=None, help='adapter options as JSON, e.g. \'{"split": "valid"}\'')
    pr.add_argument("--size", type=int, default=224, help="square side of the fixed-size cache (0: none); default %(default)s")
    pr.add_argument("--native", action="store_true", help="write the native-resolution cache for variable-size (DBB) pre-training; use with --size 0")
    pr.add_argument("--native-max-side", type=int, default=None, help="cap the native cache's longer side (px)")
    pr.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="corrupt images: skip (listed in report.json) or fail")
    pr.add_argument("--workers", type=int, default=0, help="decode processes (0: every core; default); an interrupted prepare resumes from its finished shards")
    pr.add_argument("--n-shards", type=int, default=None, help="split the work into N shards (default: ~256 images each)")
    pr.add_argument("--shard", type=int, default=None, help="decode only shard I of --n-shards (one task of a job array, e.g. $SLURM_ARRAY_TASK_ID)")
    pr.add_argument("--merge", action="store_true", help="with --shard: commit the cache if every shard is done")
    pr.add_argument("--cache-dir", type=Path, default=DEFAULT_RESULTS / "cache", help="caches root; stages of `bench run --results R` use R/cache (default %(default)s)")
    pr.add_argument("--executor", choices=["local", "slurm"], default="local", help="local (this machine's cores) or slurm (one array task per unfinished shard, then a merge job after them); default %(default)s")
    pr.add_argument("--wait", action="store_true", help="slurm: follow the jobs until the cache is committed")
    _add_slurm(pr)
    pr.set_defaults(fn=cmd_data_prepare)

    st = dsub.add_parser("stats", help="dataset summary and label-distribution tables (Krones Tables 9-13)")
    st.add_argument("sites", nargs="+")
    st.add_argument("--root", default=None, help="data root of the site (one site only)")
    st.add_argument("--data-root", default=None, help="parent of the sites' folders (default $BENCH_DATA_ROOT or data/synthetic)")
    st.add_argument("--site-options", default=None, help="adapter options as JSON")
    st.add_argument("--labels", default="harmonised5", help="label set (nih14, harmonised5); default %(default)s")
    st.add_argument("--out", default=str(DEFAULT_RESULTS / "data_tables"), help="output folder; default %(default)s")
    st.set_defaults(fn=cmd_data_stats)

    lst = sub.add_parser("list", help="what is registered")
    lst.add_argument("family", choices=["backbones", "methods", "sites", "label-sets", "metrics"])
    lst.add_argument("-v", "--verbose", action="store_true", help="methods: print each method's reference recipe")
    lst.set_defaults(fn=cmd_list)

    ui = sub.add_parser("ui", help="open the MLflow UI on the results' tracking store (localhost)")
    _add_results(ui)
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--print-only", action="store_true", help="only print the command")
    ui.set_defaults(fn=cmd_ui)

    c = sub.add_parser("cancel", help="cancel the queued/running SLURM jobs of a matrix")
    c.add_argument("matrix", type=Path)
    _add_results(c)
    _add_data_root(c)
    c.add_argument("--stage", default=None, help="only stages whose key or label matches this glob, e.g. 'pretrain-*' or '3.1 *'")
    c.set_defaults(fn=cmd_cancel)

    sy = sub.add_parser("sync", help="import the MLflow events that cluster jobs wrote into their stage folders (exactly once)")
    _add_results(sy)
    sy.add_argument("--tracking-uri", default=None, help="MLflow URI (default as for `bench run`)")
    sy.set_defaults(fn=cmd_sync)

    # `bench dbb ...` is dispatched in main() to bench.dbb_report, which parses its own arguments
    sub.add_parser("dbb", help="batching-strategy benchmark on a CSV of image sizes (bench dbb --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dbb"]:
        # the batching benchmark has its own argument parser (and --help)
        from bench import dbb_report

        return dbb_report.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from bench.data.sites import DataError
    from bench.matrix import MatrixError
    from bench.store import StoreError

    from bench.registry import UnknownNameError

    fn: Callable[[argparse.Namespace], int] = args.fn

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # `kill`/SLURM send SIGTERM: treat it like Ctrl-C so running jobs are cancelled and marked interrupted
    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP"):  # a closed terminal stops `bench` in the same orderly way
        signal.signal(signal.SIGHUP, _terminate)
    try:
        return fn(args)
    except (MatrixError, DataError, StoreError, CLIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnknownNameError as exc:  # a registry name the user gave; any other KeyError is a bug (traceback, exit 1)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # a LeakageError can only come from `bench.audit` once a command imported it; importing it
        # up front would import torch and make `bench list`/`bench plan` take seconds
        audit = sys.modules.get("bench.audit")
        if audit is None or not isinstance(exc, audit.LeakageError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
