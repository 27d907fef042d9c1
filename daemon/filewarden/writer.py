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

Two queues. Live work (events the watcher saw, writes asked for on the
socket) goes first; background work (sweep batches, hash results, relink
checks, retention) runs only when no live job waits, in transactions of
its own, and gives way between two of its jobs as soon as a live job
arrives: what is done so far is committed and the rest waits for the next
turn. A live job therefore waits at worst for the one background job that
is running, that transaction's commit and, when the log has crossed its
threshold, a checkpoint.
"""

from __future__ import annotations

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
MAX_BATCH_SECONDS = 0.25
CHECKPOINT_PAGES = 1000  # SQLite's own auto-checkpoint threshold
BACKGROUND_TURN_SECONDS = 1.0

Job = tuple[Callable[[apsw.Connection], Any], "Future[Any]"]


class WriterStopped(FilewardenError):
    """The writer is shutting down and takes no new jobs."""


class Writer:
    """Owns the write connection; everything that changes the catalog goes through it."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        # What the parts that hold the writer read through: each their own connection.
        self.catalog = catalog.Catalog(db_path)
        self._live: deque[Job] = deque()
        self._background: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="filewarden-writer", daemon=True)
        self._accepting = False
        self._stopping = False
        self._background_turn = 0.0  # when background work last ran, or began to wait
        self.conn: apsw.Connection | None = None
        # Liveness for the service watchdog: when the current batch started (None = idle).
        self.busy_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0  # batches that could not be committed, ever
        self.commits = 0
        self._wal_pages = 0  # frames in the write-ahead log after the last commit
        self.checkpoints = 0
        self._checkpoint_error: str | None = None
        # The journal's last seq once committed, and who is told when it moves
        # (the socket server wakes the clients waiting for changes): once per
        # commit, from this thread.
        self.seq = 0
        self._listeners: list[Callable[[int], None]] = []

    def start(self) -> None:
        """Open (and migrate) the catalog, then start taking jobs."""
        self.conn = catalog.connect(self.db_path)
        self.conn.set_wal_hook(self._after_commit)  # replaces SQLite's inline auto-checkpoint
        self.seq = catalog.last_seq(self.conn)
        self._accepting = True
        self._thread.start()

    def submit(self, job: Callable[[apsw.Connection], T], *, background: bool = False) -> Future[T]:
        """Queue ``job``; its Future resolves once its transaction is committed.

        ``background`` jobs run after every live job that is waiting.
        """
        future: Future[T] = Future()
        with self._wake:
            if not self._accepting:
                raise WriterStopped("the catalog writer is stopping")
            if background and not self._background:
                self._background_turn = time.monotonic()
            (self._background if background else self._live).append((job, future))
            self._wake.notify()
        return future

    def call(
        self,
        job: Callable[[apsw.Connection], T],
        timeout: float | None = None,
        *,
        background: bool = False,
    ) -> T:
        """Run ``job`` in the writer and wait for its committed result."""
        return self.submit(job, background=background).result(timeout)

    def listen(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seq)`` after each commit that moved the journal (writer thread;
        it must not block)."""
        self._listeners.append(listener)

    def waiting(self) -> tuple[int, int]:
        """How many ``(live, background)`` jobs are queued."""
        return len(self._live), len(self._background)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, deadline: float) -> None:
        """Take no new jobs, run what is queued until ``deadline``, then close."""
        with self._wake:
            self._accepting = False
            self._stopping = True
            self._wake.notify()
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
        while True:
            with self._wake:
                while not (self._live or self._background or self._stopping):
                    self._wake.wait()
                # What was queued before the stop still runs; then the thread ends.
                if not (self._live or self._background):
                    break
                batch, background = self._take()
            started = time.monotonic()
            self.busy_since = started
            self._run_batch(conn, batch, background)
            self._checkpoint(conn)
            self.busy_since = None
        try:
            conn.close()
        except apsw.Error as exc:
            log.error("catalog.error", error=f"closing: {exc}", jobs=0)

    def _take(self) -> tuple[list[Job], bool]:
        """The next batch (lock held): the live jobs if any wait, else the background ones.

        Either way no more than a batch: a steady stream must still commit
        regularly. A live stream that never pauses still lets background work
        through once every ``BACKGROUND_TURN_SECONDS``, or a storm would hold
        up the sweep that is the source of truth.
        """
        now = time.monotonic()
        turn = self._background and now - self._background_turn > BACKGROUND_TURN_SECONDS
        source = self._background if turn else self._live or self._background
        if source is self._background:
            self._background_turn = now
        batch = [source.popleft() for _ in range(min(len(source), MAX_BATCH_JOBS))]
        return batch, source is self._background

    def _put_back(self, rest: list[Job], background: bool) -> None:
        """Put jobs not started back at the head of their queue, in their order."""
        with self._lock:
            (self._background if background else self._live).extendleft(reversed(rest))

    def _run_batch(self, conn: apsw.Connection, batch: list[Job], background: bool) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        started = time.monotonic()
        try:
            # IMMEDIATE: the write lock before the first read. A transaction
            # that has read gets SQLITE_BUSY at once when another connection
            # holds the lock (SQLite calls no busy handler then: waiting could
            # deadlock), so an admin's sqlite3 session failed such batches
            # instead of being waited for (the busy timeout).
            conn.execute("BEGIN IMMEDIATE")
            try:
                for index, (job, future) in enumerate(batch):
                    if index and (
                        (background and self._live)
                        or time.monotonic() - started > MAX_BATCH_SECONDS
                    ):
                        self._put_back(batch[index:], background)
                        del batch[index:]  # what failing rolls back: the jobs run
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
            return
        self.commits += 1
        self.last_error = None
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        seq = catalog.last_seq(conn)
        if seq != self.seq:
            self.seq = seq
            for listener in self._listeners:
                try:
                    listener(seq)
                except Exception as exc:  # a listener's bug never stops the writer
                    log.error("catalog.error", error=f"listener: {type(exc).__name__}: {exc}")
