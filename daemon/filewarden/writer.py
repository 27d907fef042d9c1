"""The one thread that writes the catalog.

Jobs are functions of the write connection. The thread takes what is queued
(up to a batch), runs each job in its own savepoint inside one transaction
and commits once, so a burst of small live updates costs one fsync while a
failing job rolls back only itself. Callers get a Future that resolves after
the commit, so an answer never reports data that is not yet durable.

Jobs have a priority (:class:`Priority`): live events and socket writes
first, then a sweep's batches, then background work (hash results,
retention). A batch holds jobs of one priority only, and a batch of lower
priority gives way between two of its jobs as soon as a job of higher
priority is waiting: what it has done is committed at once and the rest of
it goes back to the head of its queue. So a rename waits, at worst, for the
one job the writer is running when it arrives, and that job's commit.

Checkpoints (copying the write-ahead log back into the database, with its
fsyncs) run after a batch's callers have their answers, before the next
batch: SQLite would otherwise run them inside the commit that crosses its
threshold, and that commit, with everyone waiting on it, would take three
times as long. Done before the next transaction, a checkpoint still lets the
log restart from its beginning, so it stays small under a steady stream.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import apsw

from filewarden import catalog, logs
from filewarden.errors import FilewardenError

log = logs.get("filewarden.writer")
T = TypeVar("T")

MAX_BATCH_JOBS = 256
CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint threshold


class WriterStopped(FilewardenError):
    """The writer is shutting down and takes no new jobs."""


class Priority(enum.IntEnum):
    """Who waits on a job; lower goes first."""

    LIVE = 0  # live events, socket writes, root transitions: someone is waiting now
    SWEEP = 1  # a sweep's batches
    BACKGROUND = 2  # hash results, retention: nobody waits


Job = tuple[Callable[[apsw.Connection], Any], Future[Any]]


class Writer:
    """Owns the write connection; everything that changes the catalog goes through it."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        # What the parts that hold the writer read through: each their own connection.
        self.catalog = catalog.Catalog(db_path)
        self._queues: tuple[deque[Job], ...] = tuple(deque() for _ in Priority)
        self._ready = threading.Condition()
        self._stop_asked = False
        self._thread = threading.Thread(target=self._run, name="filewarden-writer", daemon=True)
        self._accepting = False
        self.conn: apsw.Connection | None = None
        # Liveness for the service watchdog: when the current batch started (None = idle).
        self.busy_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0  # batches that could not be committed, ever
        self.commits = 0
        self._wal_pages = 0  # frames in the write-ahead log after the last commit
        self.checkpoints = 0
        self._checkpoint_error: str | None = None

    def start(self) -> None:
        """Open (and migrate) the catalog, then start taking jobs."""
        self.conn = catalog.connect(self.db_path)
        self.conn.set_wal_hook(self._after_commit)  # replaces SQLite's inline auto-checkpoint
        self._accepting = True
        self._thread.start()

    def submit(
        self, job: Callable[[apsw.Connection], T], priority: Priority = Priority.LIVE
    ) -> Future[T]:
        """Queue ``job``; its Future resolves once its transaction is committed."""
        future: Future[T] = Future()
        with self._ready:
            if not self._accepting:
                raise WriterStopped("the catalog writer is stopping")
            self._queues[priority].append((job, future))
            self._ready.notify()
        return future

    def call(
        self,
        job: Callable[[apsw.Connection], T],
        timeout: float | None = None,
        priority: Priority = Priority.LIVE,
    ) -> T:
        """Run ``job`` in the writer and wait for its committed result."""
        return self.submit(job, priority).result(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, deadline: float) -> None:
        """Take no new jobs, run what is queued until ``deadline``, then close."""
        with self._ready:
            self._accepting = False
            self._stop_asked = True
            self._ready.notify()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("daemon.stop", detail="writer still busy at the deadline")

    def _after_commit(self, conn: apsw.Connection, name: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _checkpoint(self, conn: apsw.Connection) -> None:
        """Copy the log back if it has grown (PASSIVE: never waits for readers)."""
        if self._wal_pages < CHECKPOINT_PAGES:
            return
        self._wal_pages = 0
        try:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as exc:  # a full disk: the next commit's checkpoint tries again
            error = f"checkpoint: {type(exc).__name__}: {exc}"
            if error != self._checkpoint_error:  # once, not after every commit
                log.error("catalog.error", error=error)
            self._checkpoint_error = error
        else:
            self.checkpoints += 1
            self._checkpoint_error = None

    def _take(self) -> tuple[Priority, list[Job]] | None:
        """The next batch: what waits at the highest priority that has work (None: stopped)."""
        with self._ready:
            while not any(self._queues):
                if self._stop_asked:  # everything queued before the stop has run
                    return None
                self._ready.wait()
            priority = next(p for p in Priority if self._queues[p])
            waiting = self._queues[priority]
            batch = [waiting.popleft() for _ in range(min(len(waiting), MAX_BATCH_JOBS))]
            self.busy_since = time.monotonic()
            return priority, batch

    def _more_urgent(self, priority: Priority) -> bool:
        """A job of higher priority than ``priority`` is waiting."""
        return any(self._queues[p] for p in Priority if p < priority)

    def _run(self) -> None:
        assert self.conn is not None
        conn = self.conn
        while True:
            taken = self._take()
            if taken is None:
                break
            priority, batch = taken
            rest = self._run_batch(conn, batch, priority)
            if rest:
                with self._ready:  # gave way: the rest goes first at its priority
                    self._queues[priority].extendleft(reversed(rest))
            self._checkpoint(conn)
            self.busy_since = None
        try:
            conn.close()
        except apsw.Error as exc:
            log.error("catalog.error", error=f"closing: {exc}", jobs=0)

    def _run_batch(
        self, conn: apsw.Connection, batch: list[Job], priority: Priority = Priority.LIVE
    ) -> list[Job]:
        """Run ``batch`` in one transaction; returns the jobs left for later (it gave way)."""
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        rest: list[Job] = []
        try:
            # IMMEDIATE: the write lock before the first read. A transaction
            # that has read gets SQLITE_BUSY at once when another connection
            # holds the lock (SQLite calls no busy handler then: waiting could
            # deadlock), so an admin's sqlite3 session failed such batches
            # instead of being waited for (the busy timeout).
            conn.execute("BEGIN IMMEDIATE")
            try:
                for index, (job, future) in enumerate(batch):
                    if index and self._more_urgent(priority):
                        rest = batch[index:]  # a more urgent job must not wait for these
                        break
                    if not future.set_running_or_notify_cancel():
                        continue
                    try:
                        with conn:  # a savepoint: a failing job rolls back alone
                            result = job(conn)
                    except apsw.FullError:
                        raise  # nothing in this transaction can commit
                    except Exception as exc:  # one bad job never stops the writer
                        outcomes.append((future, False, exc))
                    else:
                        outcomes.append((future, True, result))
                conn.execute("COMMIT")
            except BaseException:
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.failures += 1
            log.error("catalog.error", error=self.last_error, jobs=len(batch))
            for _, future in batch:
                if future.running():
                    future.set_exception(exc)
            return rest
        self.commits += 1
        self.last_error = None
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return rest
