"""Compile generated LaTeX tables with pdflatex, read the overfull boxes, render PNGs.

Why: a table that compiles but is 120 pt wider than the page is no use to a paper
author, and only TeX knows the real width. `compile_tables` typesets each table
alone on a standard page (article class, default margins, the packages
`reports.writers.LATEX_PACKAGES` lists) and returns what pdflatex's log says about
it: overfull boxes (wider than the text) and floats too large for the page.

Command line (for docs and by hand; pdflatex and, for `--png`, pdftoppm needed):

    python -m reports.latex results/demo/reports/*.tex              # widths of each table
    python -m reports.latex table2_multisite.tex --png docs/img/table2.png
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from reports.writers import LATEX_PACKAGES

_OVERFULL = re.compile(r"Overfull \\hbox \(([0-9.]+)pt too wide\)")
_OVERFULL_V = re.compile(r"Overfull \\vbox \(([0-9.]+)pt too high\)")
_TOO_LARGE = re.compile(r"Float too large for page by ([0-9.]+)pt")


@dataclass
class CompileResult:
    """What pdflatex said about one table: `ok` is False on a LaTeX error."""

    name: str
    ok: bool
    overfull_pt: list[float] = field(default_factory=list)  # \hbox overfull amounts
    too_high_pt: list[float] = field(default_factory=list)  # float too large for the page / overfull \vbox
    log: str = ""
    pdf: Path | None = None

    @property
    def worst_pt(self) -> float:
        """Largest overflow in pt, horizontal or vertical (0 when the table fits)."""
        return max([0.0, *self.overfull_pt, *self.too_high_pt])


def pdflatex_available() -> bool:
    return shutil.which("pdflatex") is not None


def document(tables: Iterable[str]) -> str:
    """A standard article page holding the given table sources, one per page."""
    pkgs = "\n".join(rf"\usepackage{{{p}}}" for p in LATEX_PACKAGES)
    body = "\n\\clearpage\n".join(tables)
    return f"\\documentclass{{article}}\n{pkgs}\n\\pagestyle{{empty}}\n\\begin{{document}}\n{body}\n\\end{{document}}\n"


def parse_log(name: str, log: str, ok: bool, pdf: Path | None = None) -> CompileResult:
    return CompileResult(
        name,
        ok,
        [float(x) for x in _OVERFULL.findall(log)],
        [float(x) for x in _TOO_LARGE.findall(log)] + [float(x) for x in _OVERFULL_V.findall(log)],
        log,
        pdf,
    )


def compile_tex(source: str, workdir: Path, name: str = "table", *, timeout: float = 60.0) -> CompileResult:
    """Run pdflatex once on a complete document; `workdir` receives `<name>.pdf` and `<name>.log`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.tex").write_text(source)
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=workdir,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env={**os.environ, "TEXINPUTS": "", "openout_any": "p"},
    )
    log_file = workdir / f"{name}.log"
    log = log_file.read_text(errors="replace") if log_file.is_file() else proc.stdout.decode(errors="replace")
    pdf = workdir / f"{name}.pdf"
    return parse_log(name, log, proc.returncode == 0, pdf if pdf.is_file() else None)


def compile_tables(paths: Sequence[Path], workdir: Path | None = None) -> list[CompileResult]:
    """Typeset every `.tex` table file on its own standard page; one result per file."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="reports-latex-")
        workdir = Path(tmp.name)
    try:
        return [compile_tex(document([Path(p).read_text()]), Path(workdir), Path(p).stem) for p in paths]
    finally:
        if tmp is not None:
            tmp.cleanup()


def render_png(pdf: Path, png: Path, *, dpi: int = 130, margin: int = 24) -> Path:
    """First page of `pdf` as a PNG cropped to its content (plus `margin` px), white background."""
    from PIL import Image, ImageChops

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "page"
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile", str(pdf), str(stem)], check=True)
        img = Image.open(f"{stem}.png").convert("RGB")
        box = ImageChops.difference(img, Image.new("RGB", img.size, "white")).getbbox()
        if box:
            l, t, r, b = box
            img = img.crop((max(l - margin, 0), max(t - margin, 0), min(r + margin, img.width), min(b + margin, img.height)))
        img.save(png, optimize=True)
    return png


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.latex", description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", type=Path, help="generated .tex table files")
    ap.add_argument("--png", type=Path, help="render the (single) table to this PNG file")
    args = ap.parse_args(argv)
    if not pdflatex_available():
        print("pdflatex not found (Debian: apt-get install texlive-latex-base texlive-latex-recommended)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="reports-latex-") as tmp:
        results = compile_tables(args.tables, Path(tmp))
        bad = 0
        for r in results:
            state = "error" if not r.ok else "fits" if r.worst_pt <= 1.0 else f"overflows by {r.worst_pt:.1f} pt"
            bad += state != "fits"
            print(f"{r.name}: {state}" + (f" (hbox {max(r.overfull_pt):.1f} pt)" if r.overfull_pt else "")
                  + (f" (page {max(r.too_high_pt):.1f} pt)" if r.too_high_pt else ""))
        if args.png:
            if len(results) != 1 or results[0].pdf is None:
                print("--png takes exactly one table that compiles", file=sys.stderr)
                return 2
            print(render_png(results[0].pdf, args.png))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
