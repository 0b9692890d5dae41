"""Dataset tables in the shape of the Krones paper's Tables 9-13.

`dataset_stats(index, labels)` gives one column per group (by default ``All`` and then
each split present, in train/val/test order) and these rows:

* ``Patients [No.]``: distinct ``patient_id``;
* ``Scans [No.]``: rows (images);
* ``Age mean/sd/min/max [years]``: over scans with a known age (sd with ddof=1);
* ``Female [% of scans]``: scans whose sex is ``F``, out of scans with a recorded sex.
  This is what the Krones paper prints as "Female [% of patients]" for NIH (44.0 / 41.9
  for train / test) and, nearly, for PadChest;
* ``Female [% of patients]``: patients whose sex is ``F``, out of patients with a
  recorded sex (each patient's first non-null value);
* ``<label> [% of scans]``: positive scans out of scans whose label is known
  (1.0 or 0.0; NaN is unknown and excluded from numerator and denominator).

Age and sex are the standard index's ``age``/``sex`` columns (every site adapter
fills them, NaN where the dataset has none); an index without them can take a
`demographics` frame (``image_id, age, sex``) joined on ``image_id`` (e.g.
`bench.data.sites.padchest.demographics`, which needs no images on disk). `label_counts` gives the exact integers behind the percentages.
`dataset_summary` is the Table 9 shape (one row per dataset). `to_latex` (booktabs)
and `to_markdown` render any of these frames with the paper's number formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.data.labels import LABEL_SETS, label_set
from bench.data.sites import SPLITS

ALL = "All"
PATIENTS = "Patients [No.]"
SCANS = "Scans [No.]"
AGE_ROWS = ("Age mean [years]", "Age sd [years]", "Age min [years]", "Age max [years]")
FEMALE = "Female [% of patients]"
FEMALE_SCANS = "Female [% of scans]"
PCT_SUFFIX = " [% of scans]"
METADATA_COLUMNS = ("age", "sex")


def _labels(labels: Sequence[str] | str) -> list[str]:
    return list(label_set(labels)) if isinstance(labels, str) and labels in LABEL_SETS else (
        [labels] if isinstance(labels, str) else list(labels)
    )


def _with_demographics(index: pd.DataFrame, demographics: pd.DataFrame | None) -> pd.DataFrame:
    df = index.copy()
    if demographics is not None:
        missing = [c for c in ("image_id", *METADATA_COLUMNS) if c not in demographics.columns]
        if missing:
            raise ValueError(f"demographics frame lacks columns {missing}; has {list(demographics.columns)}")
        demo = demographics.drop_duplicates("image_id").set_index("image_id")
        for col in METADATA_COLUMNS:
            if col not in df.columns:
                df[col] = df["image_id"].map(demo[col])
    for col in METADATA_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    return df


def _groups(df: pd.DataFrame, by: str | None, include_all: bool) -> list[tuple[str, pd.DataFrame]]:
    groups: list[tuple[str, pd.DataFrame]] = [(ALL, df)] if include_all or by is None else []
    if by is not None:
        if by not in df.columns:
            raise ValueError(f"cannot group by {by!r}: the index has no such column")
        values = list(pd.unique(df[by].dropna()))
        rank = {s: i for i, s in enumerate(SPLITS)} if by == "split" else {}
        values.sort(key=lambda v: (rank.get(v, len(rank)), str(v)))
        groups += [(str(v).capitalize() if by == "split" else str(v), df[df[by] == v]) for v in values]
    return groups


def label_counts(index: pd.DataFrame, labels: Sequence[str] | str, *, by: str | None = None) -> pd.DataFrame:
    """Integer counts per label: columns ``positive``, ``negative``, ``unknown`` (and
    ``by`` when grouping); one row per (group, label)."""
    names = _labels(labels)
    missing = [n for n in names if n not in index.columns]
    if missing:
        raise ValueError(f"index has no label columns {missing}")
    frames = []
    for group, part in _groups(index, by, include_all=by is None):
        values = part[names]
        frame = pd.DataFrame(
            {
                "positive": (values == 1.0).sum().astype(int),
                "negative": (values == 0.0).sum().astype(int),
                "unknown": values.isna().sum().astype(int),
            }
        )
        frame.index.name = "label"
        if by is not None:
            frame.insert(0, by, group)
        frames.append(frame.reset_index())
    return pd.concat(frames, ignore_index=True)


def dataset_stats(
    index: pd.DataFrame,
    labels: Sequence[str] | str,
    *,
    by: str | None = "split",
    include_all: bool = True,
    demographics: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The Tables 10-13 shape: rows as in the module docstring, one column per group.

    `labels` is a label-set name (``harmonised5``, ``nih14``) or a list of canonical
    names. `by=None` gives a single ``All`` column. Values are floats (counts are
    whole numbers); NaN where a quantity is undefined (no ages, no known labels).
    """
    names = _labels(labels)
    missing = [n for n in names if n not in index.columns]
    if missing:
        raise ValueError(f"index has no label columns {missing}")
    df = _with_demographics(index, demographics)
    columns: dict[str, dict[str, float]] = {}
    for group, part in _groups(df, by, include_all):
        ages = pd.to_numeric(part["age"], errors="coerce").dropna()
        scan_sex = part["sex"].dropna().astype(str).str.upper()
        sex = part.dropna(subset=["sex"]).drop_duplicates("patient_id")["sex"].astype(str).str.upper()
        col: dict[str, float] = {
            PATIENTS: float(part["patient_id"].nunique()),
            SCANS: float(len(part)),
            AGE_ROWS[0]: float(ages.mean()) if len(ages) else np.nan,
            AGE_ROWS[1]: float(ages.std(ddof=1)) if len(ages) > 1 else np.nan,
            AGE_ROWS[2]: float(ages.min()) if len(ages) else np.nan,
            AGE_ROWS[3]: float(ages.max()) if len(ages) else np.nan,
            FEMALE_SCANS: float(100.0 * (scan_sex == "F").mean()) if len(scan_sex) else np.nan,
            FEMALE: float(100.0 * (sex == "F").mean()) if len(sex) else np.nan,
        }
        for name in names:
            known = part[name].dropna()
            col[name + PCT_SUFFIX] = float(100.0 * (known == 1.0).mean()) if len(known) else np.nan
        columns[group] = col
    table = pd.DataFrame(columns)
    table.index.name = "Statistic"
    return table


