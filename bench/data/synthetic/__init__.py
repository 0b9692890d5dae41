"""Synthetic multi-site data in the *official* on-disk layouts of the real datasets.

`generate(out, seed=..., sites=..., scale=...)` writes one folder per site,
`out/<site>`, that the real site adapter (`bench.data.sites.get_site(site)`) reads
unchanged. Chest images come from `anatomy.render` with learnable finding
signatures; each site has its own `SiteStyle` (intensity curve, noise, blur, sizes,
label prevalences), so a model trained on one site meets a domain shift on another.

Writers. Site `<name>` is written by the module `bench.data.synthetic.<name>`, which
defines ``write(root: Path, *, seed: int, scale: float) -> dict[str, int]``: it fills
`root` (an empty temporary folder) and returns counts. Adding a site is one module.
A writer whose output changes for the same (seed, scale) raises its module-level
`WRITER_VERSION` (default 1); the marker records it, so an older folder is reported rather
than silently reused.

Guarantees:
* deterministic: the same (seed, scale, signal) gives byte-identical files; a site's
  files depend only on (seed, scale, signal, site name), not on which other sites are
  generated;
* controllable difficulty: `signal` scales how strongly every label shows in the
  image (chest findings via `anatomy.finding_signal`, OCT class signatures in
  `oct.render_oct`): 0 = labels carry no image signal, 1 = the default, > 1 easier;
* atomic and idempotent: each site is written into `out/.<site>.tmp-<pid>`, the
  completion marker `MARKER` (seed, scale, counts) is written last, and the folder is
  renamed to `out/<site>`. A later call finds the marker and skips the site; a folder
  without a marker, or with one for another seed/scale, is an error (never deleted).
  When two processes generate the same site at once, the first rename wins and the
  other discards its identical copy.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from bench.data.errors import DataError

log = logging.getLogger(__name__)

MARKER = ".synthetic_complete.json"
DEFAULT_SITES: tuple[str, ...] = ("nih", "chexpert", "oct")


def known_sites() -> tuple[str, ...]:
    """Sites with a synthetic writer: a module of this package named after a registered site
    (found, not listed: adding a writer is adding its module)."""
    from bench.data.sites import list_sites

    here = Path(__file__).parent
    return tuple(s for s in list_sites() if (here / f"{s}.py").is_file())


def _version(site: str) -> int:
    return int(getattr(importlib.import_module(f"{__name__}.{site}"), "WRITER_VERSION", 1))


def _writer(site: str) -> Callable[..., dict[str, int]]:
    """The `write` function of module `bench.data.synthetic.<site>`."""
    try:
        module = importlib.import_module(f"{__name__}.{site}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{site}":
            raise DataError(f"no synthetic writer for site {site!r}; known: {', '.join(known_sites())}") from None
        raise
    write = getattr(module, "write", None)
    if write is None:
        raise DataError(f"synthetic writer module {module.__name__} defines no write()")
    return write


def read_marker(site_root: Path) -> dict | None:
    """The completion marker of a generated site folder, or None if absent."""
    path = site_root / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _same_generation(marker: dict, seed: int, scale: float, signal: float, version: int = 1) -> bool:
    """Markers carry `signal` and `version` only when they differ from 1 (older markers have neither)."""
    return (
        marker.get("seed") == seed
        and marker.get("scale") == scale
        and marker.get("signal", 1.0) == signal
        and marker.get("version", 1) == version
    )


def generate(
    out: Path,
    *,
    seed: int = 0,
    sites: Sequence[str] = DEFAULT_SITES,
    scale: float = 1.0,
    signal: float = 1.0,
) -> dict[str, Path]:
    """Write each site under `out/<site>` (skipping complete ones); returns site -> root."""
    from bench.data.synthetic.anatomy import finding_signal

    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not signal >= 0:
        raise ValueError(f"signal must be >= 0, got {signal}")
    writers = {site: _writer(site) for site in sites}  # fail before writing anything
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    for site, write in writers.items():
        final = out / site
        if final.exists():
            marker = read_marker(final)
            if marker is None:
                raise DataError(f"{final} exists but has no {MARKER}: not a complete synthetic site; remove it")
            version = _version(site)
            if not _same_generation(marker, seed, scale, signal, version):
                raise DataError(
                    f"{final} was generated with seed={marker.get('seed')} scale={marker.get('scale')} "
                    f"signal={marker.get('signal', 1.0)} by writer version {marker.get('version', 1)}, not "
                    f"seed={seed} scale={scale} signal={signal} version {version}; remove it or use another output folder"
                )
            log.info("synthetic %s: complete in %s, skipped", site, final)
            roots[site] = final
            continue
        tmp = out / f".{site}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        t0 = time.perf_counter()
        with finding_signal(signal):
            counts = write(tmp, seed=seed, scale=scale)
        marker = {"site": site, "seed": seed, "scale": scale, "counts": counts}
        if signal != 1.0:  # default-signal markers stay as they were, so existing folders remain valid
            marker["signal"] = signal
        if _version(site) != 1:
            marker["version"] = _version(site)
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")  # last: marks completion
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process (e.g. a parallel job) finished the same site first: keep
            # its copy if it is the same generation, else report the conflict.
            marker = read_marker(final)
            shutil.rmtree(tmp)
            if marker is None or not _same_generation(marker, seed, scale, signal, _version(site)):
                raise DataError(f"{final} appeared while generating it and is not seed={seed} scale={scale}") from None
        log.info("synthetic %s: wrote %s in %.1fs to %s", site, counts, time.perf_counter() - t0, final)
        roots[site] = final
    return roots
