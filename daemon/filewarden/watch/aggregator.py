"""The aggregator: orders a stream of hints into batches, and hands them to the planner.

It runs in its own thread. Whatever arrived while the writer was busy with
the previous batch becomes the next batch, so a storm costs a few large
transactions and a lone rename costs one small one, at once. A created file
is handed over ``CREATE_SETTLE`` after its creation, so a file being written
is recorded once, whole, and a temporary file created and then deleted or
renamed over another within that time (an editor's swap file, probe or
temporary copy) leaves no trace. A ``sync`` cookie flushes what waits and is
answered once the batch holding it is committed, or once the sweeps that
replace lost events have ended. Lost events, a watch limit and an unmount
go to the :class:`Host`.

Nothing here decides what a hint means: the :class:`Planner`
(:mod:`filewarden.live`) does, with the reconcile code a sweep uses, and
says what waits to settle (:class:`~filewarden.watch.hints.Settle`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Protocol

from filewarden import logs
from filewarden.roots import Root
from filewarden.watch.hints import Hint, Kind, Settle, is_cookie

log = logs.get("filewarden.watch")

CREATE_SETTLE = 1.0  # seconds from a file's creation to its recording (sync records it at once)
MAX_BATCH = 20_000  # hints per writer transaction


class Host(Protocol):
    """What the aggregator needs from the daemon."""

    def on_overflow(self, root: Root | None) -> list[threading.Event]: ...
    def on_watch_limit(self, root: Root, path: bytes) -> list[threading.Event]: ...
    def on_unmount(self, path: bytes) -> None: ...
    def on_hint_failed(self, root: Root, error: str) -> None: ...


class Batch(Protocol):
    """The decisions of one batch, for the roots it was opened with; all paths absolute."""

    def observe(self, path: bytes) -> Settle: ...
    def gone(self, path: bytes, *, directory: bool) -> Settle: ...
    def move(self, src: bytes, dest: bytes) -> Settle: ...
    def move_dir(self, src: bytes, dest: bytes) -> Settle: ...
    def dir_created(self, path: bytes) -> Settle: ...
    def scan(self, path: bytes) -> Settle: ...
    def commit(self) -> bool:
        """Write the decisions (one transaction); False when there were none."""
        ...


class Planner(Protocol):
    """What the aggregator needs to turn hints into catalog decisions."""

    def open(self) -> None:
        """Called in the aggregator's thread before the first batch."""
        ...

    def close(self) -> None: ...
    def batch(self, roots: list[Root]) -> Batch: ...


