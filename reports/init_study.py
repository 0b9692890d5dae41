"""Tables of the DINOv2-initialisation study (Tayebi Arasteh et al., seed 004).

Rows are *initialisations*, not experiments: an experiment's row label is its manifest key
`init_row` when given, else `<pre-training dataset> (<pre-training method>)` for an
experiment with a pre-training stage (`MIMIC-CXR (supervised)`), else its initialisation
(`DINOv2`, `ImageNet-21k`). Columns are the report columns (one per dataset). Each
(row, column) must come from exactly one experiment.

Tables (`build_reports(..., init_reference="DINOv2")`):

* `init_study_auc` - dataset x initialisation: mean AUC over findings (mean over seeds) and
  the two-sided p-value of its difference to the reference row on the same column;
* `init_study_summary` - per dataset and init: mean AUC, and accuracy / sensitivity /
  specificity averaged over findings at the validation Youden threshold and at 0.5;
* `init_study_findings_<column>` - per initialisation and finding: AUC, and accuracy /
  sensitivity / specificity at both thresholds (`reports.youden`);
* `init_study_pvalues.csv` (written next to them by `build_reports`): exact p-values,
  differences and their bootstrap intervals, one line per comparison.

Significance: a paired, stratified image-level bootstrap (`reports.statistics.
bootstrap_replicates`): every replicate resamples the column's test images once (within
the strata "has any positive finding" / "has none") and scores every initialisation on
*the same* resampled images; the statistic is the seed-averaged mean AUC over findings,
the p-value 2 min(P*(d <= 0), P*(d >= 0)) of the replicate differences d
(`reports.statistics.difference`). Seeded by `seed`, so a rebuild prints the same p-values.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bench.data.errors import DataError
from reports.init_rows import init_row
from reports.manifest import is_missing, ordered
from reports.predictions import PredictionCache
from reports.significance import _stack
from reports.statistics import Difference, bootstrap_replicates, difference
from reports.tables import Cell, Row, Source, Table
from reports.youden import THRESHOLD_METRICS, FindingMetrics, finding_metrics, validation_thresholds

METRIC_NAMES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity"}


def init_row_label(m_exp: pd.DataFrame, experiment: object) -> str:
    """The initialisation row an experiment belongs to (see the module docstring)."""

    def first(key: str) -> str | None:
        if key not in m_exp.columns:
            return None
        vals = [v for v in m_exp[key].tolist() if not is_missing(v)]
        return str(vals[0]) if vals else None

    explicit = first("init_row")
    if explicit:
        return explicit
    return init_row(first("meta:Pre-training"), first("meta:Pre-training dataset"), first("meta:Initialisation"), str(experiment))


def format_p(p: float, n_boot: int) -> str:
    """`<0.001` below the bootstrap's resolution (1/B) or 0.001, else three decimals."""
    if math.isnan(p):
        return "-"
    floor = max(0.001, 1.0 / max(n_boot, 1))
    return f"<{floor:g}" if p < floor else f"{p:.3f}"


@dataclass
class Comparison:
    """One non-reference row on one column against the reference row."""

    column: str
    row: str
    experiment: object
    reference_experiment: object
    auc: float
    reference_auc: float
    diff: Difference
    n_images: int


@dataclass
class InitStudy:
    """Everything the tables need, computed once."""

    reference: str
    rows: list[str]
    columns: list[str]
    cell_experiment: dict[tuple[str, str], object]  # (row, column) -> experiment
    auc: dict[tuple[str, str], tuple[float, float]]  # (row, column) -> (mean, sd) over seeds
    sources: dict[tuple[str, str], tuple[Source, ...]]
    comparisons: dict[tuple[str, str], Comparison]
    findings: dict[tuple[str, str], list[FindingMetrics]]  # per seed
    no_validation: list[object]
    n_boot: int
    seed: int


