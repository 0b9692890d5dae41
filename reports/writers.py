"""Render a `reports.tables.Table` as LaTeX (booktabs), Markdown or CSV; write files atomically.

LaTeX output is one or more complete floats (caption + label) that compile as-is
in a standard `article` (default margins: 345 x 550 pt text) whose preamble loads
the packages in `LATEX_PACKAGES` (`booktabs`; `rotating` only for landscape
tables). Best cells are `\\textbf{...}`; a dagger marks cells not significantly
different from the best, a double dagger degenerate cells (`Cell.flag`).

Fitting the page: the writer estimates the typeset width from Computer Modern's
glyph widths (`reports._cm_widths`) and takes the first layout that fits the text
width, in this order: `\\small`; tighter column padding; `\\footnotesize`; long
headers and texts wrapped over lines; "mean (sd)" stacked as mean over (sd). A
table that fits none of these in portrait is set in landscape (`sidewaystable`
from the `rotating` package: the page's height becomes the table's width) with
the same sequence. A table taller than a page is split into floats of whole row
groups, the later ones captioned "(continued)" under the same table number.
`tests/reports/test_latex_fit.py` compiles every table of a demo-shaped report with
pdflatex and checks that no box is wider than the text by more than 1 pt.

CSV keeps numbers as numbers (separate `mean` / `sd` columns, long form: one line
per cell) with `best`, `tied` and `degenerate` (the reason, empty when not) columns.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from reports._cm_widths import CM_WIDTHS
from reports.tables import Cell, Row, Table, cell_text, fmt_number

# Packages the generated tables need in the paper's preamble (both in TeX Live's
# latex-base / latex-recommended): booktabs for the rules, rotating for landscape tables.
LATEX_PACKAGES: tuple[str, ...] = ("booktabs", "rotating")

TEXTWIDTH_PT = 345.0  # article class, 10 pt, default margins (letter and A4 alike)
TEXTHEIGHT_PT = 550.0

TIED_MARK = "†"
FLAG_MARK = "‡"

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
    # OT1 text fonts print other glyphs in these slots (`>` would come out as an inverted question mark)
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # non-ASCII symbols this package prints; pdflatex's utf8 input has no glyph for them
    "†": r"\textdagger{}",
    "‡": r"\textdaggerdbl{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "²": r"$^2$",
    "≤": r"$\le$",
    "≥": r"$\ge$",
    "≈": r"$\approx$",
    "·": r"$\cdot$",
    "→": r"$\to$",
    "−": r"$-$",
    "–": "--",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and a few symbols) so any label prints literally."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


# ---------------------------------------------------------------- width estimate

# size name -> (font size pt, roman font, bold font, baselineskip pt) in a 10 pt article
_SIZES: dict[str, tuple[float, str, str, float]] = {
    "small": (9.0, "cmr9", "cmbx9", 11.0),
    "footnotesize": (8.0, "cmr8", "cmbx8", 9.5),
    "scriptsize": (7.0, "cmr7", "cmbx7", 8.0),
}
_UNSURE = set('<>|_{}\\"')  # OT1 slots that print other glyphs; escaped forms are about 0.5-0.6 em


def text_width(text: str, size: str = "small", bold: bool = False) -> float:
    """Estimated typeset width in pt of plain `text` in Computer Modern at a LaTeX size."""
    pt, rm, bx, _ = _SIZES[size]
    widths = CM_WIDTHS[bx if bold else rm]
    em = 0.0
    for ch in text:
        o = ord(ch)
        w = widths[o - 32] if 32 <= o <= 126 and ch not in _UNSURE else 0.0
        em += w if w > 0 else 0.6
    return em * pt


def _mark_width(marks: str, size: str) -> float:
    return 0.45 * _SIZES[size][0] * len(marks)  # superscript daggers


@dataclass(frozen=True)
class Layout:
    """How one table is set: font size, column padding, wrapping, stacking, orientation."""

    size: str = "small"
    tabcolsep: float = 6.0
    wrap: bool = False  # headers, meta values and text cells over several lines
    stack: bool = False  # "mean (sd)" as mean over (sd)
    sideways: bool = False  # landscape (sidewaystable)
    head_scale: float = 1.0  # wrapped headers/texts may be this many times as wide as the column's numbers


_PORTRAIT = (
    Layout("small", 6.0),
    Layout("small", 4.0),
    Layout("footnotesize", 3.0),
    Layout("footnotesize", 3.0, wrap=True),
    Layout("footnotesize", 3.0, wrap=True, stack=True),
    Layout("scriptsize", 2.0, wrap=True, stack=True),
)
CANDIDATE_LAYOUTS: tuple[Layout, ...] = _PORTRAIT + tuple(
    Layout(c.size, c.tabcolsep, c.wrap, c.stack, sideways=True) for c in _PORTRAIT
)
_FIT = 0.99  # the estimate is within 0.5 pt of pdflatex's on the demo tables; keep 1% free


def _wrap(text: str, size: str, bold: bool, target: float, max_lines: int = 3) -> list[str]:
    """Greedy word wrap to `target` pt (a word longer than that stays whole), at most `max_lines`."""
    words = text.split()
    if len(words) < 2 or text_width(text, size, bold) <= target:
        return [text]
    lines: list[str] = []
    cur = ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if cur and text_width(trial, size, bold) > target:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    lines.append(cur)
    while len(lines) > max_lines:  # too many lines: merge the two shortest neighbours
        i = min(range(len(lines) - 1), key=lambda k: text_width(lines[k] + lines[k + 1], size, bold))
        lines[i : i + 2] = [f"{lines[i]} {lines[i + 1]}"]
    return lines


@dataclass
class _Box:
    """One typeset cell: its lines, style and markers."""

    lines: list[str]
    bold: bool = False
    marks: str = ""
    align: str = "r"

    def width(self, size: str) -> float:
        w = max((text_width(line, size, self.bold) for line in self.lines), default=0.0)
        return w + _mark_width(self.marks, size)


def _marks(cell: Cell) -> str:
    return (TIED_MARK if cell.tied else "") + (FLAG_MARK if cell.flag else "")


def _number_lines(cell: Cell, digits: int, stack: bool) -> list[str]:
    text = cell_text(cell, digits)
    if not stack or cell.text is not None or not cell.numeric:
        return [text]
    if not math.isnan(cell.low):
        return [fmt_number(cell.mean, digits), f"[{fmt_number(cell.low, digits)}, {fmt_number(cell.high, digits)}]"]
    if math.isnan(cell.sd):
        return [text]
    return [fmt_number(cell.mean, digits), f"({fmt_number(cell.sd, digits)})"]


@dataclass
class _Grid:
    """The table as boxes, for one layout: width and row heights are estimated from it."""

    layout: Layout
    lead: list[str]  # headers of the label column(s)
    heads: list[_Box]
    aligns: list[str]
    meta: list[list[_Box]]
    body: list[list[_Box]]  # per row: label box(es) then data boxes
    group_starts: list[int]  # body indices where a new row group begins
    group_lines: dict[int, str]  # body index -> group line printed above it (no group column)

    def col_widths(self, size: str) -> list[float]:
        n = len(self.lead) + len(self.heads)
        widths = [0.0] * n
        for j, h in enumerate(self.lead):
            widths[j] = text_width(h, size)
        for j, b in enumerate(self.heads):
            widths[len(self.lead) + j] = b.width(size)
        for row in self.meta + self.body:
            for j, b in enumerate(row):
                widths[j] = max(widths[j], b.width(size))
        return widths


def _text_column(table: Table, j: int) -> bool:
    cells = table.column_cells(j)
    return bool(cells) and all(c.text is not None for c in cells)


def _grid(table: Table, lay: Layout) -> _Grid:
    size = lay.size
    n_lead = 2 if table.group_header is not None else 1
    aligns = ["l" if _text_column(table, j) else "r" for j in range(len(table.columns))]
    body: list[list[_Box]] = []
    group_starts: list[int] = []
    group_lines: dict[int, str] = {}
    group: str | None = None
    label_target = 75.0 * lay.head_scale
    for i, row in enumerate(table.rows):
        boxes: list[_Box] = []
        new_group = row.group is not None and row.group != group
        if new_group:
            group = row.group
            group_starts.append(i)
        if table.group_header is not None:
            boxes.append(_Box([row.group or ""] if new_group else [""], align="l"))
        elif new_group:
            group_lines[i] = str(row.group)
        label = _wrap(row.label, size, False, label_target) if lay.wrap else [row.label]
        boxes.append(_Box(label, align="l"))
        for j, c in enumerate(row.cells):
            if c.text is not None and lay.wrap:
                lines = _wrap(c.text, size, c.bold, 70.0 * lay.head_scale)
            else:
                lines = _number_lines(c, table.digits, lay.stack)
            boxes.append(_Box(lines, c.bold, _marks(c), aligns[j]))
        body.append(boxes)
    # header and meta targets: the width of the column's numbers (wrapping never widens a column)
    num_w = []
    for j in range(len(table.columns)):
        w = max((b[n_lead + j].width(size) for b in body if not _text_column(table, j)), default=70.0)
        num_w.append(max(w, 30.0) * lay.head_scale)
    heads = [
        _Box(_wrap(h, size, False, num_w[j], 3) if lay.wrap else [h], align=aligns[j]) for j, h in enumerate(table.columns)
    ]
    meta = []
    for label, values in table.meta_rows:
        row_boxes = [_Box([label if k == n_lead - 1 else ""], align="l") for k in range(n_lead)]
        for j, v in enumerate(values):
            row_boxes.append(_Box(_wrap(v, size, False, num_w[j], 3) if lay.wrap else [v], align=aligns[j]))
        meta.append(row_boxes)
    lead = ([table.group_header] if table.group_header is not None else []) + [table.row_header]
    return _Grid(lay, lead, heads, aligns, meta, body, group_starts, group_lines)


def estimate_width(table: Table, lay: Layout) -> float:
    """Estimated natural width (pt) of the tabular in layout `lay`."""
    g = _grid(table, lay)
    widths = g.col_widths(lay.size)
    n_lead = len(g.lead)
    # a header group wider than its columns widens the last of them
    k = n_lead
    for label, span in table.column_groups:
        if label:
            inner = sum(widths[k : k + span]) + 2 * lay.tabcolsep * (span - 1)
            need = text_width(label, lay.size)
            if need > inner:
                widths[k + span - 1] += need - inner
        k += span
    for r in range(len(g.body)):
        if r in g.group_lines:  # a group line spans all columns
            need = text_width(g.group_lines[r], lay.size) - sum(widths) - 2 * lay.tabcolsep * (len(widths) - 1)
            if need > 0:
                widths[-1] += need
    return sum(widths) + 2 * lay.tabcolsep * len(widths)


def choose_layout(table: Table) -> Layout:
    """The first candidate layout whose estimated width fits the text width (the page height when sideways).

    A wrapping layout then takes the widest header wrap that still fits (fewer lines
    per header), so headers break only as much as the page needs.
    """
    for lay in CANDIDATE_LAYOUTS:
        budget = _FIT * ((TEXTHEIGHT_PT - 20.0) if lay.sideways else TEXTWIDTH_PT)
        if estimate_width(table, lay) <= budget:
            if lay.wrap:
                for scale in (4.0, 2.5, 1.6):
                    wider = replace(lay, head_scale=scale)
                    if estimate_width(table, wider) <= budget:
                        lay = wider
                        break
            return _shorter(table, lay)
    return CANDIDATE_LAYOUTS[-1]


def _shorter(table: Table, lay: Layout) -> Layout:
    """A smaller font when that keeps a table on one page that would otherwise be split."""
    if lay.size != "small" or len(_chunks(table, _grid(table, lay), lay)) == 1:
        return lay
    small = replace(lay, size="footnotesize", tabcolsep=min(lay.tabcolsep, 4.0))
    return small if len(_chunks(table, _grid(table, small), small)) == 1 else lay


# ---------------------------------------------------------------- LaTeX


def _latex_box(box: _Box, valign: str = "t") -> str:
    def one(line: str) -> str:
        body = latex_escape(line)
        return rf"\textbf{{{body}}}" if box.bold and body else body

    marks = ""
    if box.marks:
        sym = "".join({TIED_MARK: r"\dagger", FLAG_MARK: r"\ddagger"}[m] for m in box.marks)
        marks = f"$^{{{sym}}}$"
    if len(box.lines) == 1:
        return one(box.lines[0]) + marks
    inner = r"\\{}".join(one(line) + (marks if i == 0 else "") for i, line in enumerate(box.lines))
    return rf"\begin{{tabular}}[{valign}]{{@{{}}{box.align}@{{}}}}{inner}\end{{tabular}}"


def _row_height(boxes: list[_Box], lay: Layout) -> float:
    return max((len(b.lines) for b in boxes), default=1) * _SIZES[lay.size][3]


def _caption_height(text: str, lay: Layout, width: float) -> float:
    lines = math.ceil(text_width(text, lay.size) / (0.95 * width)) if text else 0
    return lines * _SIZES[lay.size][3] + 12.0


def _chunks(table: Table, g: _Grid, lay: Layout) -> list[list[int]]:
    """Body row indices per float: whole row groups where possible, each float at most a page high."""
    page_h = TEXTWIDTH_PT if lay.sideways else TEXTHEIGHT_PT
    page_w = TEXTHEIGHT_PT if lay.sideways else TEXTWIDTH_PT
    skip = _SIZES[lay.size][3]
    head_h = max((len(b.lines) for b in g.heads), default=1) * skip + (skip if table.column_groups else 0)
    head_h += sum(_row_height(r, lay) for r in g.meta) + 16.0  # rules
    notes_h = sum(_caption_height(n, Layout("footnotesize"), page_w) for n in table.notes)
    cap_first = _caption_height(table.caption, lay, page_w)
    cap_next = 2 * skip + 12.0
    heights = [
        _row_height(r, lay) + (skip if i in g.group_lines else 0.0) + (3.0 if i in g.group_starts[1:] else 0.0)
        for i, r in enumerate(g.body)
    ]
    total = cap_first + head_h + sum(heights) + notes_h
    if total <= 0.92 * page_h:
        return [list(range(len(g.body)))]
    # units: row groups (or single rows when ungrouped)
    starts = g.group_starts if g.group_starts else list(range(len(g.body)))
    bounds = [*starts, len(g.body)]
    if bounds[0] != 0:
        bounds.insert(0, 0)
    units = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    budget = 0.92 * page_h - head_h - max(cap_first, cap_next) - notes_h
    chunks: list[list[int]] = [[]]
    used = 0.0
    for unit in units:
        h = sum(heights[i] for i in unit)
        if h > budget:  # a group taller than a page: split it by rows
            for i in unit:
                if chunks[-1] and used + heights[i] > budget:
                    chunks.append([])
                    used = 0.0
                chunks[-1].append(i)
                used += heights[i]
            continue
        if chunks[-1] and used + h > budget:
            chunks.append([])
            used = 0.0
        chunks[-1].extend(unit)
        used += h
    return chunks


def _short_caption(caption: str) -> str:
    first = caption.split(". ")[0].rstrip(".")
    return first if len(first) < 120 else first[:117] + "..."


def to_latex(table: Table, layout: Layout | None = None) -> str:
    """The table as LaTeX float(s) with booktabs rules, in `layout` (default: `choose_layout`)."""
    lay = layout or choose_layout(table)
    g = _grid(table, lay)
    n_lead = len(g.lead)
    ncol = n_lead + len(table.columns)
    env = "sidewaystable" if lay.sideways else "table"
    spec = "l" * n_lead + "".join(g.aligns)
    head: list[str] = []
    if table.column_groups and any(label for label, _ in table.column_groups):
        cells, rules, k = [""] * n_lead, [], n_lead + 1
        for label, span in table.column_groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}" if label else " & ".join([""] * span))
            if label:
                rules.append(rf"\cmidrule(lr){{{k}-{k + span - 1}}}")
            k += span
        head += [" & ".join(cells) + r" \\", "".join(rules)]
    head.append(
        " & ".join([*(latex_escape(h) for h in g.lead), *(_latex_box(b, "b") for b in g.heads)]) + r" \\"
    )
    head.append(r"\midrule")
    if g.meta:
        head += [" & ".join(_latex_box(b) for b in row) + r" \\" for row in g.meta]
        head.append(r"\midrule")
    out: list[str] = []
    chunks = _chunks(table, g, lay)
    for part, rows in enumerate(chunks):
        out += [rf"\begin{{{env}}}" + ("" if lay.sideways else "[htbp]"), r"\centering", rf"\{lay.size}"]
        if lay.tabcolsep != 6.0:
            out.append(rf"\setlength{{\tabcolsep}}{{{lay.tabcolsep:g}pt}}")
        if part == 0:
            out += [rf"\caption{{{latex_escape(table.caption)}}}", rf"\label{{tab:{table.name}}}"]
        else:
            out += [r"\addtocounter{table}{-1}", rf"\caption{{(continued) {latex_escape(_short_caption(table.caption))}.}}"]
        out += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", *head]
        for i in rows:
            if i in g.group_starts[1:] and table.group_header is not None and i != rows[0]:
                out.append(r"\addlinespace")
            if i in g.group_lines:
                out.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{latex_escape(g.group_lines[i])}}}}} \\")
            out.append(" & ".join(_latex_box(b) for b in g.body[i]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if part == len(chunks) - 1:
            for note in table.notes:
                out.append(rf"\par\smallskip{{\raggedright\footnotesize {latex_escape(note)}\par}}")
        out.append(rf"\end{{{env}}}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- Markdown and CSV


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _md_cell(cell: Cell, digits: int) -> str:
    body = _md_escape(cell_text(cell, digits))
    if cell.bold:
        body = f"**{body}**"
    return body + _marks(cell)


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: caption paragraph, pipe table (header groups as its first row), notes."""
    lead = ([table.group_header] if table.group_header is not None else []) + [table.row_header]
    head = [*lead, *table.columns]
    lines = [f"**{_md_escape(table.name)}**: {table.caption}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in head) + " |")
    lines.append("|" + "|".join(["---"] * len(lead) + ["---:"] * len(table.columns)) + "|")
    if table.column_groups and any(label for label, _ in table.column_groups):
        groups: list[str] = []
        for label, span in table.column_groups:
            groups += [f"*{_md_escape(label)}*" if label else ""] + [""] * (span - 1)
        lines.append("| " + " | ".join([""] * len(lead) + groups) + " |")
    for label, values in table.meta_rows:
        lines.append("| " + " | ".join(_md_escape(v) for v in [*[""] * (len(lead) - 1), label, *values]) + " |")
    group = None
    for row in table.rows:
        if table.group_header is not None:
            first = row.group if row.group != group else ""
            group = row.group
            label = [_md_escape(first or ""), _md_escape(row.label)]
        else:
            label = [_md_escape(row.label if row.group is None else f"{row.group}: {row.label}")]
        lines.append("| " + " | ".join([*label, *(_md_cell(c, table.digits) for c in row.cells)]) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long form, one line per cell: group,row,column,mean,sd,text,best,tied,degenerate + meta."""
    meta_names = [label.rstrip(":").strip() for label, _ in table.meta_rows]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", "row", "column", "mean", "sd", "text", "best", "tied", "degenerate", *meta_names])
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
                    cell.flag or "",
                    *meta,
                ]
            )
    return buf.getvalue()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; reports are shared like any written file
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


__all__ = [
    "CANDIDATE_LAYOUTS", "LATEX_PACKAGES", "Layout", "Row", "choose_layout", "estimate_width", "latex_escape",
    "text_width", "to_csv", "to_latex", "to_markdown", "write_atomic", "write_table",
]