class Aggregator(threading.Thread):
    def __init__(
        self, host: Host, planner: Planner, watched_roots: Callable[[], list[Root]]
    ) -> None:
        super().__init__(name="filewarden-aggregator", daemon=True)
        self.host = host
        self.watched_roots = watched_roots
        self.planner = planner
        self._queue: collections.deque[Hint] = collections.deque()
        self._wake = threading.Condition()
        self._halt = threading.Event()
        self._pending: dict[
            bytes, float
        ] = {}  # created files waiting to settle: path → when to record them
        self._cookies: dict[bytes, threading.Event] = {}
        # Sweeps started because events were lost: no sync may answer before they end.
        self._barriers: list[threading.Event] = []
        self.hints = 0
        self.batches = 0
        self.last_progress = time.monotonic()

    # -- input (any thread) ------------------------------------------------------

    def put(self, hint: Hint) -> None:
        with self._wake:
            self._queue.append(hint)
            self._wake.notify()

    def expect_cookie(self, path: bytes, done: threading.Event) -> None:
        """``done`` is set once the creation of ``path`` and everything before it is committed."""
        with self._wake:
            self._cookies[path] = done

    def forget_cookie(self, path: bytes) -> None:
        with self._wake:
            self._cookies.pop(path, None)

    def stop(self, timeout: float = 3.0) -> None:
        self._halt.set()
        with self._wake:
            self._wake.notify()
        if self.is_alive():
            self.join(timeout)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        self.planner.open()
        try:
            while not self._halt.is_set():
                hints = self._take()
                self.last_progress = time.monotonic()
                if hints is None:
                    continue
                try:
                    self._process(hints)
                except Exception as exc:  # a bug here must not end live updates: sweep instead
                    log.exception("watcher.error", error=f"{type(exc).__name__}: {exc}")
                    for root in self.watched_roots():
                        self.host.on_hint_failed(root, f"aggregator: {type(exc).__name__}: {exc}")
        finally:
            self.planner.close()

    def _take(self) -> list[Hint] | None:
        with self._wake:
            while not self._queue and not self._halt.is_set():
                due = min(self._pending.values(), default=None)
                if due is not None and due <= time.monotonic():
                    return []  # settled creations to record
                self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
            if self._halt.is_set():
                return None
            count = min(len(self._queue), MAX_BATCH)
            return [self._queue.popleft() for _ in range(count)]

    def _process(self, hints: list[Hint]) -> None:
        self.hints += len(hints)
        roots = self.watched_roots()
        batch = self.planner.batch(roots)
        cookies: list[threading.Event] = []
        for hint in hints:
            self._route(hint, roots, batch, cookies)
        now = time.monotonic()
        for path, due in list(self._pending.items()):
            if due <= now:
                del self._pending[path]
                self._settle(batch.observe(path))
        if batch.commit():
            self.batches += 1
        self._barriers = [b for b in self._barriers if not b.is_set()]
        if cookies and self._barriers:
            threading.Thread(
                target=_release_after,
                args=(list(self._barriers), cookies),
                daemon=True,
                name="filewarden-sync-barrier",
            ).start()
        else:
            for done in cookies:
                done.set()

    def _take_cookies(self, prefix: bytes) -> list[threading.Event]:
        """Stop awaiting the events of the cookies under ``prefix``; their answers, to give."""
        with self._wake:
            taken = [c for c in self._cookies if c.startswith(prefix)]
            return [self._cookies.pop(c) for c in taken]

    def _route(
        self, hint: Hint, roots: list[Root], batch: Batch, cookies: list[threading.Event]
    ) -> None:
        kind, path, dest = hint
        if kind is Kind.OVERFLOW:
            root = next((r for r in roots if r.path == path), None)
            self._barriers += self.host.on_overflow(root)
            # Cookies whose events may be among the lost ones are answered by those
            # sweeps. Only this root's: one kernel queue serves every root, and each
            # hears of its overflow in turn, so another root's cookie waits for its
            # own overflow (and sweep), or its own event if that was not lost.
            cookies += self._take_cookies(root.path + b"/" if root is not None else b"")
            return
        if kind is Kind.LIMIT:
            under = next((r for r in roots if path.startswith(r.path + b"/")), None)
            if under is None:
                return  # not watched (any more): nothing changes
            self._barriers += self.host.on_watch_limit(under, path)
            # The root is polled now: its cookies are answered by the sweep.
            cookies += self._take_cookies(under.path + b"/")
            return
        if kind is Kind.UNMOUNT:
            self.host.on_unmount(path)
            return
        if is_cookie(path) or (dest and is_cookie(dest)):
            if kind is Kind.CREATED:
                with self._wake:
                    done = self._cookies.pop(path, None)
                if done is not None:
                    # Everything before the cookie must be in the catalog when sync answers.
                    for pending in list(self._pending):
                        del self._pending[pending]
                        self._settle(batch.observe(pending))
                    cookies.append(done)
            return
        if kind is Kind.CREATED:
            self._pending.setdefault(path, time.monotonic() + CREATE_SETTLE)
        elif kind is Kind.CLOSED or kind is Kind.ATTRIB:
            if path not in self._pending:  # a new file is recorded when it has settled
                self._settle(batch.observe(path))
        elif kind is Kind.DELETED:
            self._pending.pop(path, None)
            self._settle(batch.gone(path, directory=False))
        elif kind is Kind.DIR_DELETED:
            self._drop_pending_under(path)
            self._settle(batch.gone(path, directory=True))
        elif kind is Kind.MOVED:
            if path:
                self._pending.pop(path, None)
            self._settle(batch.move(path, dest))
        elif kind is Kind.DIR_MOVED:
            self._settle(batch.move_dir(path, dest))
        elif kind is Kind.DIR_CREATED:
            self._settle(batch.dir_created(path))
        elif kind is Kind.DIR_SCAN:
            self._settle(batch.scan(path))

    def _settle(self, change: Settle) -> None:
        """Apply what the planner said about creations waiting to settle."""
        for path in change.unpend:
            self._pending.pop(path, None)
        if change.pend:
            due = time.monotonic() + CREATE_SETTLE
            for path in change.pend:
                self._pending.setdefault(path, due)
        if change.moved is not None:
            src, dest = change.moved
            for path in self._drop_pending_under(src):
                if dest:
                    self._pending[dest + path[len(src) :]] = time.monotonic() + CREATE_SETTLE

    def _drop_pending_under(self, path: bytes) -> list[bytes]:
        prefix = path + b"/"
        dropped = [p for p in self._pending if p.startswith(prefix)]
        for p in dropped:
            del self._pending[p]
        return dropped


def _release_after(barriers: list[threading.Event], cookies: list[threading.Event]) -> None:
    """Answer the syncs once the sweeps that replace lost events have ended."""
    for barrier in barriers:
        barrier.wait()
    for done in cookies:
        done.set()
