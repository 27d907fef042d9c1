"""The sweep scheduler: one sweep at a time, on request or when due.

Requests (a ``scan``, a ``sync`` of a polled root, a root coming back, an
overflow) go before scheduled sweeps; a request for a root that already has
a sweep queued shares it. Full and quick sweeps fall due per root on their
intervals, jittered so that roots and hosts spread out; a polled root's
quick sweeps run every ``poll_interval``.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

import apsw

from filewarden import catalog
from filewarden.jobs import Job
from filewarden.roots import Root

if TYPE_CHECKING:
    from filewarden.daemon import Daemon


class Scheduler(threading.Thread):
    """Runs sweeps one at a time: all roots at start, then full and quick ones on their intervals."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(name="filewarden-sweeps", daemon=True)
        self.d = daemon
        self._wake = threading.Condition()
        self._requests: list[tuple[int, bool, Job]] = []
        self._due: dict[int, dict[str, float]] = {}

    def request(self, root: Root, *, full: bool) -> Job:
        """Queue a sweep of ``root`` before any scheduled one; returns its job.

        A sweep of the root that is queued but not started yet is shared:
        it starts after this call, so it serves this caller too (a hundred
        clients calling ``sync`` at once cost one quick sweep).
        """
        with self._wake:
            return self._enqueue(root.id, full)

    def _enqueue(self, root_id: int, full: bool) -> Job:
        for queued_id, queued_full, job in self._requests:
            if queued_id == root_id and (queued_full or not full):
                return job
        job = self.d.jobs.new("full" if full else "quick", self.d.roots[root_id].display)
        self._requests.append((root_id, full, job))
        self._wake.notify()
        return job

    def reschedule(self, root_id: int) -> None:
        """Forget a root's due times (its mode changed); they are computed afresh."""
        with self._wake:
            self._due.pop(root_id, None)
            self._wake.notify()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def _interval(self, root_id: int, kind: str) -> float | None:
        cfg = self.d.config.sweep
        if kind == "full":
            return cfg.interval
        root = self.d.roots.get(root_id)
        if root is not None and self.d.watcher.mode_of(root) == "poll":
            return cfg.poll_interval
        return cfg.quick_interval

    def _next(self, interval: float | None) -> float:
        if interval is None:
            return float("inf")
        jitter = self.d.config.sweep.jitter
        return time.monotonic() + interval * (1 + random.uniform(-jitter, jitter))

    def _queue_due(self) -> None:
        now = time.monotonic()
        for root_id in list(self.d.roots):
            due = self._due.setdefault(
                root_id, {k: self._next(self._interval(root_id, k)) for k in ("full", "quick")}
            )
            for kind, at in due.items():
                if at <= now:
                    due[kind] = self._next(self._interval(root_id, kind))
                    self._enqueue(root_id, kind == "full")

    def run(self) -> None:
        reader = catalog.connect(self.d.db_path, readonly=True)
        try:
            self._loop(reader)
        finally:
            reader.close()

    def _loop(self, reader: apsw.Connection) -> None:
        while not self.d.stopping.is_set():
            with self._wake:
                if not self._requests:
                    self._queue_due()
                if not self._requests:
                    soonest = min(
                        (t for d in self._due.values() for t in d.values()), default=float("inf")
                    )
                    self._wake.wait(min(60.0, max(0.05, soonest - time.monotonic())))
                    continue
                root_id, full, job = self._requests.pop(0)
            target = self.d.roots.get(root_id)
            if target is None:
                self.d.jobs.close(job, "aborted", error="root no longer configured")
                continue
            self.d.sweep(target, full=full, job=job, reader=reader)
        with self._wake:
            for _, _, job in self._requests:
                self.d.jobs.close(job, "aborted", error="daemon stopping")
