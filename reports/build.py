"""`build_reports`: every table and figure that applies to a manifest, plus `index.md`.

What is written depends on what the manifest holds (a table needs its inputs):

* multilabel columns -> `table2_multisite` (class-mean AUC, mean (sd) over seeds; bold
  best per column; dagger = not significantly different from the best, see
  `reports.significance`) and `table2_multisite_ci` (image-level 95% CIs);
* `per_class_columns` (default: the reliability column, else every multilabel
  column) -> `table3_per_class_<column>`;
* manifest keys `meta:*` -> `table5_options` (Table 2 with descriptor columns);
* manifest key `pretrain_size` -> `table6_pretrain_size_<column>` + Figure 3;
* `reliability_column` -> Tables 7, 8 (+ compat, per label), calibration, random
  baselines, Figure 2;
* multiclass columns (`task == multiclass`) -> `table_top1_accuracy` (pilot),
  `table_downstream` (poster, balanced top-1), `confusion_matrices.csv` (best seed);
* `token_frame` (from the batching benchmark) -> `table_tokens_compute`.

Everything is written atomically (temp file + rename), so re-running overwrites the
previous build cleanly.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from bench.data.sites import DataError
from reports import figures, reliability
from reports.aggregate import best_seeds, run_metrics, summarise, summarise_per_class
from reports.manifest import check_manifest, ordered
from reports.multiclass import confusion
from reports.poster_tables import downstream_table, token_table
from reports.predictions import PredictionCache, load_predictions
from reports.referral import DEFAULT_FRACTIONS
from reports.significance import ColumnStats, column_stats
from reports.tables import Cell, Row, Table, cell_text, metric_table, per_class_table, size_table
from reports.thresholds import DEFAULT_THRESHOLDS
from reports.writers import write_atomic, write_table


def slug(text: object) -> str:
    """File-name-safe lower-case form of a column name (`CheXpert vali` -> `chexpert_vali`)."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower()
    return s or "column"


def build_reports(
    manifest: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
    reliability_column: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    referral_fractions: Sequence[float] = DEFAULT_FRACTIONS,
    compat: bool = False,
    experiments: Sequence[object] | None = None,
    per_class_columns: Sequence[str] | None = None,
    token_frame: pd.DataFrame | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
    alpha: float = 0.05,
    max_bootstrap_images: int = 1000,
    make_figures: bool = True,
) -> list[Path]:
    """Compute and write all applicable tables and figures; returns the written paths.

    `experiments` restricts Tables 7-8 and Figure 2 to those experiments (the paper
    shows a selection); `compat` adds the Krones-compatible Oracle AUC and
    calibration error; `alpha` is the level of the "not significantly different
    from the best" marks.
    """
    m = check_manifest(manifest)
    bad = [t for t in thresholds if not 0.0 < float(t) < 1.0]
    if bad:
        raise ValueError(f"decision thresholds must lie strictly between 0 and 1, got {bad}")
    if reliability_column is not None and reliability_column not in set(m["column"]):
        raise DataError(
            f"reliability_column {reliability_column!r} is not a report column; columns: {ordered(m['column'])}"
        )
    out = Path(out_dir)
    runs = run_metrics(m)
    tables: list[Table] = []
    written: list[Path] = []

    ml = runs[runs["task"] == "multilabel"]
    if not ml.empty:
        summary = summarise(ml, "mean_auc")
        t2 = metric_table(
            summary,
            m,
            name="table2_multisite",
            caption=(
                "Performance across report columns: mean AUC over the classes of each column and over seeds, in "
                "brackets the sample standard deviation (ddof=1) over seeds. In bold, best per column."
            ),
        )
        stats = _significance(ml, m, n_boot, boot_seed, alpha, max_bootstrap_images)
        _mark_tied(t2, stats, alpha)
        tables += [t2, _ci_table(t2, stats)]
        if any(c.startswith("meta:") for c in m.columns):
            tables.append(
                metric_table(
                    summary,
                    m,
                    name="table5_options",
                    caption="Training options: mean AUC over classes and seeds (sample sd over seeds). In bold, best per column.",
                    descriptors=[c for c in m.columns if c.startswith("meta:")],
                )
            )
        cols = per_class_columns
        if cols is None:
            cols = [reliability_column] if reliability_column is not None else ordered(ml["column"])
        for col in cols:
            tables.append(per_class_table(summarise_per_class(ml, col), col, name=f"table3_per_class_{slug(col)}"))
        if "pretrain_size" in m.columns and ml["pretrain_size"].notna().any():
            for col in ordered(ml.loc[ml["pretrain_size"].notna(), "column"]):
                t6 = size_table(ml, col, name=f"table6_pretrain_size_{slug(col)}")
                tables.append(t6)
                if make_figures:
                    written += figures.figure3(t6, out, stem=f"figure3_pretrain_size_{slug(col)}")

    if reliability_column is not None:
        cache = PredictionCache()
        rel = reliability.analyse(
            runs,
            reliability_column,
            cache.get,
            experiments=experiments,
            thresholds=thresholds,
            fractions=referral_fractions,
            compat=compat,
        )
        tables += reliability.tables(rel)
        if make_figures:
            pc = summarise_per_class(ml[ml["experiment"].isin(list(rel.per_threshold))], reliability_column)
            written += figures.figure2(pc, rel, out)

    mc = runs[runs["task"] == "multiclass"]
    if not mc.empty:
        tables.append(
            metric_table(
                summarise(mc, "top1"),
                m,
                name="table_top1_accuracy",
                caption="Top-1 accuracy, mean over seeds (sample sd over seeds). In bold, best per column.",
            )
        )
        tables.append(downstream_table(summarise(mc, "balanced_top1"), m))
        written.append(write_atomic(out / "confusion_matrices.csv", _confusions(mc)))

    if token_frame is not None:
        tables.append(token_table(token_frame))

    for t in tables:
        written.extend(write_table(t, out))
    index = out / "index.md"
    written.append(write_atomic(index, index_markdown(title, tables, written + [index])))
    return written


