"""The command-line flags the benchmarks share, with each one's own defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

WORKDIR = Path("/var/tmp/filewarden-bench")


def parser(
    doc: str | None,
    *,
    files: int | None = None,
    dirs: int | None = None,
    runs: int | None = None,
    backend: bool = False,
    hashing: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the module docstring as help, ``--workdir``, and the shared flags asked for.

    ``files``, ``dirs`` and ``runs`` are the defaults of ``--files``,
    ``--dirs`` and ``--runs`` (no flag where None); ``backend`` adds
    ``--backend`` (watchdog or pyinotify), ``hashing`` adds ``--hash``.
    """
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if files is not None:
        p.add_argument("--files", type=int, default=files, help=f"default {files:,}")
    if dirs is not None:
        p.add_argument("--dirs", type=int, default=dirs, help=f"default {dirs:,}")
    if runs is not None:
        p.add_argument("--runs", type=int, default=runs, help=f"default {runs}")
    if backend:
        p.add_argument("--backend", choices=("watchdog", "pyinotify"), default="watchdog")
    if hashing:
        p.add_argument("--hash", action="store_true", help="run the daemon with hashing on")
    p.add_argument(
        "--workdir",
        type=Path,
        default=WORKDIR,
        help="where the trees and catalogs live (a real disk, not tmpfs)",
    )
    return p
