"""LaTeX / Markdown / CSV rendering and atomic writes."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import pytest

from reports.tables import Cell, Row, Table
from reports.writers import latex_escape, to_csv, to_latex, to_markdown, write_table


def _table() -> Table:
    return Table(
        name="table2_multisite",
        caption="Mean AUC & sd over 5 seeds; 100% of {images}_x",
        row_header="Exp.",
        columns=["NIH 14 class avg.", "Padchest_%"],
        rows=[
            Row("1.1", [Cell(0.7505, 0.0065), Cell(0.8483, 0.0109, bold=True)]),
            Row("1.2 (b)", [Cell(0.8028, 0.0015, bold=True), Cell(0.8718, 0.0135, tied=True)]),
            Row("2.1", [Cell(0.6481), Cell(text="-")], group="ViT"),
        ],
        meta_rows=[("n:", ["25,596", "1,861"]), ("Location:", ["Bethesda (USA)", "San Juan (Spain)"])],
        notes=["† not significantly different from the best."],
    )


def test_latex_structure(check_latex) -> None:
    tex = to_latex(_table())
    check_latex(tex, 2)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[htbp]" and lines[-1] == r"\end{table}"
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in lines
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\label{tab:table2_multisite}" in tex and r"\caption{" in tex
    assert r"\begin{tabular}{lrr}" in tex
    assert r"\textbf{0.8028 (0.0015)}" in tex and r"0.8718 (0.0135)$^{\dagger}$" in tex
    assert r"Padchest\_\%" in tex and r"100\% of \{images\}\_x" in tex
    assert r"\textdagger{} not significantly" in tex
    # the checker itself rejects broken output
    for broken in (tex.replace(r"\textbf{", r"\textbf{{", 1), tex.replace(" & ", " ", 1), tex.replace("\\end{table}", "")):
        with pytest.raises(AssertionError):
            check_latex(broken, 2)


def test_latex_escape_all_specials() -> None:
    assert latex_escape(r"a_b&c%d$e#f{g}h~i^j\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed; structure checked above")
def test_latex_compiles(tmp_path) -> None:
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + to_latex(_table()) + "\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc)
    r = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]


def test_markdown_bold_and_rows() -> None:
    md = to_markdown(_table())
    assert "| **0.8028 (0.0015)** |" in md
    assert "| n: | 25,596 | 1,861 |" in md
    assert "| ViT: 2.1 | 0.6481 | - |" in md
    assert "0.8718 (0.0135)†" in md
    header = [l for l in md.splitlines() if l.startswith("| Exp.")][0]
    assert header.count("|") == 4


def test_csv_numbers_long_form() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(_table()))))
    assert len(rows) == 6
    first = rows[0]
    assert float(first["mean"]) == 0.7505 and float(first["sd"]) == 0.0065 and first["n"] == "25,596"
    assert rows[2]["best"] == "1" and rows[3]["tied"] == "1"
    assert rows[5]["text"] == "-" and rows[5]["mean"] == ""
    assert rows[4]["sd"] == ""


def test_write_table_overwrites_atomically(tmp_path) -> None:
    paths = write_table(_table(), tmp_path)
    assert sorted(p.name for p in paths) == ["table2_multisite.csv", "table2_multisite.md", "table2_multisite.tex"]
    first = (tmp_path / "table2_multisite.md").read_text()
    write_table(_table(), tmp_path)
    assert (tmp_path / "table2_multisite.md").read_text() == first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