def _significance(
    ml: pd.DataFrame, m: pd.DataFrame, n_boot: int, seed: int, alpha: float, max_images: int
) -> dict[str, ColumnStats]:
    # no cache: a large column's predictions are read one experiment at a time
    return {
        col: column_stats(
            ml, col, load_predictions, n_boot=n_boot, seed=seed, level=1.0 - alpha, max_bootstrap_images=max_images
        )
        for col in ordered(ml["column"])
    }


def _mark_tied(table: Table, stats: dict[str, ColumnStats], alpha: float) -> None:
    """Dagger on every entry whose difference to the column's best has p >= alpha."""
    methods = set()
    for j, col in enumerate(table.columns):
        st = stats.get(col)
        if st is None:
            continue
        methods.add(f"{col}: {st.method}")
        for row in table.rows:
            d = st.vs_best.get(_exp_key(st, row.label))
            cell = row.cells[j]
            if d is not None and not cell.bold and not math.isnan(d.p_value) and d.p_value >= alpha:
                cell.tied = True
    table.notes.append(
        f"† not significantly different from the best of its column (two-sided, alpha = {alpha}); "
        f"image-level tests on the seed-averaged mean AUC ({'; '.join(sorted(methods))})."
    )


def _exp_key(st: ColumnStats, label: str) -> object:
    for e in st.ci:
        if str(e) == label:
            return e
    return label


def _ci_table(t2: Table, stats: dict[str, ColumnStats]) -> Table:
    rows = []
    for row in t2.rows:
        cells = []
        for col, c in zip(t2.columns, row.cells):
            st = stats.get(col)
            ci = st.ci.get(_exp_key(st, row.label)) if st is not None else None
            if ci is None:
                cells.append(Cell())
            else:
                cells.append(Cell(ci[0], low=ci[1], high=ci[2], sources=c.sources))
        rows.append(Row(row.label, cells))
    level = next(iter(stats.values())).level if stats else 0.95
    methods = ", ".join(
        f"{c}: {s.method}" + (f" (B = {s.n_boot})" if s.method == "bootstrap" else "") for c, s in stats.items()
    )
    return Table(
        "table2_multisite_ci",
        f"Image-level {100 * level:.0f}% confidence intervals of the seed-averaged mean AUC "
        "(stratified paired bootstrap, percentile; normal approximation from DeLong placements for large columns).",
        "Exp.",
        list(t2.columns),
        rows,
        meta_rows=list(t2.meta_rows),
        notes=[f"Method per column: {methods}."],
    )


def _confusions(mc: pd.DataFrame) -> str:
    """Long-form confusion matrices of each experiment's best seed per multiclass column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "seed", "column", "run_id", "true", "predicted", "count"])
    cache = PredictionCache()
    for col in ordered(mc["column"]):
        seeds = best_seeds(mc, col, metric="balanced_top1")
        for exp, seed in seeds.items():
            row = mc[(mc["column"] == col) & (mc["experiment"] == exp) & (mc["seed"] == seed)].iloc[0]
            pred = cache.get(row["predictions"], row["classes"])
            cm = confusion(pred.y_true, pred.y_score)
            for i, a in enumerate(pred.classes):
                for j, b in enumerate(pred.classes):
                    w.writerow([exp, seed, col, row["run_id"], a, b, int(cm[i, j])])
    return buf.getvalue()


def index_markdown(title: str, tables: list[Table], files: list[Path]) -> str:
    """`index.md`: links to every output and, per table cell, the runs behind it."""
    lines = [f"# {title}", "", "## Tables", ""]
    for t in tables:
        lines.append(
            f"- {t.name}: [md]({t.name}.md) · [tex]({t.name}.tex) · [csv]({t.name}.csv) · "
            f"[provenance](#provenance-{t.name})"
        )
    others = [f for f in files if f.suffix not in (".md", ".tex", ".csv") or f.stem not in {t.name for t in tables}]
    others = [f for f in others if f.name != "index.md"]
    if others:
        lines += ["", "## Other outputs", ""]
        lines += [f"- [{f.name}]({f.name})" for f in others]
    lines += ["", "## Provenance", "", "Every number, with the runs (seed, MLflow run id, stage key) it was computed from.", ""]
    for t in tables:
        lines += [f"### provenance {t.name}", ""]
        cells = [(row, col, cell) for row in t.rows for col, cell in zip(t.columns, row.cells) if cell.sources]
        if not cells:
            lines += ["Computed from labels or external inputs only.", ""]
            continue
        lines += ["| row | column | value | seed | run_id | stage_key |", "|---|---|---|---|---|---|"]
        for row, col, cell in cells:
            label = row.label if row.group is None else f"{row.group}: {row.label}"
            value = cell_text(cell, t.digits).replace("|", r"\|")
            for s in cell.sources:
                lines.append(f"| {label} | {col} | {value} | {s.seed} | `{s.run_id}` | `{s.stage_key}` |")
        lines.append("")
    return "\n".join(lines)
