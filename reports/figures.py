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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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


def figure2(per_class: pd.DataFrame, rel: Reliability, out_dir: Path, *, stem: str = "figure2_reliability") -> list[Path]:
    """Four panels; `per_class` from `summarise_per_class(runs, rel.column)`."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    exps = list(rel.per_threshold)
    colours = {e: plt.cm.tab10(i % 10) for i, e in enumerate(exps)}
    ax = axes[0, 0]
    classes = list(rel.classes)
    x = np.arange(len(classes))
    width = 0.8 / max(len(exps), 1)
    for i, e in enumerate(exps):
        d = per_class[per_class["experiment"] == e].set_index("class").reindex(classes)
        ax.errorbar(
            x + (i - (len(exps) - 1) / 2) * width, d["mean"], yerr=d["sd"].fillna(0.0),
            fmt="o", color=colours[e], label=str(e), capsize=2,
        )
    ax.set_xticks(x, classes, rotation=20, ha="right")
    ax.set_ylabel("AUC")
    ax.set_title("(a) AUC per class")
    for ax, key, title, ylabel in (
        (axes[0, 1], "subset_accuracy", "(b) Subset accuracy", "Subset accuracy"),
        (axes[1, 0], "fnr", "(c) FNR (mean over classes)", "FNR"),
    ):
        for e in exps:
            f = rel.per_threshold[e]
            ax.plot(f["threshold"], f[key], marker="o", color=colours[e], label=str(e))
        ax.set_xlabel("Decision threshold")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    ax = axes[1, 1]
    for e in exps:
        ax.plot(rel.fractions, rel.oracle[e], marker="o", color=colours[e], label=str(e))
        if e in rel.oracle_compat:
            ax.plot(rel.fractions, rel.oracle_compat[e], ls="--", color=colours[e], alpha=0.6)
    ax.set_xlabel("Referral fraction" + (" (dashed: Krones-compatible, cumulative)" if rel.oracle_compat else ""))
    ax.set_ylabel("Oracle AUC")
    ax.set_title("(d) Oracle AUC")
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(exps), 7), frameon=False)
    fig.suptitle(f"Reliability on {rel.column}")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save_figure(fig, out_dir, stem)


def figure3(table: Table, out_dir: Path, *, stem: str = "figure3_pretrain_size") -> list[Path]:
    """AUC vs pre-training size from a `reports.tables.size_table` (its columns are sizes)."""
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
    ax.set_ylabel("Mean AUC")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)
