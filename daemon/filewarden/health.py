"""How the daemon is doing: the service watchdog's verdict, status lines, warnings, memory.

Read from every part, changed by none: what ``status`` shows beside the
catalog's counts, what systemd's ``STATUS=`` says, and whether the watchdog
may be pinged.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import apsw

from filewarden import catalog, protocol
from filewarden.hasher import Hasher
from filewarden.identity import Relinker
from filewarden.jobs import JobTable
from filewarden.roots import Root, RootSet
from filewarden.watch.limits import own_watches, sysctl
from filewarden.writer import Writer

OVERFLOW_SHOWN = 86400.0  # seconds a lost-events warning stays in status
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


class Watching(Protocol):
    """How each root is watched (:class:`filewarden.watch.Watcher`)."""

    def mode_of(self, root: Root) -> str: ...
    def backend_of(self, root: Root) -> str: ...
    def why_polled(self, root: Root) -> str | None: ...


class Degraded(Protocol):
    """Since when catalog writes failed and sweeps are catching up (the scheduler)."""

    degraded_since: float | None


class Health:
    """The daemon's vital signs, from the parts it is handed."""

    def __init__(
        self,
        *,
        roots: RootSet,
        jobs: JobTable,
        writer: Writer,
        watching: Watching,
        catching_up: Degraded,
        hasher: Hasher,
        relinker: Relinker,
    ) -> None:
        self.roots = roots
        self.jobs = jobs
        self.writer = writer
        self.watching = watching
        self.catching_up = catching_up
        self.hasher = hasher
        self.relinker = relinker
        self.started_at = time.time()
        self._threads: list[tuple[str, Callable[[], bool]]] = []
        self._overflows: dict[int, float] = {}  # root id → when its events were last lost
        self.overflows = 0  # times events were lost, since the start

    def needs(self, trouble: str, alive: Callable[[], bool]) -> None:
        """``trouble`` is what is wrong when ``alive()`` says False (a part's thread ended)."""
        self._threads.append((trouble, alive))

    def events_lost(self, root: Root) -> None:
        self._overflows[root.id] = time.time()
        self.overflows += 1

    def unhealthy(self, watchdog_interval: float | None) -> str | None:
        """Why the service watchdog must not be pinged now, or None when all is well.

        A writer stuck in one batch, or a dead server, watcher or mount
        checker: systemd then restarts the daemon (WatchdogSec).
        """
        busy = self.writer.busy_since
        stuck_after = max(10.0, (watchdog_interval or 20.0) / 2)
        if busy is not None and time.monotonic() - busy > stuck_after:
            return f"catalog writer busy for {time.monotonic() - busy:.0f} s"
        for trouble, alive in self._threads:
            if not alive():
                return trouble
        return None

    def status_line(self, reader: apsw.Connection) -> str:
        """One line for systemd's STATUS=: roots, counts, what the daemon is doing."""
        rows = catalog.all_roots(reader)
        configured = self.roots.ids()
        online = sum(1 for r in rows if r.id in configured and r.state == "online")
        present, missing, offline = catalog.totals(reader)
        doing = "idle"
        for job in self.jobs.active():
            if job.state == "running":
                total = f"/{job.total}" if job.total is not None else ""
                what = "indexing" if job.total is None else f"{job.kind} sweep"
                doing = f"{what} {job.root}: {job.done}{total}"
                break
        return (
            f"{online} of {len(configured)} roots online; {present} present, {missing} missing,"
            f" {offline} offline; {doing}"
        )

    def root(self, root: Root) -> dict[str, Any]:
        """How a root is watched and what is wrong with it (``status``'s roots)."""
        return {
            "mode": self.watching.mode_of(root),
            "backend": self.watching.backend_of(root),
            "warnings": self.root_warnings(root),
        }

    def root_warnings(self, root: Root) -> list[str]:
        found = [
            f"last sweep {j.state}: {j.error}" for j in self.jobs.recent_failures(root.display)
        ]
        why = self.watching.why_polled(root)
        if why and root.config.mode != "poll":
            found.append(f"polled, not watched: {why}")
        lost = self._overflows.get(root.id)
        if lost is not None and time.time() - lost < OVERFLOW_SHOWN:
            found.append(
                f"watcher events were lost (queue overflow) at {protocol.rfc3339(lost)}; re-swept"
            )
        return found

    def daemon(self) -> dict[str, Any]:
        """The daemon's own part of ``status``."""
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "jobs": [j.snapshot() for j in self.jobs.active()],
            "hashing": self.hashing(),
            "memory": memory(),
            "watches": {
                "used": own_watches(),
                "limit": sysctl("max_user_watches"),
                "overflows": self.overflows,
            },
            "warnings": self.warnings(),
        }

    def hashing(self) -> dict[str, object]:
        """Background hashing progress for status."""
        h = self.hasher
        return {
            "enabled": h.enabled,
            "hashed": h.hashed,
            "bytes": h.bytes,
            "busy": h.busy,
            "relinked_by_hash": self.relinker.relinked - self.relinker.by_fingerprint,
            "relinked_by_fingerprint": self.relinker.by_fingerprint,
            "hashed_to_relink": self.relinker.hashed,
        }

    def warnings(self) -> list[str]:
        found = []
        if self.writer.last_error:
            found.append(f"catalog writes failing: {self.writer.last_error}")
        since = self.catching_up.degraded_since
        if since is not None:
            found.append(
                f"degraded since {protocol.rfc3339(since)}: catalog writes failed;"
                " catching up with full sweeps"
            )
        return found


def memory() -> dict[str, int | None]:
    """The process's resident memory and SQLite's share of it, in KiB (``status``'s ``memory``).

    ``rss_kib`` is None where there is no ``/proc``.
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        rss: int | None = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        rss = None
    sqlite, budget = catalog.memory_kib()
    return {"rss_kib": rss, "sqlite_kib": sqlite, "sqlite_budget_kib": budget}


def pin_malloc_threshold() -> bool:
    """Keep blocks of 128 KiB and more in mappings of their own, given back when freed.

    glibc raises its threshold to the size of each such block freed, up to
    32 MiB. After the first few megabyte answers (a ``list`` of 10,000
    files, an oversize request line) later ones are carved from the heaps,
    between small blocks that live on (SQLite's pages), and the holes they
    leave are kept: the soak drill's daemon grew by about 15 MB of free heap
    per two minutes that way. Pinning the threshold stops the raising. False
    where there is no glibc ``mallopt`` (nothing changes there).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
