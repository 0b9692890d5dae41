"""`build_reports`: every table and figure that applies to a manifest, plus `index.md`.

What is written depends on what the manifest holds (a table needs its inputs):

* manifest keys `meta:*` (display values) -> `table1_experiments` (what each row is);
* multilabel columns -> `table2_multisite` (class-mean AUC, mean (sd) over seeds; bold
  best per column; dagger = not significantly different from the best, see
  `reports.significance`; with manifest key `finetune_site` the columns are grouped
  "In-distribution" / "Out-of-distribution" as in the paper) and
  `table2_multisite_ci` (image-level 95% CIs);
* `per_class_columns` (default: the reliability column, else every multilabel
  column) -> `table3_per_class_<column>`;
* manifest keys `meta:*` -> `table5_options` (Table 2 with the descriptor columns
  that differ between experiments);
* manifest key `pretrain_size` -> `table6_pretrain_size_<column>` + Figure 3;
* `reliability_column` -> Tables 7, 8 (+ compat, per label), calibration, random
  baselines, Figure 2;
* multiclass columns (`task == multiclass`) -> `table_top1_accuracy` (pilot),
  `table_downstream` (poster, balanced top-1), `confusion_matrices.csv` (best seed);
* `token_frame` (from the batching benchmark) -> `table_tokens_compute`.

Degenerate cells (`reports.degenerate`: at chance within noise, or sd exactly 0 over
different seeds) carry a double dagger and a footnote in every table that shows them,
a `degenerate` reason in the CSVs, a list at the top of `index.md` and
`degenerate_cells.csv`. Figure legends use the manifest key `label` (`bench` writes
"3.4: ViT-S, GMML, IN-1k, MIMIC-CXR").

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

from bench.data.errors import DataError
from reports import figures, reliability
from reports.aggregate import best_seeds, run_metrics, summarise, summarise_per_class
from reports.degenerate import DegenerateCell, find_degenerate
from reports.degenerate import note as degenerate_note
from reports.manifest import check_manifest, is_missing, ordered
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
    init_reference: str | None = None,
    metric_tables: Sequence[str] = (),
) -> list[Path]:
    """Compute and write all applicable tables and figures; returns the written paths.

    `experiments` restricts Tables 7-8 and Figure 2 to those experiments (the paper
    shows a selection); `compat` adds the Krones-compatible Oracle AUC and
    calibration error; `alpha` is the level of the "not significantly different
    from the best" marks. `init_reference` (an initialisation row label, e.g. `DINOv2`) adds the
    initialisation-study tables of `reports.init_study` with p-values against that row.
    `metric_tables` names registered metrics (`bench list metrics`) to tabulate per experiment
    and report column (`reports.metric_tables`).
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

    if any(c.startswith("meta:") for c in m.columns):
        tables.append(experiments_table(m))
    ml = runs[runs["task"] == "multilabel"]
    if not ml.empty:
        summary = summarise(ml, "mean_auc")
        col_order, groups = site_groups(m, ordered(ml["column"]))
        seeds_txt = _seeds_text(ml)
        t2 = metric_table(
            summary,
            m,
            name="table2_multisite",
            columns=col_order,
            caption=(
                "Performance across data collection sites. "
                + _fine_tuning_text(m, ml)
                + f"Mean AUC over the classes of each column and over {seeds_txt}, in brackets the sample standard "
                "deviation (ddof=1) over seeds. In bold, best per column."
            ),
        )
        t2.column_groups = groups
        stats = _significance(ml, m, n_boot, boot_seed, alpha, max_bootstrap_images)
        _mark_tied(t2, stats, alpha)
        tables += [t2, _ci_table(t2, stats)]
        descriptors = _varying_descriptors(m, ml)
        if descriptors:
            t5 = metric_table(
                summary,
                m,
                name="table5_options",
                columns=col_order,
                caption=(
                    "Training options: what differs between the experiments, and the mean AUC over the classes of "
                    f"each column and over {seeds_txt} (in brackets the sample sd over seeds). In bold, best per column."
                ),
                descriptors=descriptors,
            )
            t5.column_groups = [("", len(descriptors)), *groups] if groups else []
            tables.append(t5)
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
                    written += figures.figure3(t6, out, stem=f"figure3_pretrain_size_{slug(col)}", column=col)

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
            written += figures.figure2(pc, rel, out, labels=experiment_labels(m))

    mc = runs[runs["task"] == "multiclass"]
    if not mc.empty:
        tables.append(
            metric_table(
                summarise(mc, "top1"),
                m,
                name="table_top1_accuracy",
                caption=(
                    "Multi-class tasks: top-1 accuracy per report column, mean over "
                    f"{_seeds_text(mc)} (in brackets the sample sd over seeds). In bold, best per column."
                ),
            )
        )
        tables.append(downstream_table(summarise(mc, "balanced_top1"), m))
        written.append(write_atomic(out / "confusion_matrices.csv", _confusions(mc)))

    if metric_tables:
        from reports.metric_tables import metric_tables as registry_tables

        tables += registry_tables(runs, m, metric_tables, PredictionCache().get)

    if token_frame is not None:
        tables.append(token_table(token_frame))

    if init_reference is not None:
        from reports.init_study import init_study_tables

        study_tables, pvalues = init_study_tables(ml, m, reference=init_reference, n_boot=n_boot, seed=boot_seed)
        tables += study_tables
        written.append(write_atomic(out / "init_study_pvalues.csv", pvalues))

    flagged = find_degenerate(runs)
    mark_degenerate(tables, flagged)
    if flagged:
        written.append(write_atomic(out / "degenerate_cells.csv", _degenerate_csv(flagged)))
    for t in tables:
        written.extend(write_table(t, out))
    index = out / "index.md"
    written.append(write_atomic(index, index_markdown(title, tables, written + [index], flagged)))
    return written