def analyse(ml: pd.DataFrame, m: pd.DataFrame, *, reference: str, n_boot: int = 2000, seed: int = 0) -> InitStudy:
    """Row labels, AUC summaries, paired bootstrap p-values and per-finding metrics."""
    if ml.empty:
        raise DataError("init study: the manifest has no multi-label runs")
    labels = {e: init_row_label(m[m["experiment"] == e], e) for e in ordered(ml["experiment"])}
    rows = list(dict.fromkeys(labels.values()))
    if reference not in rows:
        raise DataError(f"init study: reference row {reference!r} is not an initialisation of this manifest; rows: {rows}")
    rows = [reference] + [r for r in rows if r != reference]
    columns = ordered(ml["column"])
    cell_exp: dict[tuple[str, str], object] = {}
    for (e, col), _ in ml.groupby(["experiment", "column"], sort=False):
        key = (labels[e], col)
        if key in cell_exp and cell_exp[key] != e:
            raise DataError(
                f"init study: experiments {cell_exp[key]!r} and {e!r} are both the {key[0]!r} row of column {col!r}; "
                "give one of them a manifest key `init_row`"
            )
        cell_exp[key] = e
    cache = PredictionCache()
    auc: dict[tuple[str, str], tuple[float, float]] = {}
    sources: dict[tuple[str, str], tuple[Source, ...]] = {}
    findings: dict[tuple[str, str], list[FindingMetrics]] = {}
    no_val: list[object] = []
    for key, e in cell_exp.items():
        g = ml[(ml["experiment"] == e) & (ml["column"] == key[1])]
        vals = g["mean_auc"].to_numpy(dtype=np.float64)
        auc[key] = (float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else math.nan, float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan)
        sources[key] = tuple(Source(r.seed, str(r.run_id), str(r.stage_key)) for r in g.itertuples(index=False))
        per_seed = []
        for r in g.itertuples(index=False):
            test = cache.get(r.predictions, r.classes)
            thr = _thresholds(r, test.classes, cache)
            if thr is None:
                no_val.append(e)
                thr = np.full(len(test.classes), np.nan)
            per_seed.append(finding_metrics(test.classes, test.y_true, test.y_score, thr))
        findings[key] = per_seed
    comparisons: dict[tuple[str, str], Comparison] = {}
    for col in columns:
        ref_e = cell_exp.get((reference, col))
        if ref_e is None:
            continue
        others = [(r, cell_exp[(r, col)]) for r in rows[1:] if (r, col) in cell_exp]
        if not others:
            continue
        g = ml[ml["column"] == col]
        if g[g["experiment"].isin([ref_e] + [e for _, e in others])]["labels_key"].nunique() != 1:
            raise DataError(f"init study: column {col!r}: initialisations were tested on different images or labels")
        y, s_ref = _stack(g[g["experiment"] == ref_e], cache.get)
        stacks = {ref_e: s_ref, **{e: _stack(g[g["experiment"] == e], cache.get)[1] for _, e in others}}
        reps = bootstrap_replicates(y, stacks, n_boot=n_boot, seed=seed)
        for r, e in others:
            a, b = auc[(r, col)][0], auc[(reference, col)][0]
            comparisons[(r, col)] = Comparison(col, r, e, ref_e, a, b, difference(a - b, reps[e], reps[ref_e]), int(y.shape[0]))
    return InitStudy(reference, rows, columns, cell_exp, auc, sources, comparisons, findings, list(dict.fromkeys(no_val)), n_boot, seed)


def _thresholds(run: object, classes: tuple[str, ...], cache: PredictionCache) -> np.ndarray | None:
    """Youden thresholds from the run's validation predictions (manifest key `val_predictions`), or None."""
    path = getattr(run, "val_predictions", None)
    if is_missing(path) or not path:
        return None
    try:
        names = pq.read_schema(path).names
    except Exception:  # missing or unreadable: the tables say which experiments lack thresholds
        return None
    val_classes = tuple(c for c in classes if f"prob:{c}" in names and f"label:{c}" in names)
    if not val_classes:
        return None
    val = cache.get(path, val_classes)
    return validation_thresholds(classes, val_classes, val.y_true, val.y_score)


