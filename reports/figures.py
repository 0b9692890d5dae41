"""Paper figures (matplotlib, Agg backend), each written as PDF and PNG.

* Figure 2 (Krones): (a) AUC per class (mean over seeds, error bars = seed sd),
  (b) subset accuracy vs decision threshold, (c) label-mean FNR vs threshold,
  (d) Oracle AUC vs referral fraction (solid: standard; dashed: Krones-compatible
  cumulative referral, when computed). Panels (b)-(d) use each experiment's best seed.
* Figure 3 (Krones): mean AUC vs pre-training size, one line per series, error bars
  = seed sd.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports.reliability import Reliability  # noqa: E402
from reports.tables import Table  # noqa: E402
from reports.writers import write_atomic  # noqa: E402


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `<stem>.pdf` and `<stem>.png` atomically (no timestamps: re-runs give equal files)."""
    paths = []
    for ext, meta in (("pdf", {"CreationDate": None, "ModDate": None}), ("png", {"Software": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(write_atomic(Path(out_dir) / f"{stem}.{ext}", buf.getvalue()))
    plt.close(fig)
    return paths


def figure2(
    per_class: pd.DataFrame,
    rel: Reliability,
    out_dir: Path,
    *,
    stem: str = "figure2_reliability",
    labels: Mapping[object, str] | None = None,
) -> list[Path]:
    """Four panels; `per_class` from `summarise_per_class(runs, rel.column)`.

    `labels` maps experiment -> legend text (Krones: number, backbone, strategy,
    init, pre-training data; `bench` writes it as manifest key `label`). One legend
    under the panels names every experiment's colour; panel (d) has its own key for
    the line styles when the Krones-compatible referral is drawn (dashed).
    """
    labels = dict(labels or {})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    exps = list(rel.per_threshold)
    cmap = plt.cm.tab10 if len(exps) <= 10 else plt.cm.tab20
    colours = {e: cmap(i % cmap.N) for i, e in enumerate(exps)}
    markers = "osD^vP*Xh<>p"
    style = {e: markers[i % len(markers)] for i, e in enumerate(exps)}
    name = {e: labels.get(e, str(e)) for e in exps}
    ax = axes[0, 0]
    classes = list(rel.classes)
    x = np.arange(len(classes))
    width = 0.8 / max(len(exps), 1)
    for i, e in enumerate(exps):
        d = per_class[per_class["experiment"] == e].set_index("class").reindex(classes)
        ax.errorbar(
            x + (i - (len(exps) - 1) / 2) * width, d["mean"], yerr=d["sd"].fillna(0.0),
            fmt=style[e], color=colours[e], label=name[e], capsize=2, ms=4,
        )
    ax.set_xticks(x, [c.replace("_", " ") for c in classes], rotation=20, ha="right")
    ax.set_xlabel("Class")
    ax.set_ylabel("AUC (mean over seeds, bars: sd)")
    ax.set_title("(a) AUC per class")
    for ax, key, title, ylabel in (
        (axes[0, 1], "subset_accuracy", "(b) Subset accuracy", "Subset accuracy"),
        (axes[1, 0], "fnr", "(c) FNR (mean over classes)", "FNR"),
    ):
        for e in exps:
            f = rel.per_threshold[e]
            ax.plot(f["threshold"], f[key], marker=style[e], ms=4, color=colours[e], label=name[e])
        ax.set_xlabel("Decision threshold")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    ax = axes[1, 1]
    for e in exps:
        ax.plot(rel.fractions, rel.oracle[e], marker=style[e], ms=4, color=colours[e], label=name[e])
        if e in rel.oracle_compat:
            ax.plot(rel.fractions, rel.oracle_compat[e], ls="--", color=colours[e], alpha=0.6)
    ax.set_xlabel("Referral fraction")
    ax.set_ylabel("Oracle AUC (mean over classes)")
    ax.set_title("(d) Oracle AUC")
    if rel.oracle_compat:
        keys = [
            Line2D([], [], color="0.3", ls="-", label="standard referral"),
            Line2D([], [], color="0.3", ls="--", alpha=0.6, label="Krones-compatible (cumulative)"),
        ]
        ax.legend(handles=keys, loc="lower right", fontsize="small", title="line style", title_fontsize="small")
    handles, texts = axes[0, 1].get_legend_handles_labels()
    ncol = 2 if len(exps) > 4 else len(exps)
    rows = -(-len(exps) // max(ncol, 1))
    bottom = min(0.05 + 0.022 * rows, 0.3)
    fig.legend(handles, texts, loc="lower center", ncol=ncol, frameon=False, fontsize="small",
               title="Experiment: backbone, pre-training strategy, initialisation, pre-training data", title_fontsize="small")
    fig.suptitle(f"Reliability on {rel.column} (best seed per experiment by AUC; (a): all seeds)")
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    return save_figure(fig, out_dir, stem)


def figure3(table: Table, out_dir: Path, *, stem: str = "figure3_pretrain_size", column: str = "") -> list[Path]:
    """AUC on report column `column` vs pre-training size from a `reports.tables.size_table` (its columns are sizes).

    Legend entries are the table's rows (manifest key `series`, display names from `bench`).
    """
    sizes = np.array([int(c.replace(",", "")) for c in table.columns])
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table.rows:
        m = np.array([c.mean for c in row.cells])
        sd = np.array([0.0 if np.isnan(c.sd) else c.sd for c in row.cells])
        ok = ~np.isnan(m)
        ax.errorbar(sizes[ok], m[ok], yerr=sd[ok], marker="o", capsize=3, label=row.label)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("Pre-training images")
    ax.set_ylabel("Mean AUC over classes (bars: sd over seeds)")
    ax.set_title(f"Pre-training size ({column})" if column else "Pre-training size", fontsize="medium")
    ax.legend(fontsize="small", title="Learning strategy", title_fontsize="small")
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)
