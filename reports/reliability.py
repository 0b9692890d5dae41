"""Reliability analysis on one report column (Krones Tables 7-8, Figure 2b-d).

As in the paper, each experiment is represented by its best seed on that column
(highest class-mean AUC). Computed per experiment: threshold metrics
(`reports.thresholds`), calibration (`reports.calibration`), Oracle AUC
(`reports.referral`, standard and optionally Krones-compatible, plus the per-label
variant); and, from the labels alone, the random-guess baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from bench.data.errors import DataError
from reports.aggregate import best_seeds
from reports.baselines import always_negative_accuracy, known_prevalence_random_accuracy, prevalence
from reports.calibration import ece, ece_top_label, krones_ce
from reports.manifest import ordered
from reports.predictions import Predictions
from reports.referral import oracle_auc, oracle_auc_per_label, referred_counts
from reports.tables import Cell, Row, Source, Table, mark_best
from reports.thresholds import threshold_metrics

Loader = Callable[[str, tuple[str, ...]], Predictions]

# Table 7 rows, as in the paper (4 per experiment): (frame column, printed name)
THRESHOLD_ROWS: tuple[tuple[str, str], ...] = (
    ("mean_accuracy", "Mean accuracy"),
    ("subset_accuracy", "Subset accuracy"),
    ("fnr", "FNR (underdiagnosis)"),
    ("ece_top_label", "Calibration error (ECE, top-label)"),
)
# the other threshold metrics (table7_threshold_metrics_more)
MORE_THRESHOLD_ROWS: tuple[tuple[str, str], ...] = (
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("f1", "F1 (macro)"),
)


@dataclass
class Reliability:
    """Everything Tables 7-8 and Figure 2 (b)-(d) need, per experiment (best seed)."""

    column: str
    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    fractions: tuple[float, ...]
    compat: bool
    y_true: np.ndarray
    sources: dict[object, Source] = field(default_factory=dict)
    per_threshold: dict[object, pd.DataFrame] = field(default_factory=dict)
    oracle: dict[object, np.ndarray] = field(default_factory=dict)
    oracle_compat: dict[object, np.ndarray] = field(default_factory=dict)
    oracle_per_label: dict[object, np.ndarray] = field(default_factory=dict)
    calibration: dict[object, dict[str, float]] = field(default_factory=dict)


def analyse(
    runs: pd.DataFrame,
    column: str,
    loader: Loader,
    *,
    experiments: Sequence[object] | None = None,
    thresholds: Sequence[float],
    fractions: Sequence[float],
    compat: bool = False,
) -> Reliability:
    """Run the reliability metrics on `column` for `experiments` (default: all on it)."""
    g = runs[(runs["column"] == column) & (runs["task"] == "multilabel")]
    if g.empty:
        raise DataError(f"reliability column {column!r} has no multilabel rows in the report manifest")
    seeds = best_seeds(g, column)
    exps = list(experiments) if experiments is not None else ordered(g["experiment"])
    if not exps:
        raise DataError(f"reliability: no experiments selected for column {column!r}")
    unknown = [e for e in exps if e not in seeds]
    if unknown:
        raise DataError(f"reliability: experiments {unknown} have no results on column {column!r}")
    res = None
    for e in exps:
        row = g[(g["experiment"] == e) & (g["seed"] == seeds[e])].iloc[0]
        pred = loader(row["predictions"], row["classes"])
        if res is None:
            res = Reliability(column, pred.classes, tuple(thresholds), tuple(fractions), compat, pred.y_true)
        elif pred.classes != res.classes or not np.array_equal(pred.y_true, res.y_true, equal_nan=True):
            raise DataError(f"{pred.path}: labels differ from the other experiments on column {column!r}")
        y, p = pred.y_true, pred.y_score
        res.sources[e] = Source(seeds[e], str(row["run_id"]), str(row["stage_key"]))
        frame = threshold_metrics(y, p, thresholds, compat=compat)
        frame["ece_top_label"] = [ece_top_label(y, p, threshold=t) for t in thresholds]
        frame["krones_ce"] = [krones_ce(y, p, threshold=t) for t in thresholds]
        res.per_threshold[e] = frame
        res.oracle[e] = oracle_auc(y, p, fractions=fractions)
        if compat:
            res.oracle_compat[e] = oracle_auc(y, p, fractions=fractions, compat=True)
        res.oracle_per_label[e] = oracle_auc_per_label(y, p, fractions=fractions)
        res.calibration[e] = {
            "ece": ece(y, p),
            "ece_top_label": ece_top_label(y, p, threshold=0.5),
            "krones_ce": krones_ce(y, p, threshold=0.5),
        }
    return res  # type: ignore[return-value]  # exps is non-empty


def _pct(f: float) -> str:
    return f"{f:g}"


def threshold_table(res: Reliability, *, more: bool = False) -> Table:
    """Krones Table 7: per experiment (first column) its metric rows, columns = decision thresholds.

    The paper's four rows (mean and subset accuracy, FNR, calibration error) by
    default; with `more`, sensitivity, specificity, macro F1 and (compat) the
    Krones-compatible calibration error (`table7_threshold_metrics_more`).
    """
    rows: list[Row] = []
    if more:
        compat_rows = [("mean_accuracy_compat", "Mean accuracy (Krones-compatible)"), ("krones_ce", "Calibration error (Krones-compatible)")]
        names = list(MORE_THRESHOLD_ROWS) + (compat_rows if res.compat else [])
    else:
        names = list(THRESHOLD_ROWS)
    for e, frame in res.per_threshold.items():
        for key, label in names:
            cells = [Cell(float(v), sources=(res.sources[e],)) for v in frame[key]]
            rows.append(Row(label, cells, group=str(e)))
    base_rand = "[" + ", ".join(f"{v:.4f}" for v in known_prevalence_random_accuracy(res.y_true)) + "]"
    base_neg = "[" + ", ".join(f"{v:.4f}" for v in always_negative_accuracy(res.y_true)) + "]"
    notes = [
        f"Best seed per experiment by class-mean AUC on {res.column}; a label is predicted positive when p > t; "
        "every metric is the mean over labels except subset accuracy (all labels of an image right)."
    ]
    if not more:
        notes.append(
            f"For comparison, per class ({', '.join(res.classes)}): random guessing with known prevalence p, "
            f"accuracy p² + (1 - p)²: {base_rand}; always negative: {base_neg}."
        )
    if more and res.compat:
        notes.append("Krones-compatible calibration error is about 0.5 for a perfectly calibrated model; it is not an ECE.")
    thresholds = ", ".join(_pct(t) for t in res.thresholds)
    title = "Further threshold-dependent metrics" if more else "Threshold-dependent metrics"
    t = Table(
        "table7_threshold_metrics_more" if more else "table7_threshold_metrics",
        f"{title} on {res.column} for the decision thresholds {thresholds} (mean across classes), "
        "for the best seed of each experiment by AUC.",
        "Metric",
        [_pct(t) for t in res.thresholds],
        rows,
        notes=notes,
        group_header="No.",
    )
    t.column_groups = [("Decision threshold", len(res.thresholds))]
    return t


def oracle_table(res: Reliability, *, compat: bool = False) -> Table:
    """Krones Table 8: Oracle AUC per referral fraction, best per column in bold."""
    data = res.oracle_compat if compat else res.oracle
    rows = [Row(str(e), [Cell(float(v), sources=(res.sources[e],)) for v in vals]) for e, vals in data.items()]
    n = int(res.y_true.shape[0])
    counts = referred_counts(n, res.fractions, compat=compat)
    if compat:
        name = "table8_oracle_auc_compat"
        caption = (
            f"Oracle AUC on {res.column}, Krones-compatible cumulative referral (reproduces the paper's numbers; "
            "not the nominal fractions)."
        )
        notes = ["Effective referred share per nominal fraction: " + ", ".join(f"{100 * k / n:.2f}%" for k in counts) + "."]
    else:
        name = "table8_oracle_auc"
        caption = (
            f"Oracle performance on {res.column}: mean AUC over classes after the floor(N f) most uncertain images "
            "(smallest mean |p - 0.5|) are referred to an oracle, for the best seed of each experiment by AUC. "
            "In bold, best per referral fraction."
        )
        notes = [f"Referred images per fraction (N = {n}): {counts}."]
    t = Table(name, caption, "Exp.", [_pct(f) for f in res.fractions], rows, notes=notes)
    t.column_groups = [("Referral fraction", len(res.fractions))]
    return mark_best(t)


def oracle_per_label_table(res: Reliability) -> Table:
    """Per-label referral (each label refers its own most uncertain images)."""
    rows = []
    for e, arr in res.oracle_per_label.items():
        for j, cls in enumerate(res.classes):
            rows.append(Row(cls, [Cell(float(v), sources=(res.sources[e],)) for v in arr[:, j]], group=str(e)))
    t = Table(
        "table8_oracle_auc_per_label",
        f"Oracle AUC per label on {res.column}: each label refers its own floor(N f) most uncertain images "
        "(best seed of each experiment by AUC).",
        "Label",
        [_pct(f) for f in res.fractions],
        rows,
        group_header="No.",
    )
    t.column_groups = [("Referral fraction", len(res.fractions))]
    return t


def calibration_table(res: Reliability) -> Table:
    """Calibration per experiment (best seed): standard ECEs and the Krones-compatible value."""
    cols = ["ECE (positive class)", "ECE (top-label, t=0.5)", "Krones CE (t=0.5)"]
    keys = ["ece", "ece_top_label", "krones_ce"]
    rows = [
        Row(str(e), [Cell(res.calibration[e][k], sources=(res.sources[e],)) for k in keys]) for e in res.calibration
    ]
    return Table(
        "table_calibration",
        f"Calibration on {res.column}: 15 equal-width bins, mean over labels. Lower is better for the ECEs; "
        "the Krones-compatible value is about 0.5 for a calibrated model.",
        "Exp.",
        cols,
        rows,
    )


def baseline_table(res: Reliability) -> Table:
    """Prevalence and the two random-guess accuracies per class."""
    p = prevalence(res.y_true)
    neg = always_negative_accuracy(res.y_true)
    rnd = known_prevalence_random_accuracy(res.y_true)
    rows = [Row(c, [Cell(float(p[j])), Cell(float(neg[j])), Cell(float(rnd[j]))]) for j, c in enumerate(res.classes)]
    return Table(
        "table_random_baselines",
        f"Random-guess references on {res.column} (N = {res.y_true.shape[0]}).",
        "Class",
        ["Prevalence", "Always-negative accuracy", "Known-prevalence random accuracy"],
        rows,
    )


def tables(res: Reliability) -> list[Table]:
    out = [threshold_table(res), threshold_table(res, more=True), oracle_table(res)]
    if res.compat:
        out.append(oracle_table(res, compat=True))
    out += [oracle_per_label_table(res), calibration_table(res), baseline_table(res)]
    return out