def _seed_mean(values: list[np.ndarray]) -> np.ndarray:
    stack = np.vstack(values)
    out = np.full(stack.shape[1], np.nan)
    ok = ~np.all(np.isnan(stack), axis=0)
    out[ok] = np.nanmean(stack[:, ok], axis=0)
    return out


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.any(~np.isnan(v)) else math.nan


def _bold_best(rows: list[Row], n_cols: int, digits: int) -> None:
    """Bold the highest displayed value per column within each row group."""
    groups: dict[object, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    for members in groups.values():
        for j in range(n_cols):
            cells = [r.cells[j] for r in members if r.cells[j].numeric]
            if len(cells) < 2:
                continue
            best = max(round(c.mean, digits) for c in cells)
            for c in cells:
                c.bold = round(c.mean, digits) == best


def _bold_best_per_row(rows: list[Row], digits: int) -> None:
    """Bold the highest displayed number of each row (the best initialisation of a dataset)."""
    for r in rows:
        cells = [c for c in r.cells if c.numeric]
        if len(cells) < 2:
            continue
        best = max(round(c.mean, digits) for c in cells)
        for c in cells:
            c.bold = round(c.mean, digits) == best


def auc_table(st: InitStudy) -> Table:
    """Dataset x initialisation: mean AUC, and for every other row the p-value against the reference."""
    heads, groups = [], []
    for r in st.rows:
        heads.append(f"{r} AUC")
        if r != st.reference:
            heads.append(f"{r} p")
        groups.append((r, 1 if r == st.reference else 2))
    rows = []
    for col in st.columns:
        cells = []
        for r in st.rows:
            key = (r, col)
            have = key in st.cell_experiment
            cells.append(Cell(*st.auc[key], sources=st.sources[key]) if have else Cell())
            if r != st.reference:
                c = st.comparisons.get(key)
                cells.append(Cell(text=format_p(c.diff.p_value, st.n_boot) if c else "-"))
        rows.append(Row(col, cells))
    _bold_best_per_row(rows, 4)
    t = Table(
        "init_study_auc",
        f"Initialisation per dataset: mean AUC over the findings of each dataset's test set (mean over seeds; in "
        f"brackets the sample sd over seeds when there are several) and the two-sided p-value of its difference to "
        f"the {st.reference} initialisation on the same test images (paired stratified bootstrap over images, "
        f"B = {st.n_boot}, seed {st.seed}). In bold, best per dataset.",
        "Dataset",
        heads,
        rows,
        column_groups=groups,
    )
    t.notes.append(
        f"p: every bootstrap replicate resamples the test images once and scores all initialisations on the same "
        f"resample; p = 2 min(P(d <= 0), P(d >= 0)) over the replicate differences d of the seed-averaged mean AUC; "
        f"'<{max(0.001, 1 / max(st.n_boot, 1)):g}' is below the resolution of B replicates. Exact values: init_study_pvalues.csv."
    )
    return t


def summary_table(st: InitStudy) -> Table:
    """Per dataset and init: mean AUC and the finding-averaged threshold metrics at both thresholds."""
    fixed = next(iter(st.findings.values()))[0].fixed if st.findings else 0.5
    heads = ["AUC"] + [f"{METRIC_NAMES[k]} (Youden)" for k in THRESHOLD_METRICS] + [f"{METRIC_NAMES[k]} ({fixed:g})" for k in THRESHOLD_METRICS]
    rows = []
    for col in st.columns:
        for r in st.rows:
            key = (r, col)
            if key not in st.cell_experiment:
                continue
            fm = st.findings[key]
            cells = [Cell(st.auc[key][0], st.auc[key][1], sources=st.sources[key])]
            for attr in ("at_youden", "at_fixed"):
                for k in THRESHOLD_METRICS:
                    v = _nanmean(_seed_mean([getattr(f, attr)[k] for f in fm]))
                    cells.append(Cell(v, sources=st.sources[key]))
            rows.append(Row(r, cells, group=col))
    _bold_best(rows, len(heads), 4)
    t = Table(
        "init_study_summary",
        "Initialisation study, averaged over findings: mean AUC, and accuracy, sensitivity and specificity at the "
        "per-finding threshold maximising Youden's J on the fine-tuning validation split and at the fixed threshold "
        f"{fixed:g} (positive when p >= threshold), each the mean over findings and seeds. In bold, best per dataset.",
        "Initialisation",
        heads,
        rows,
        column_groups=[("", 1), ("Youden threshold (validation)", 3), (f"Threshold {fixed:g}", 3)],
        group_header="Dataset",
    )
    _note_no_validation(t, st)
    return t


def findings_table(st: InitStudy, column: str, name: str) -> Table:
    """Per finding of one dataset: AUC and the threshold metrics at both thresholds; rows grouped by
    initialisation, one per finding plus their mean (narrow enough for a page with 14+ findings)."""
    keys = [(r, column) for r in st.rows if (r, column) in st.cell_experiment]
    classes = list(st.findings[keys[0]][0].classes)
    fixed = st.findings[keys[0]][0].fixed
    metrics = [("AUC", None, "auc")] + [(f"{METRIC_NAMES[k]} (Youden)", "at_youden", k) for k in THRESHOLD_METRICS]
    metrics += [(f"{METRIC_NAMES[k]} ({fixed:g})", "at_fixed", k) for k in THRESHOLD_METRICS]
    rows = []
    for key in keys:
        fm = st.findings[key]
        per = [_seed_mean([f.auc if attr is None else getattr(f, attr)[k] for f in fm]) for _, attr, k in metrics]
        for j, cls in enumerate([*classes, "Mean"]):
            vals = [v[j] if j < len(classes) else _nanmean(v) for v in per]
            rows.append(Row(cls, [Cell(float(v), sources=st.sources[key]) for v in vals], group=key[0]))
    # best initialisation per finding and metric: compare rows with the same finding across groups
    by_label: dict[str, list[Row]] = {}
    for r in rows:
        by_label.setdefault(r.label, []).append(r)
    for same in by_label.values():
        _bold_best([Row(r.label, r.cells) for r in same], len(metrics), 4)
    t = Table(
        name,
        f"Initialisation study, {column}: per finding AUC, and accuracy, sensitivity and specificity at the "
        "finding's Youden threshold chosen on the fine-tuning validation split and at the fixed threshold "
        f"{fixed:g} (positive when p >= threshold); mean over seeds. Mean: over findings. In bold, the best "
        "initialisation per finding and metric.",
        "Finding",
        [m[0] for m in metrics],
        rows,
        column_groups=[("", 1), ("Youden threshold (validation)", 3), (f"Threshold {fixed:g}", 3)],
        group_header="Initialisation",
    )
    _note_no_validation(t, st)
    return t


def _note_no_validation(t: Table, st: InitStudy) -> None:
    if st.no_validation:
        t.notes.append(
            "No validation predictions for "
            + ", ".join(map(str, st.no_validation))
            + " (fine-tune stages written before they were stored): their Youden columns are empty."
        )


def pvalues_csv(st: InitStudy) -> str:
    """Long form: one line per comparison, exact numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["column", "row", "experiment", "reference", "reference_experiment", "auc", "reference_auc",
                "difference", "ci_low", "ci_high", "se", "p_value", "method", "n_boot", "seed", "n_images"])
    for c in st.comparisons.values():
        d = c.diff
        w.writerow([c.column, c.row, c.experiment, st.reference, c.reference_experiment, repr(c.auc), repr(c.reference_auc),
                    repr(d.estimate), repr(d.low), repr(d.high), repr(d.se), repr(d.p_value), d.method, st.n_boot, st.seed, c.n_images])
    return buf.getvalue()


def init_study_tables(ml: pd.DataFrame, m: pd.DataFrame, *, reference: str, n_boot: int = 2000, seed: int = 0) -> tuple[list[Table], str]:
    """The study's tables and the p-value CSV text (see the module docstring)."""
    from reports.build import slug

    st = analyse(ml, m, reference=reference, n_boot=n_boot, seed=seed)
    tables = [auc_table(st), summary_table(st)]
    tables += [findings_table(st, col, f"init_study_findings_{slug(col)}") for col in st.columns]
    return tables, pvalues_csv(st)
