"""The aggregator: turns a stream of hints into batches of catalog decisions.

It runs in its own thread. Whatever arrived while the writer was busy with
the previous batch becomes the next batch, so a storm costs a few large
transactions and a lone rename costs one small one, at once. A created file
is recorded ``CREATE_SETTLE`` after its creation, so a file being written is
recorded once, whole, and a temporary file created and then deleted or
renamed over another within that time (an editor's swap file, probe or
temporary copy) leaves no trace. A new path is first matched by ``(device,
inode)`` against known files (:func:`identity.by_inode`), so a move the
watcher saw only half of (between two roots, into a directory not watched
yet, or from a moment it was not watching) keeps the file's id; an editor
that moves a file aside to save it keeps it too (:class:`identity.Saves`).

Nothing here writes the catalog: it stats paths and asks
:mod:`filewarden.reconcile` through the writer.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import apsw

from filewarden import catalog, identity, listing, logs, reconcile
from filewarden.listing import Tally, list_dir, stat_regular
from filewarden.roots import Root
from filewarden.watch.hints import Hint, Kind, is_cookie
from filewarden.writer import Writer

log = logs.get("filewarden.watch")

CREATE_SETTLE = 1.0  # seconds from a file's creation to its recording (sync records it at once)
MAX_BATCH = 20_000  # hints per writer transaction
# How long, and how many, new directories are remembered as where a move
# that looks like a move out of the tree may have gone.
NEW_DIR_MEMORY = 60.0
NEW_DIR_MAX = 10_000


class Host(Protocol):
    """What the aggregator needs from the daemon."""

    writer: Writer

    def watched_roots(self) -> list[Root]: ...
    def all_roots(self) -> dict[int, Root]: ...
    def after_batch(self, reader: apsw.Connection) -> None: ...
    def on_overflow(self, root: Root | None) -> list[threading.Event]: ...
    def on_watch_limit(self, root: Root, path: bytes) -> list[threading.Event]: ...
    def on_unmount(self, path: bytes) -> None: ...
    def on_hint_failed(self, root: Root, error: str) -> None: ...


Action = Callable[[apsw.Connection], Any]


@dataclass
class _Batch:
    actions: list[tuple[Root, Action]] = field(default_factory=list)
    cookies: list[threading.Event] = field(default_factory=list)


class Aggregator(threading.Thread):
    def __init__(self, host: Host, db_path: os.PathLike[str] | str) -> None:
        super().__init__(name="filewarden-aggregator", daemon=True)
        self.host = host
        self.db_path = db_path
        self._queue: collections.deque[Hint] = collections.deque()
        self._wake = threading.Condition()
        self._halt = threading.Event()
        self._pending: dict[
            bytes, float
        ] = {}  # created files waiting to settle: path → when to record them
        self._cookies: dict[bytes, threading.Event] = {}
        # Directories made a moment ago, newest last: path → when.
        self._new_dirs: dict[bytes, float] = {}
        self._saves = identity.Saves()
        # Sweeps started because events were lost: no sync may answer before they end.
        self._barriers: list[threading.Event] = []
        self._reader: apsw.Connection | None = None
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
        self._reader = catalog.connect(self.db_path, readonly=True)  # type: ignore[arg-type]
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
                    for root in self.host.watched_roots():
                        self.host.on_hint_failed(root, f"aggregator: {type(exc).__name__}: {exc}")
        finally:
            self._reader.close()

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
        roots = self.host.watched_roots()
        batch = _Batch()
        for hint in hints:
            self._plan(hint, roots, batch)
        now = time.monotonic()
        for path, due in list(self._pending.items()):
            if due <= now:
                del self._pending[path]
                self._observe(path, roots, batch)
        if batch.actions:
            self._commit(batch)
        self._barriers = [b for b in self._barriers if not b.is_set()]
        if batch.cookies and self._barriers:
            barriers, cookies = list(self._barriers), list(batch.cookies)
            threading.Thread(
                target=_release_after,
                args=(barriers, cookies),
                daemon=True,
                name="filewarden-sync-barrier",
            ).start()
        else:
            for done in batch.cookies:
                done.set()

    def _commit(self, batch: _Batch) -> None:
        failed: list[tuple[Root, str]] = []
        actions = batch.actions

        def job(conn: apsw.Connection) -> None:
            for root, action in actions:
                try:
                    with conn:  # one savepoint each: a failing decision rolls back alone
                        action(conn)
                except apsw.FullError:
                    raise
                except Exception as exc:
                    failed.append((root, f"{type(exc).__name__}: {exc}"))

        self.host.writer.call(job)
        self.batches += 1
        if self._reader is not None:
            self.host.after_batch(self._reader)
        for root, error in failed:
            log.warning("watcher.error", root=root.display, error=error)
            self.host.on_hint_failed(root, error)

    # -- planning: from hints to decisions ----------------------------------------------

    def _plan(self, hint: Hint, roots: list[Root], batch: _Batch) -> None:
        kind, path, dest = hint
        if kind is Kind.OVERFLOW:
            self._barriers += self.host.on_overflow(
                next((r for r in roots if r.path == path), None)
            )
            # Cookies whose events may be among the lost ones are answered by those sweeps.
            with self._wake:
                lost, self._cookies = list(self._cookies.values()), {}
            batch.cookies += lost
            return
        if kind is Kind.LIMIT:
            under = next((r for r in roots if path.startswith(r.path + b"/")), None)
            if under is None:
                return  # not watched (any more): nothing changes
            self._barriers += self.host.on_watch_limit(under, path)
            # The root is polled now: its cookies are answered by the sweep.
            prefix = under.path + b"/"
            with self._wake:
                polled = [c for c in self._cookies if c.startswith(prefix)]
                batch.cookies += [self._cookies.pop(c) for c in polled]
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
                        self._observe(pending, roots, batch)
                    batch.cookies.append(done)
            return
        if kind is Kind.CREATED:
            self._pending.setdefault(path, time.monotonic() + CREATE_SETTLE)
        elif kind is Kind.CLOSED or kind is Kind.ATTRIB:
            if path not in self._pending:  # a new file is recorded when it has settled
                self._observe(path, roots, batch)
        elif kind is Kind.DELETED:
            self._pending.pop(path, None)
            self._gone(path, roots, batch, "deleted", directory=False)
        elif kind is Kind.DIR_DELETED:
            self._drop_pending_under(path)
            self._gone(path, roots, batch, "deleted", directory=True)
        elif kind is Kind.MOVED:
            self._move(path, dest, roots, batch)
        elif kind is Kind.DIR_MOVED:
            self._move_dir(path, dest, roots, batch)
        elif kind is Kind.DIR_CREATED:
            self._new_dir(path)
            self._scan(path, roots)
        elif kind is Kind.DIR_SCAN:
            self._scan(path, roots)

    def _new_dir(self, path: bytes) -> None:
        now = time.monotonic()
        self._new_dirs.pop(path, None)
        self._new_dirs[path] = now
        while self._new_dirs:
            oldest, when = next(iter(self._new_dirs.items()))
            if now - when <= NEW_DIR_MEMORY and len(self._new_dirs) <= NEW_DIR_MAX:
                break
            del self._new_dirs[oldest]

    def _drop_pending_under(self, path: bytes) -> list[bytes]:
        prefix = path + b"/"
        dropped = [p for p in self._pending if p.startswith(prefix)]
        for p in dropped:
            del self._pending[p]
        return dropped

    def _observe(self, path: bytes, roots: list[Root], batch: _Batch) -> None:
        """Record what is at ``path`` now: new (or moved, matched by inode), changed, or gone."""
        where = listing.resolve(path, roots)
        if where is None:
            return
        root, rel = where
        sig = stat_regular(path)
        if sig is not None and self._save(path, None, root, rel, batch):
            return
        here = (
            catalog.file_at(self._reader, root.id, rel)
            if sig is not None and self._reader is not None
            else None
        )
        if (
            sig is not None
            and self._reader is not None
            and (here is None or here.state != catalog.PRESENT)
        ):
            # Same path first: a missing file recorded here is back, whatever
            # its inode now, unless inode and content prove another known
            # file moved in.
            found = identity.by_inode(
                self._reader, sig, self.host.all_roots(), path, over_path=here is not None
            )
            if found is not None and here is not None and found[0].id == here.id:
                found = None  # the missing file itself is back
            if found is not None:
                row, src_root = found
                batch.actions.append(
                    (
                        root,
                        partial(
                            reconcile.apply_move,
                            src=src_root,
                            src_rel=row.path,
                            dst=root,
                            dst_rel=rel,
                            sig=sig,
                            now=time.time(),
                            matched=row,
                            by="inode",
                            roots=self.host.all_roots(),
                        ),
                    )
                )
                return
        batch.actions.append(
            (
                root,
                partial(
                    reconcile.observe_path,
                    root=root,
                    rel=rel,
                    sig=sig,
                    now=time.time(),
                    reason="deleted",
                ),
            )
        )

    def _save(
        self, path: bytes, backup: bytes | None, root: Root, rel: bytes, batch: _Batch
    ) -> bool:
        """An editor's save: a new file at ``path`` after the file there was moved aside
        (``backup`` None), or the moved-aside file at ``backup`` deleted. True if planned."""
        now = time.time()
        if backup is None:
            got = self._saves.backup_of(path, now)
            if got is None:
                return False
            backup, since = got
            home, keep = path, True
        else:
            back = self._saves.home_of(backup, now)
            if back is None:
                return False
            home, since = back
            keep = False
            if stat_regular(home) is None:
                return False  # nothing written in its place (yet): a plain delete
        self._saves.done(home)
        self._pending.pop(home, None)
        batch.actions.append(
            (
                root,
                partial(
                    reconcile.save_back,
                    root=root,
                    backup=backup[len(root.path) + 1 :],
                    home=home[len(root.path) + 1 :],
                    now=now,
                    since=since,
                    keep_backup=keep and stat_regular(backup) is not None,
                    roots=self.host.all_roots(),
                ),
            )
        )
        return True

    def _gone(
        self, path: bytes, roots: list[Root], batch: _Batch, reason: str, *, directory: bool
    ) -> None:
        where = listing.resolve(path, roots)
        if where is None:
            return
        root, rel = where
        if not directory and stat_regular(path) is not None:
            # Already made again (a swap file recreated, a save): recorded
            # once settled, like any creation, or at once by a sync.
            self._pending.setdefault(path, time.monotonic() + CREATE_SETTLE)
            return
        if directory and os.path.isdir(path):
            return
        if not directory and self._save(path, path, root, rel, batch):
            return
        batch.actions.append(
            (
                root,
                partial(reconcile.gone_under, root=root, rel=rel, reason=reason, now=time.time()),
            )
        )

    def _move(self, src: bytes, dest: bytes, roots: list[Root], batch: _Batch) -> None:
        if src:
            self._pending.pop(src, None)
        if src and not dest:
            dest = self._moved_into_new_dir(src, roots, directory=False) or b""
        from_ = listing.resolve(src, roots) if src else None
        to = listing.resolve(dest, roots) if dest else None
        if from_ is not None and to is not None:
            (src_root, src_rel), (dst_root, dst_rel) = from_, to
            self._saves.moved(src, dest, time.time())
            batch.actions.append(
                (
                    dst_root,
                    partial(
                        reconcile.apply_move,
                        src=src_root,
                        src_rel=src_rel,
                        dst=dst_root,
                        dst_rel=dst_rel,
                        sig=stat_regular(dest),
                        now=time.time(),
                        roots=self.host.all_roots(),
                    ),
                )
            )
        elif from_ is not None:
            self._gone(src, roots, batch, "moved_out", directory=False)
        elif to is not None:
            self._observe(dest, roots, batch)

    def _moved_into_new_dir(
        self, src: bytes, roots: list[Root], *, directory: bool
    ) -> bytes | None:
        """Where ``src`` went, when a move-out has no destination: a directory made a moment ago.

        The kernel reports a move into a directory that is not watched yet
        (made just before, its watch still being added) as a move out of the
        tree. Such a directory is listed once watched, but the move must not
        be taken as a move out meanwhile: the known file (for a directory,
        one known file below it) is looked for under each new directory, by
        its name and inode.
        """
        where = listing.resolve(src, roots)
        if where is None or not self._new_dirs or self._reader is None:
            return None
        root, rel = where
        suffix = b""
        if directory:
            below = catalog.present_ids_under(self._reader, root.id, rel)
            if not below:
                return None
            file_id, dir, name = below[0]
            row = catalog.get_file(self._reader, file_id)
            suffix = b"/" + catalog.join(dir, name)[len(rel) + 1 :]
        else:
            row = catalog.file_at(self._reader, root.id, rel)
        if row is None or row.state != catalog.PRESENT:
            return None
        base = src.rpartition(b"/")[2]
        for new_dir in reversed(self._new_dirs):
            candidate = new_dir + b"/" + base
            try:
                st = os.lstat(candidate + suffix)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (row.device, row.inode):
                return candidate
        return None

    def _move_dir(self, src: bytes, dest: bytes, roots: list[Root], batch: _Batch) -> None:
        if src and not dest:
            dest = self._moved_into_new_dir(src, roots, directory=True) or b""
        if src:
            for path in self._drop_pending_under(src):
                if dest:
                    self._pending[dest + path[len(src) :]] = time.monotonic() + CREATE_SETTLE
        from_ = listing.resolve(src, roots) if src else None
        to = listing.resolve(dest, roots) if dest else None
        if from_ is not None and to is not None:
            (src_root, src_rel), (dst_root, dst_rel) = from_, to
            batch.actions.append(
                (
                    dst_root,
                    partial(
                        reconcile.apply_move_dir,
                        src=src_root,
                        src_rel=src_rel,
                        dst=dst_root,
                        dst_rel=dst_rel,
                        now=time.time(),
                    ),
                )
            )
        elif from_ is not None:
            self._gone(src, roots, batch, "moved_out", directory=True)
        # Moved in from outside: the backend reports (or asks us to scan) its contents.

    def _scan(self, path: bytes, roots: list[Root]) -> None:
        """List a directory that appeared, and everything below it: each file is recorded once settled."""
        where = listing.resolve(path, roots)
        if where is None:
            return
        root, rel = where
        due = time.monotonic() + CREATE_SETTLE
        stack = [rel]
        while stack:
            current = stack.pop()
            try:
                _, files, subdirs = list_dir(root, current, Tally())
            except OSError:
                continue
            for name in files:
                self._pending.setdefault(root.abs(catalog.join(current, name)), due)
            stack.extend(catalog.join(current, d) for d in subdirs)


def _release_after(barriers: list[threading.Event], cookies: list[threading.Event]) -> None:
    """Answer the syncs once the sweeps that replace lost events have ended."""
    for barrier in barriers:
        barrier.wait()
    for done in cookies:
        done.set()
