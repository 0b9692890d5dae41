"""Code snapshots: a queued job runs the code that was submitted, not a later edit.

submitit pickles functions by reference (module + name), so a job that starts hours
after `bench run` would import whatever the checkout holds then. We copy the project's
packages into `results/slurm/code/<hash>/` (content-addressed: unchanged code is one
snapshot for every run) and put that folder first on the job's `PYTHONPATH`. Unlike
submitit's `RsyncSnapshot` this needs neither git nor rsync and works from an
installed package as well as from a checkout (uncommitted edits included: what you
ran is what you get).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGES = ("bench", "backbones", "ssl_methods", "reports")


def _package_dirs() -> list[Path]:
    import importlib

    dirs = []
    for name in PACKAGES:
        mod = importlib.import_module(name)
        dirs.append(Path(mod.__file__).resolve().parent)  # type: ignore[arg-type]
    return dirs


def _files(pkg: Path) -> list[Path]:
    return sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def snapshot(root: Path) -> Path:
    """Copy the packages into `root/<hash>` (once per distinct code) and return that folder."""
    h = hashlib.sha256()
    plan: list[tuple[Path, Path]] = []
    for pkg in _package_dirs():
        for f in _files(pkg):
            rel = Path(pkg.name) / f.relative_to(pkg)
            h.update(str(rel).encode())
            h.update(f.read_bytes())
            plan.append((f, rel))
    dest = Path(root) / h.hexdigest()[:16]
    if dest.exists():
        return dest
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot.", dir=root))
    for src, rel in plan:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tmp / rel)
    try:
        os.rename(tmp, dest)  # atomic: a job never sees a half-copied snapshot
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run made the same snapshot first
    return dest


def setup_lines(folder: Path) -> list[str]:
    """sbatch lines that make the job import the snapshot before the installed/editable code.

    The job also starts in the snapshot folder: `python -m` puts the working directory
    first on `sys.path`, and sbatch would otherwise start in the (mutable) checkout.
    Every path a stage uses is absolute, so the working directory is free to choose.
    """
    return [f'export PYTHONPATH="{folder}${{PYTHONPATH:+:$PYTHONPATH}}"', f'cd "{folder}"']
