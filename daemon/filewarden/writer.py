"""The one thread that writes the catalog.

Jobs are functions of the write connection. The thread takes what is queued
(up to a batch), runs each job in its own savepoint inside one transaction
and commits once, so a burst of small live updates costs one fsync while a
failing job rolls back only itself. Callers get a Future that resolves after
the commit, so an answer never reports data that is not yet durable.

Checkpoints (copying the write-ahead log back into the database, with its
fsyncs) run after a batch's callers have their answers, before the next
batch: SQLite would otherwise run them inside the commit that crosses its
threshold, and that commit, with everyone waiting on it, would take three
times as long. Done before the next transaction, a checkpoint still lets the
log restart from its beginning, so it stays small under a steady stream.
"""

from __future__ import annotations

import queue
import threading
import time
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
MAX_BATCH_SECONDS = 0.25
CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint threshold


class WriterStopped(FilewardenError):
    """The writer is shutting down and takes no new jobs."""


class Writer:
    """Owns the write connection; everything that changes the catalog goes through it."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        # What the parts that hold the writer read through: each their own connection.
        self.catalog = catalog.Catalog(db_path)
        self._queue: queue.SimpleQueue[tuple[Callable[[apsw.Connection], Any], Future[Any]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="filewarden-writer", daemon=True)
        self._accepting = False
        self._lock = threading.Lock()
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

    def submit(self, job: Callable[[apsw.Connection], T]) -> Future[T]:
        """Queue ``job``; its Future resolves once its transaction is committed."""
        future: Future[T] = Future()
        with self._lock:
            if not self._accepting:
                raise WriterStopped("the catalog writer is stopping")
            self._queue.put((job, future))
        return future

    def call(self, job: Callable[[apsw.Connection], T], timeout: float | None = None) -> T:
        """Run ``job`` in the writer and wait for its committed result."""
        return self.submit(job).result(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, deadline: float) -> None:
        """Take no new jobs, run what is queued until ``deadline``, then close."""
        with self._lock:
            self._accepting = False
            self._queue.put(None)
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

    def _run(self) -> None:
        assert self.conn is not None
        conn = self.conn
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            started = time.monotonic()
            self.busy_since = started
            # Take more queued jobs into the same transaction, but not forever:
            # a steady stream must still commit regularly.
            while len(batch) < MAX_BATCH_JOBS and time.monotonic() - started < MAX_BATCH_SECONDS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._run_batch(conn, batch)
            self._checkpoint(conn)
            self.busy_since = None
        # Jobs that raced the stop marker are refused, not left hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].set_exception(WriterStopped("the catalog writer stopped"))
        try:
            conn.close()
        except apsw.Error as exc:
            log.error("catalog.error", error=f"closing: {exc}", jobs=0)

    def _run_batch(
        self,
        conn: apsw.Connection,
        batch: list[tuple[Callable[[apsw.Connection], Any], Future[Any]]],
    ) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            # IMMEDIATE: the write lock before the first read. A transaction
            # that has read gets SQLITE_BUSY at once when another connection
            # holds the lock (SQLite calls no busy handler then: waiting could
            # deadlock), so an admin's sqlite3 session failed such batches
            # instead of being waited for (the busy timeout).
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job, future in batch:
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
            return
        self.commits += 1
        self.last_error = None
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