def site_stats(
    site: str,
    root: str | Path,
    labels: Sequence[str] | str,
    *,
    options: Mapping[str, object] | None = None,
    by: str | None = "split",
    include_all: bool = True,
    index: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`dataset_stats` of a site's standard index, loaded from `root` with `options`.

    Pass `index` when the caller already loaded it (`bench data stats` also needs it for
    the summary table): indexing NIH costs about a CPU-minute, so it is done once. Age
    and sex come from the index itself, so no label file is read a second time.
    """
    if index is None:
        from bench.data.sites import get_site

        index = get_site(site).load_index(Path(root), **dict(options or {}))
    return dataset_stats(index, labels, by=by, include_all=include_all)


def dataset_summary(indexes: Mapping[str, pd.DataFrame], *, used: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Table 9 shape: one row per dataset with images, patients, per-split image counts
    and ``Used/avail.`` (`used[name]` images used, e.g. a 100k pre-training sample)."""
    rows = []
    for name, idx in indexes.items():
        per_split = idx["split"].value_counts()
        splits = " / ".join(f"{s} {int(per_split[s]):,}" for s in SPLITS if s in per_split)
        n_used = int(used[name]) if used and name in used else len(idx)
        rows.append(
            {
                "Dataset": name,
                "Images": len(idx),
                "Patients": int(idx["patient_id"].nunique()),
                "Splits": splits,
                "Used/avail.": f"{_short(n_used)}/{_short(len(idx))}",
            }
        )
    return pd.DataFrame(rows)


def _short(n: int) -> str:
    """1,861 -> '1.9k', 112,120 -> '112k', 86 -> '86' (the paper's Used/avail. style)."""
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}m"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_table(table: pd.DataFrame, *, decimals: int = 1) -> pd.DataFrame:
    """Strings as printed in the paper: counts with thousands separators, everything
    else with `decimals` decimals; NaN as an en dash."""
    def cell(row: str, value: object) -> str:
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        if row in (PATIENTS, SCANS) or isinstance(value, (int, np.integer)):
            return f"{int(round(float(value))):,}"
        return f"{float(value):.{decimals}f}"

    return pd.DataFrame(
        {c: [cell(str(r), v) for r, v in zip(table.index, table[c])] for c in table.columns},
        index=table.index,
    )


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _bolded(row: str, bold: Iterable[str]) -> bool:
    return any(row == b or row == b + PCT_SUFFIX for b in bold)


def to_latex(
    table: pd.DataFrame,
    *,
    caption: str | None = None,
    label: str | None = None,
    bold: Iterable[str] = (),
    decimals: int = 1,
    index: bool = True,
) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``).

    Rows whose name is in `bold` (a label name matches its ``[% of scans]`` row) are
    set in bold, as the paper marks its five comparison diseases.
    """
    bold = tuple(bold)
    cells = format_table(table, decimals=decimals)
    head = ([latex_escape(str(table.index.name or ""))] if index else []) + [latex_escape(str(c)) for c in cells.columns]
    spec = ("l" if index else "") + "r" * len(cells.columns)
    lines = [r"\begin{table}[ht]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for row_name, row in cells.iterrows():
        values = ([latex_escape(str(row_name))] if index else []) + [latex_escape(v) for v in row]
        if _bolded(str(row_name), bold):
            values = [rf"\textbf{{{v}}}" for v in values]
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame, *, bold: Iterable[str] = (), decimals: int = 1, index: bool = True) -> str:
    """A GitHub pipe table; numbers right-aligned, `bold` rows in ``**bold**``."""
    bold = tuple(bold)
    cells = format_table(table, decimals=decimals)

    def esc(text: str) -> str:
        return text.replace("|", r"\|")

    head = ([esc(str(table.index.name or ""))] if index else []) + [esc(str(c)) for c in cells.columns]
    align = ([":---"] if index else []) + ["---:"] * len(cells.columns)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    for row_name, row in cells.iterrows():
        values = ([esc(str(row_name))] if index else []) + [esc(v) for v in row]
        if _bolded(str(row_name), bold):
            values = [f"**{v}**" for v in values]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, out_stem: Path, **kwargs: object) -> tuple[Path, Path, Path]:
    """Write ``<stem>.csv`` (raw numbers), ``<stem>.tex`` and ``<stem>.md``; returns the paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    csv, tex, md = (out_stem.with_suffix(s) for s in (".csv", ".tex", ".md"))
    table.to_csv(csv)
    tex.write_text(to_latex(table, **kwargs))  # type: ignore[arg-type]
    md_kwargs = {k: v for k, v in kwargs.items() if k in ("bold", "decimals", "index")}
    md.write_text(to_markdown(table, **md_kwargs))  # type: ignore[arg-type]
    return csv, tex, md
