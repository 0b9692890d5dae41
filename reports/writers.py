"""Render a `reports.tables.Table` as LaTeX (booktabs), Markdown or CSV; write files atomically.

LaTeX output is a complete `table` float (caption + label) that compiles as-is in
a standard `article` with `\\usepackage{booktabs}`. Best cells are `\\textbf{...}`;
cells not significantly different from the best carry a dagger. CSV keeps numbers
as numbers (separate `mean` / `sd` columns, long form: one line per cell).
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from pathlib import Path

from reports.tables import Cell, Table, cell_text

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # non-ASCII symbols this package prints; pdflatex's utf8 input has no glyph for them
    "†": r"\textdagger{}",
    "±": r"$\pm$",
    "×": r"$\times$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and a few symbols) so any label prints literally."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def _latex_cell(cell: Cell, digits: int) -> str:
    body = latex_escape(cell_text(cell, digits))
    if cell.bold:
        body = rf"\textbf{{{body}}}"
    if cell.tied:
        body += r"$^{\dagger}$"
    return body


def _alignment(table: Table) -> str:
    spec = "l"
    for j in range(len(table.columns)):
        cells = table.column_cells(j)
        spec += "l" if cells and all(c.text is not None for c in cells) else "r"
    return spec


def to_latex(table: Table) -> str:
    """The table as a LaTeX `table` environment using booktabs rules."""
    ncol = len(table.columns) + 1
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{_alignment(table)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in [table.row_header, *table.columns]) + r" \\",
        r"\midrule",
    ]
    if table.meta_rows:
        for label, values in table.meta_rows:
            lines.append(" & ".join(latex_escape(v) for v in [label, *values]) + r" \\")
        lines.append(r"\midrule")
    group = None
    for row in table.rows:
        if row.group is not None and row.group != group:
            group = row.group
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{latex_escape(group)}}}}} \\")
        cells = [_latex_cell(c, table.digits) for c in row.cells]
        lines.append(" & ".join([latex_escape(row.label), *cells]) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    for note in table.notes:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _md_cell(cell: Cell, digits: int) -> str:
    body = _md_escape(cell_text(cell, digits))
    if cell.bold:
        body = f"**{body}**"
    if cell.tied:
        body += "†"
    return body


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: caption paragraph, pipe table, notes."""
    head = [table.row_header, *table.columns]
    lines = [f"**{_md_escape(table.name)}**: {table.caption}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|")
    for label, values in table.meta_rows:
        lines.append("| " + " | ".join(_md_escape(v) for v in [label, *values]) + " |")
    for row in table.rows:
        label = row.label if row.group is None else f"{row.group}: {row.label}"
        lines.append("| " + " | ".join([_md_escape(label), *(_md_cell(c, table.digits) for c in row.cells)]) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long form, one line per cell: group,row,column,mean,sd,text,best,tied + meta."""
    meta_names = [label.rstrip(":").strip() for label, _ in table.meta_rows]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", "row", "column", "mean", "sd", "text", "best", "tied", *meta_names])
    for row in table.rows:
        for j, (col, cell) in enumerate(zip(table.columns, row.cells)):
            meta = [values[j] for _, values in table.meta_rows]
            w.writerow(
                [
                    row.group or "",
                    row.label,
                    col,
                    "" if cell.text is not None else repr(float(cell.mean)) if cell.numeric else "",
                    repr(float(cell.sd)) if cell.numeric and cell.sd == cell.sd else "",
                    cell.text or "",
                    int(cell.bold),
                    int(cell.tied),
                    *meta,
                ]
            )
    return buf.getvalue()


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write via a temporary file in the same folder, then rename over `path`.

    A crash or a concurrent reader never sees a half-written report, and re-running
    simply replaces the previous outputs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """Write `<name>.tex`, `<name>.md` and `<name>.csv`; returns the three paths."""
    out = Path(out_dir)
    return [
        write_atomic(out / f"{table.name}.tex", to_latex(table)),
        write_atomic(out / f"{table.name}.md", to_markdown(table)),
        write_atomic(out / f"{table.name}.csv", to_csv(table)),
    ]
