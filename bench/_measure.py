"""What several benchmarks measure the same way: the ``find`` baseline, a process's memory,
a catalog's size on disk."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def find_command(tree: Path) -> list[str]:
    """``find`` printing what a sweep compares (inode, size, mtime, path): the baseline."""
    return ["find", str(tree), "-printf", "%i %s %T@ %p\\n"]


def timed(cmd: list[str], **kw: object) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.monotonic() - t0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak resident) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, window: float = 1.0, busy: float = 0.02, timeout: float = 300) -> bool:
    """Wait until a process uses under ``busy`` of a CPU over ``window`` seconds; False on timeout."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before < busy * window:
            return True
        before = now
    return False


def catalog_bytes(db: Path) -> int:
    """A SQLite database on disk: the file, its write-ahead log and its shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += Path(str(db) + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total