def experiments_table(m: pd.DataFrame) -> Table:
    """Krones Table 1: what each experiment is (the `meta:*` display values `bench` writes)."""
    keys = [c for c in m.columns if c.startswith("meta:")]
    rows = []
    for exp in ordered(m["experiment"]):
        e = m[m["experiment"] == exp]
        cells = []
        for k in keys:
            vals = [v for v in e[k].tolist() if not is_missing(v)]
            cells.append(Cell(text=str(vals[0]) if vals else "-"))
        rows.append(Row(str(exp), cells))
    return Table(
        "table1_experiments",
        "Experiments: backbone, initialisation, pre-training strategy and data, and fine-tuning data of each "
        "experiment (row labels of the other tables).",
        "Exp.",
        [k.split(":", 1)[1] for k in keys],
        rows,
    )


def site_groups(m: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Columns reordered in-distribution first, and Krones Table 2's header groups.

    A column is in-distribution when every experiment evaluated on it was fine-tuned
    on the site it evaluates (manifest keys `site` and `finetune_site`). Without
    `finetune_site`, or when all columns fall in one group, no groups are printed.
    """
    if "finetune_site" not in m.columns:
        return columns, []
    ind = []
    for col in columns:
        g = m[m["column"] == col]
        ind.append(bool((g["site"].astype(str) == g["finetune_site"].astype(str)).all()))
    if all(ind) or not any(ind):
        return columns, []
    first = [c for c, i in zip(columns, ind) if i]
    rest = [c for c, i in zip(columns, ind) if not i]
    return first + rest, [("In-distribution", len(first)), ("Out-of-distribution", len(rest))]


def _seeds_text(runs: pd.DataFrame) -> str:
    n = runs.groupby(["experiment", "column"])["seed"].nunique()
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds"


def _fine_tuning_text(m: pd.DataFrame, ml: pd.DataFrame) -> str:
    if "meta:Fine-tuning" not in m.columns:
        return ""
    sites = ordered(m.loc[m["experiment"].isin(set(ml["experiment"])), "meta:Fine-tuning"].dropna())
    if not sites:
        return ""
    return (
        f"Models fine-tuned on {', '.join(map(str, sites))}; in-distribution columns evaluate on the fine-tuning "
        "site, out-of-distribution columns on other sites. "
    )


def _varying_descriptors(m: pd.DataFrame, ml: pd.DataFrame) -> list[str]:
    """`meta:*` keys whose value differs between the experiments of `ml` (Table 5 shows what differs)."""
    e = m[m["experiment"].isin(set(ml["experiment"]))]
    out = []
    for c in m.columns:
        if c.startswith("meta:"):
            per_exp = e.groupby("experiment", sort=False)[c].first().astype(str)
            if per_exp.nunique() > 1:
                out.append(c)
    return out


def mark_degenerate(tables: list[Table], cells: list[DegenerateCell]) -> None:
    """Flag every table cell computed from exactly the runs of a degenerate cell; add the footnote."""
    if not cells:
        return
    by_keys: dict[frozenset[str], list[DegenerateCell]] = {}
    for c in cells:
        by_keys.setdefault(frozenset(c.stage_keys), []).append(c)
    for t in tables:
        hit: list[DegenerateCell] = []
        for row in t.rows:
            for cell in row.cells:
                found = by_keys.get(frozenset(s.stage_key for s in cell.sources)) if cell.sources else None
                if found:
                    cell.flag = "; ".join(c.reason for c in found)
                    hit += found
        if hit:
            t.notes.append(degenerate_note(hit))


def _degenerate_csv(cells: list[DegenerateCell]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "column", "kind", "metric", "value", "chance", "reason", "stage_keys", "finetune_keys"])
    for c in cells:
        w.writerow([c.experiment, c.column, c.kind, c.metric, repr(c.value), repr(c.chance), c.reason,
                    " ".join(c.stage_keys), " ".join(c.finetune_keys)])
    return buf.getvalue()


def experiment_labels(m: pd.DataFrame) -> dict[object, str]:
    """Legend label per experiment: the manifest's `label` (number, backbone, strategy, init, data), else the id."""
    out: dict[object, str] = {}
    for exp in ordered(m["experiment"]):
        vals = [v for v in m.loc[m["experiment"] == exp, "label"]] if "label" in m.columns else []
        vals = [v for v in vals if not is_missing(v)]
        out[exp] = str(vals[0]) if vals else str(exp)
    return out


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
        f"Performance across data collection sites with image-level uncertainty: seed-averaged mean AUC and its "
        f"{100 * level:.0f}% confidence interval over images (stratified paired bootstrap, percentile; normal "
        "approximation from DeLong placements for large columns).",
        "Exp.",
        list(t2.columns),
        rows,
        meta_rows=list(t2.meta_rows),
        notes=[f"Method per column: {methods}."],
        column_groups=list(t2.column_groups),
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


def index_markdown(
    title: str, tables: list[Table], files: list[Path], degenerate: Sequence[DegenerateCell] = ()
) -> str:
    """`index.md`: links to every output, the degenerate cells and, per table cell, the runs behind it."""
    lines = [f"# {title}", ""]
    if degenerate:
        lines += ["## Degenerate cells (‡)", "", "Check these stages before reading the numbers:", ""]
        lines += ["| experiment | column | why | evaluate stages |", "|---|---|---|---|"]
        for c in degenerate:
            keys = ", ".join(f"`{k}`" for k in c.stage_keys)
            lines.append(f"| {c.experiment} | {c.column} | {c.reason} | {keys} |")
        lines.append("")
    lines += ["## Tables", ""]
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
