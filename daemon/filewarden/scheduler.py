"""The sweep scheduler: one sweep at a time, on request or when due, and running it.

Requests (a ``scan``, a ``sync`` of a polled root, a root coming back, an
overflow) go before scheduled sweeps; a request for a root that already has
a sweep queued shares it. Full and quick sweeps fall due per root on their
intervals, jittered so that roots and hosts spread out; a polled root's
quick sweeps run every ``poll_interval``.

After catalog writes failed (a full disk), what was lost is found by full
sweeps: one every little while per root until each has committed.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

import apsw

from filewarden import logs
from filewarden.config import SweepConfig
from filewarden.identity import Relinker
from filewarden.jobs import Job, JobTable
from filewarden.roots import Root, RootSet
from filewarden.sweep import Sweep
from filewarden.walk import SweepAborted, WalkProcess
from filewarden.writer import Writer

log = logs.get("filewarden.scheduler")

WRITE_RETRY_SECONDS = 10.0


class Checks(Protocol):
    """Whether a root is usable (:class:`filewarden.availability.Availability`)."""

    def problem(self, root: Root) -> str | None: ...
    def refresh(self, root: Root, reader: apsw.Connection) -> str | None: ...


class Scheduler(threading.Thread):
    """Runs sweeps one at a time: all roots at start, then full and quick ones on their intervals."""

    def __init__(
        self,
        *,
        roots: RootSet,
        jobs: JobTable,
        writer: Writer,
        checks: Checks,
        relinker: Relinker,
        mode_of: Callable[[Root], str],
        after_sweep: Callable[[], None],
        config: SweepConfig,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="filewarden-sweeps", daemon=True)
        self.roots = roots
        self.jobs = jobs
        self.writer = writer
        self.checks = checks
        self.relinker = relinker
        self.mode_of = mode_of
        self.after_sweep = after_sweep
        self.config = config
        self.halt = stop
        self.away = WalkProcess()  # started by a big full walk, ended when no sweep waits
        self._wake = threading.Condition()
        self._requests: list[tuple[int, bool, Job]] = []
        self._due: dict[int, dict[str, float]] = {}
        # Catching up after failed writes: the roots still to sweep fully.
        self.degraded_since: float | None = None
        self._failures_seen = 0
        self._catch_up: set[int] = set()
        self._retry_at = 0.0

    def apply(self, config: SweepConfig) -> None:
        """A reload: new intervals, counted from now."""
        with self._wake:
            self.config = config
            self._due.clear()
            self._wake.notify()

    def request(self, root: Root, *, full: bool) -> Job:
        """Queue a sweep of ``root`` before any scheduled one; returns its job.

        A sweep of the root that is queued but not started yet is shared:
        it starts after this call, so it serves this caller too (a hundred
        clients calling ``sync`` at once cost one quick sweep).
        """
        with self._wake:
            return self._enqueue(root, full)

    def _enqueue(self, root: Root, full: bool) -> Job:
        for queued_id, queued_full, job in self._requests:
            if queued_id == root.id and (queued_full or not full):
                return job
        job = self.jobs.new("full" if full else "quick", root.display)
        self._requests.append((root.id, full, job))
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

    def _interval(self, root: Root, kind: str) -> float | None:
        if kind == "full":
            return self.config.interval
        if self.mode_of(root) == "poll":
            return self.config.poll_interval
        return self.config.quick_interval

    def _next(self, interval: float | None) -> float:
        if interval is None:
            return float("inf")
        jitter = self.config.jitter
        return time.monotonic() + interval * (1 + random.uniform(-jitter, jitter))

    def _queue_due(self) -> None:
        now = time.monotonic()
        for root in self.roots:
            due = self._due.setdefault(
                root.id, {k: self._next(self._interval(root, k)) for k in ("full", "quick")}
            )
            for kind, at in due.items():
                if at <= now:
                    due[kind] = self._next(self._interval(root, kind))
                    self._enqueue(root, kind == "full")

    def run(self) -> None:
        reader = self.writer.catalog.reader()
        try:
            self._loop(reader)
        finally:
            reader.close()
            self.away.close()

    def _loop(self, reader: apsw.Connection) -> None:
        while not self.halt.is_set():
            with self._wake:
                if not self._requests:
                    self._queue_due()
                if not self._requests:
                    self.away.close()  # nothing more to walk now: its memory goes back
                    soonest = min(
                        (t for d in self._due.values() for t in d.values()), default=float("inf")
                    )
                    self._wake.wait(min(60.0, max(0.05, soonest - time.monotonic())))
                    continue
                root_id, full, job = self._requests.pop(0)
            target = self.roots.get(root_id)
            if target is None:
                self.jobs.close(job, "aborted", error="root no longer configured")
                continue
            self.sweep(target, full=full, job=job, reader=reader)
        with self._wake:
            for _, _, job in self._requests:
                self.jobs.close(job, "aborted", error="daemon stopping")

    # -- running one sweep ------------------------------------------------------------

    def sweep(self, root: Root, *, full: bool, job: Job, reader: apsw.Connection) -> None:
        """Run one sweep of ``root`` in the calling thread (with its ``reader``), tracked by ``job``."""
        problem = self.checks.refresh(root, reader)
        if problem:
            self.jobs.close(job, "aborted", error=f"root offline: {problem}")
            return
        sweep = Sweep(
            root,
            self.writer,
            full=full,
            stop=self.halt,
            batch_files=self.config.batch_files,
            root_ok=self.checks.problem,
            progress=job,
            roots=self.roots.snapshot(),
            relinker=self.relinker,
            away=self.away,
        )
        job.state, job.started = "running", time.time()
        try:
            tally = sweep.run()
        except SweepAborted as exc:
            job.counts = dataclasses.asdict(sweep.tally)
            self.jobs.close(job, "aborted", error=str(exc))
            self.checks.refresh(root, reader)
            return
        except Exception as exc:  # a bug must not end the sweeps of other roots
            log.exception("sweep.error", root=root.display, error=str(exc))
            self.jobs.close(job, "failed", error=f"{type(exc).__name__}: {exc}")
            return
        job.counts = dataclasses.asdict(tally)
        self.jobs.close(job, "done")
        if full and self.writer.failures == self._failures_seen:
            self._catch_up.discard(root.id)
            if not self._catch_up:
                self.degraded_since = None
        self.after_sweep()

    def catch_up_after_write_failures(self) -> None:
        """After catalog writes failed (a full disk), what was lost is found by full sweeps:
        one every little while per root until each has committed (there is room again)."""
        if self.writer.failures > self._failures_seen:
            self._failures_seen = self.writer.failures
            self._catch_up = self.roots.ids()
            self.degraded_since = self.degraded_since or time.time()
        self._catch_up &= self.roots.ids()
        if not self._catch_up:
            self.degraded_since = None
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + WRITE_RETRY_SECONDS
        log.warning(
            "catalog.retry",
            error=self.writer.last_error or "earlier writes failed",
            action="full sweeps to catch up",
        )
        for root_id in self._catch_up:
            root = self.roots.get(root_id)
            if root is not None:
                self.request(root, full=True)
