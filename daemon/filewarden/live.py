"""The live planner: what the watcher's hints mean for the catalog.

The aggregator (:mod:`filewarden.watch.aggregator`) orders hints and times
them; this module decides, for one batch of them, what each means: a path
is stated (:func:`filewarden.listing.stat_regular`) and handed to the same
reconcile code a sweep uses, through the writer, one transaction a batch and
one savepoint a decision. A new path is first matched by ``(device, inode)``
against known files (:func:`identity.by_inode`), so a move the watcher saw
only half of (between two roots, into a directory not watched yet, or from a
moment it was not watching) keeps the file's id; an editor that moves a file
aside to save it keeps it too (:class:`identity.Saves`). What waits to settle
stays the aggregator's: the planner says what to change there
(:class:`~filewarden.watch.hints.Settle`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import apsw

from filewarden import catalog, identity, logs, reconcile
from filewarden.catalog import Signature
from filewarden.listing import Tally, list_dir, resolve, stat_regular
from filewarden.roots import Root, RootSet
from filewarden.watch.hints import Settle
from filewarden.writer import Writer

log = logs.get("filewarden.watch")

# How long, and how many, new directories are remembered as where a move
# that looks like a move out of the tree may have gone.
NEW_DIR_MEMORY = 60.0
NEW_DIR_MAX = 10_000

NOTHING = Settle()

Action = Callable[[apsw.Connection], Any]


class Host(Protocol):
    """What the planner tells the daemon."""

    def after_batch(self, reader: apsw.Connection) -> None: ...
    def on_hint_failed(self, root: Root, error: str) -> None: ...


class Planner:
    """What outlives a batch: the read connection, editors' saves, new directories.

    Used from the aggregator's thread only.
    """

    def __init__(self, host: Host, writer: Writer, roots: RootSet) -> None:
        self.host = host
        self.writer = writer
        self.roots = roots
        self.reader: apsw.Connection | None = None
        self.saves = identity.Saves()
        # Directories made a moment ago, newest last: path → when.
        self.new_dirs: dict[bytes, float] = {}

    def open(self) -> None:
        self.reader = self.writer.catalog.reader()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def batch(self, roots: list[Root]) -> Batch:
        assert self.reader is not None, "open() first"
        return Batch(self, self.reader, roots)

    def new_dir(self, path: bytes) -> None:
        now = time.monotonic()
        self.new_dirs.pop(path, None)
        self.new_dirs[path] = now
        while self.new_dirs:
            oldest, when = next(iter(self.new_dirs.items()))
            if now - when <= NEW_DIR_MEMORY and len(self.new_dirs) <= NEW_DIR_MAX:
                break
            del self.new_dirs[oldest]


@dataclass
class _Seen:
    """Files seen in one directory, to record together (:func:`reconcile.observe_new`)."""

    root: Root
    dir: bytes
    seen: list[tuple[bytes, Signature]]
    now: float

    def __call__(self, conn: apsw.Connection) -> None:
        reconcile.observe_new(conn, self.root, self.dir, self.seen, self.now)


class Batch:
    """The decisions planned from one batch of hints, for the watched ``roots``."""

    def __init__(self, planner: Planner, reader: apsw.Connection, roots: list[Root]) -> None:
        self.planner = planner
        self.host = planner.host
        self.reader = reader
        self.roots = roots
        self.actions: list[tuple[Root, Action]] = []

    # -- what a hint means ---------------------------------------------------------

    def observe(self, path: bytes) -> Settle:
        """Record what is at ``path`` now: new (or moved, matched by inode), changed, or gone."""
        where = resolve(path, self.roots)
        if where is None:
            return NOTHING
        root, rel = where
        sig = stat_regular(path)
        if sig is not None:
            saved = self._save(path, None, root)
            if saved is not None:
                return saved
            here = catalog.file_at(self.reader, root.id, rel)
            if here is None or here.state != catalog.PRESENT:
                # Same path first: a missing file recorded here is back, whatever
                # its inode now, unless inode and content prove another known
                # file moved in.
                found = identity.by_inode(
                    self.reader,
                    sig,
                    self.planner.roots.snapshot(),
                    path,
                    over_path=here is not None,
                )
                if found is not None and here is not None and found[0].id == here.id:
                    found = None  # the missing file itself is back
                if found is not None:
                    row, src_root = found
                    self._plan(
                        root,
                        reconcile.apply_move,
                        src=src_root,
                        src_rel=row.path,
                        dst=root,
                        dst_rel=rel,
                        sig=sig,
                        now=time.time(),
                        matched=row,
                        by="inode",
                        roots=self.planner.roots.snapshot(),
                    )
                    return NOTHING
            self._seen(root, rel, sig)
            return NOTHING
        self._plan(
            root,
            reconcile.observe_path,
            root=root,
            rel=rel,
            sig=None,
            now=time.time(),
            reason="deleted",
        )
        return NOTHING

    def gone(self, path: bytes, *, directory: bool, reason: str = "deleted") -> Settle:
        where = resolve(path, self.roots)
        if where is None:
            return NOTHING
        root, rel = where
        if not directory and stat_regular(path) is not None:
            # Already made again (a swap file recreated, a save): recorded
            # once settled, like any creation, or at once by a sync.
            return Settle(pend=(path,))
        if directory and os.path.isdir(path):
            return NOTHING
        if not directory:
            saved = self._save(path, path, root)
            if saved is not None:
                return saved
        self._plan(root, reconcile.gone_under, root=root, rel=rel, reason=reason, now=time.time())
        return NOTHING

    def move(self, src: bytes, dest: bytes) -> Settle:
        if src and not dest:
            dest = self._moved_into_new_dir(src, directory=False) or b""
        from_ = resolve(src, self.roots) if src else None
        to = resolve(dest, self.roots) if dest else None
        if from_ is not None and to is not None:
            (src_root, src_rel), (dst_root, dst_rel) = from_, to
            self.planner.saves.moved(src, dest, time.time())
            self._plan(
                dst_root,
                reconcile.apply_move,
                src=src_root,
                src_rel=src_rel,
                dst=dst_root,
                dst_rel=dst_rel,
                sig=stat_regular(dest),
                now=time.time(),
                roots=self.planner.roots.snapshot(),
            )
        elif from_ is not None:
            return self.gone(src, directory=False, reason="moved_out")
        elif to is not None:
            return self.observe(dest)
        return NOTHING

    def move_dir(self, src: bytes, dest: bytes) -> Settle:
        if src and not dest:
            dest = self._moved_into_new_dir(src, directory=True) or b""
        from_ = resolve(src, self.roots) if src else None
        to = resolve(dest, self.roots) if dest else None
        if from_ is not None and to is not None:
            (src_root, src_rel), (dst_root, dst_rel) = from_, to
            self._plan(
                dst_root,
                reconcile.apply_move_dir,
                src=src_root,
                src_rel=src_rel,
                dst=dst_root,
                dst_rel=dst_rel,
                now=time.time(),
            )
        elif from_ is not None:
            self.gone(src, directory=True, reason="moved_out")
        # Moved in from outside: the backend reports (or asks us to scan) its contents.
        return Settle(moved=(src, dest)) if src else NOTHING

    def dir_created(self, path: bytes) -> Settle:
        self.planner.new_dir(path)
        return self.scan(path)

    def scan(self, path: bytes) -> Settle:
        """List a directory that appeared, and everything below it: each file is recorded once settled."""
        where = resolve(path, self.roots)
        if where is None:
            return NOTHING
        root, rel = where
        found: list[bytes] = []
        stack = [rel]
        while stack:
            current = stack.pop()
            try:
                _, files, subdirs = list_dir(root, current, Tally())
            except OSError:
                continue
            found += [root.abs(catalog.join(current, name)) for name in files]
            stack.extend(catalog.join(current, d) for d in subdirs)
        return Settle(pend=tuple(found))

    # -- helpers -----------------------------------------------------------------------

    def _plan(self, root: Root, decide: Callable[..., Any], /, **args: Any) -> None:
        """Plan ``decide(conn, **args)``; if it fails, ``root`` is swept instead."""
        self.actions.append((root, partial(decide, **args)))

    def _seen(self, root: Root, rel: bytes, sig: Signature) -> None:
        """Plan recording a file seen at ``rel``: with the files seen just before it in the
        same directory, if that was the last thing planned (a create storm: one insert)."""
        dir, name = catalog.split(rel)
        if self.actions:
            last = self.actions[-1][1]
            if isinstance(last, _Seen) and last.root is root and last.dir == dir:
                last.seen.append((name, sig))
                return
        self.actions.append((root, _Seen(root, dir, [(name, sig)], time.time())))

    def _save(self, path: bytes, backup: bytes | None, root: Root) -> Settle | None:
        """An editor's save: a new file at ``path`` after the file there was moved aside
        (``backup`` None), or the moved-aside file at ``backup`` deleted. None if not one."""
        saves = self.planner.saves
        now = time.time()
        if backup is None:
            got = saves.backup_of(path, now)
            if got is None:
                return None
            backup, since = got
            home, keep = path, True
        else:
            back = saves.home_of(backup, now)
            if back is None:
                return None
            home, since = back
            keep = False
            if stat_regular(home) is None:
                return None  # nothing written in its place (yet): a plain delete
        saves.done(home)
        self._plan(
            root,
            reconcile.save_back,
            root=root,
            backup=backup[len(root.path) + 1 :],
            home=home[len(root.path) + 1 :],
            now=now,
            since=since,
            keep_backup=keep and stat_regular(backup) is not None,
            roots=self.planner.roots.snapshot(),
        )
        return Settle(unpend=(home,))

    def _moved_into_new_dir(self, src: bytes, *, directory: bool) -> bytes | None:
        """Where ``src`` went, when a move-out has no destination: a directory made a moment ago.

        The kernel reports a move into a directory that is not watched yet
        (made just before, its watch still being added) as a move out of the
        tree. Such a directory is listed once watched, but the move must not
        be taken as a move out meanwhile: the known file (for a directory,
        one known file below it) is looked for under each new directory, by
        its name and inode.
        """
        where = resolve(src, self.roots)
        new_dirs = self.planner.new_dirs
        if where is None or not new_dirs:
            return None
        root, rel = where
        suffix = b""
        if directory:
            below = catalog.present_ids_under(self.reader, root.id, rel)
            if not below:
                return None
            file_id, dir, name = below[0]
            row = catalog.get_file(self.reader, file_id)
            suffix = b"/" + catalog.join(dir, name)[len(rel) + 1 :]
        else:
            row = catalog.file_at(self.reader, root.id, rel)
        if row is None or row.state != catalog.PRESENT:
            return None
        base = src.rpartition(b"/")[2]
        for new_dir in reversed(new_dirs):
            candidate = new_dir + b"/" + base
            try:
                st = os.lstat(candidate + suffix)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (row.device, row.inode):
                return candidate
        return None

    # -- the commit --------------------------------------------------------------------

    def commit(self) -> bool:
        """Write the planned decisions in one transaction, each in its own savepoint.

        A decision that fails rolls back alone and is reported (its root gets
        a sweep); a full disk fails the whole batch. False when nothing was planned.
        """
        if not self.actions:
            return False
        failed: list[tuple[Root, str]] = []
        actions = self.actions

        def job(conn: apsw.Connection) -> None:
            for root, action in actions:
                try:
                    with conn:  # one savepoint each: a failing decision rolls back alone
                        action(conn)
                except apsw.FullError:
                    raise
                except Exception as exc:
                    failed.append((root, f"{type(exc).__name__}: {exc}"))

        self.planner.writer.call(job)
        self.host.after_batch(self.reader)
        for root, error in failed:
            log.warning("watcher.error", root=root.display, error=error)
            self.host.on_hint_failed(root, error)
        return True
