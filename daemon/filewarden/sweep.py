"""Sweeps: walk a root and bring the catalog in line with what is on disk.

A **full** sweep lists every directory and stats every file. A **quick**
sweep stats only directories and re-lists those whose ``(mtime, ctime,
inode)`` differ from their last listing, like ``updatedb``: it finds
creations, deletions and renames, not edits in place.

The sweep thread walks and compares each directory's listing with the
catalog through its own read connection; only differences go to the writer
thread, so an unchanged tree costs no writes at all. Everything in flight is
bounded: one directory listed at a time and a few batches handed over.

Files the listings no longer show are collected as ids and marked missing
only at the end, after each is checked again on disk and the root is checked
again: a disk that vanishes mid-sweep must not commit "missing".
"""

from __future__ import annotations

import array
import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Protocol

import apsw

from filewarden import catalog, identity, logs, reconcile
from filewarden.errors import Fault, classify
from filewarden.identity import Relinker
from filewarden.listing import Tally, stat_regular
from filewarden.reconcile import DirDiff
from filewarden.roots import Root
from filewarden.walk import RACY_NS, SweepAborted, Walker, WalkProcess
from filewarden.writer import Writer

log = logs.get("filewarden.sweep")

BATCHES_IN_FLIGHT = 4  # handed to the writer and not yet committed
CONFIRM_CHUNK = 1000


class Progress(Protocol):
    """Where a sweep reports how far it is (a :class:`filewarden.jobs.Job`)."""

    done: int  # files listed
    total: int | None  # files expected; None on a first index
    kind: str


@dataclasses.dataclass
class _Progress:
    done: int = 0
    total: int | None = None
    kind: str = ""


class Sweep:
    """One sweep of one root; create, then :meth:`run` in a worker thread."""

    def __init__(
        self,
        root: Root,
        writer: Writer,
        *,
        full: bool,
        stop: threading.Event,
        batch_files: int = 5000,
        root_ok: Callable[[Root], str | None] | None = None,
        progress: Progress | None = None,
        racy_ns: int = RACY_NS,
        roots: dict[int, Root] | None = None,
        relinker: Relinker | None = None,
        away: WalkProcess | None = None,
    ) -> None:
        self.root = root
        self.away = away  # where a big full walk goes on (see filewarden.walk)
        self.roots = roots if roots is not None else {root.id: root}
        self.relinker = relinker
        self.racy_ns = racy_ns
        self.writer = writer
        self.full = full
        self.stop = stop
        self.batch_files = batch_files
        # None when the root is usable, else why not.
        self.root_ok = root_ok or (
            lambda r: None if os.path.isdir(r.path) else "root is not a directory"
        )
        self.progress: Progress = progress or _Progress()
        self.tally = Tally()
        self._gone = array.array("q")
        self._vanished: list[bytes] = []  # directories gone: forgotten once their files are missing
        self._pending: deque[Future[tuple[Tally, list[int]]]] = deque()
        self._batch: list[DirDiff] = []
        self._batch_size = 0

    @property
    def kind(self) -> str:
        return "full" if self.full else "quick"

    def run(self) -> Tally:
        """Walk, compare, hand over, then confirm what is missing. Raises SweepAborted."""
        reader = self.writer.catalog.reader(cache_kib=catalog.WRITER_CACHE_KIB)
        try:
            return self._run(reader)
        finally:
            reader.close()

    def _run(self, reader: apsw.Connection) -> Tally:
        row = catalog.get_root(reader, self.root.id)
        assert row is not None, "the root is registered before it is swept"
        first_index = row.last_full_sweep is None
        if first_index:
            self.full = True  # nothing to compare a quick sweep with yet
        self.progress.kind = self.kind
        self.progress.total = None if first_index else row.present + row.offline
        started = time.time()
        t0 = time.monotonic()
        log.info("sweep.start", root=self.root.display, kind=self.kind, first_index=first_index)
        walker = Walker(
            self.root,
            full=self.full,
            stop=self.stop,
            first_index=first_index,
            racy_ns=self.racy_ns,
            away=self.away,
            catalog_file=self.writer.catalog,
        )
        # A first index into an empty catalog loads in bulk: its inode index
        # is built after the rows, as soon as they are in (or the sweep ends).
        bulk = first_index and self.writer.call(catalog.begin_bulk, background=True)
        try:
            problem = self.root_ok(self.root)
            if problem:
                raise SweepAborted(problem)
            try:
                self._compare(reader, walker, first_index)
                self._flush(first_index)
                self._drain(0)
            finally:
                if bulk:  # queued behind the batches: built once the rows are in
                    self._end_bulk()
            self._confirm_missing(reader, started, row.last_sweep)
            # Even with nothing to commit: a walk that lost its disk halfway
            # saw only part of the tree and must not count as a sweep of it.
            problem = self.root_ok(self.root)
            if problem:
                raise SweepAborted(problem)
            self.writer.call(
                lambda c: catalog.set_root_swept(c, self.root.id, started, full=self.full),
                background=True,
            )
            if self.relinker is not None:
                if first_index:
                    self.relinker.skip_to(catalog.last_seq(reader))
                else:
                    self.tally.relinked += self.relinker.catch_up(reader)
        except SweepAborted as exc:
            self._drain(0, quiet=True)
            self._count_walk(walker)
            log.warning(
                "sweep.abort",
                root=self.root.display,
                kind=self.kind,
                reason=str(exc),
                **dataclasses.asdict(self.tally),
            )
            raise
        self._count_walk(walker)
        log.info(
            "sweep.finish",
            root=self.root.display,
            kind=self.kind,
            first_index=first_index,
            duration_s=round(time.monotonic() - t0, 3),
            **dataclasses.asdict(self.tally),
        )
        return self.tally

    def _end_bulk(self) -> None:
        """Build the inode index a bulk load left out; a failure is logged (the next opening builds it)."""
        try:
            self.writer.call(catalog.end_bulk, background=True)
        except Exception as exc:  # a full disk, say
            log.error("catalog.error", error=f"building the inode index: {exc}", jobs=1)

    def _count_walk(self, walker: Walker) -> None:
        for name in ("files", "dirs_listed", "dirs_skipped", "unreadable", "errors"):
            setattr(self.tally, name, getattr(walker.tally, name))

    # -- comparing -----------------------------------------------------------

    def _compare(self, reader: apsw.Connection, walker: Walker, first_index: bool) -> None:
        # Moves made while nobody watched are found by inode; not worth a
        # query per file when the catalog holds nothing they could be.
        match = not first_index or catalog.has_files_outside(reader, self.root.id)
        for diff, files in walker.diffs(reader):
            self.progress.done += files
            if diff is None:
                continue
            if (diff.new or diff.returned) and match:
                diff = self._identify(reader, diff)
            self._vanished.extend(diff.vanished)
            self._batch.append(diff)
            self._batch_size += len(diff.new) + len(diff.touched) + len(diff.gone) + 1
            if self._batch_size >= self.batch_files:
                self._flush(first_index)

    def _identify(self, reader: apsw.Connection, diff: DirDiff) -> DirDiff:
        """Which new names are known files moved here while nobody watched (rule 2: the inode).

        A name whose missing file is on disk again is that file back (rule
        1, same path first), whatever inode it has now (a restore from an
        archive hands out freed inode numbers crosswise), unless inode and
        content both say another known file moved onto the path.
        """
        found, new, returned = [], [], []
        for name, sig in diff.new:
            path = self.root.abs(catalog.join(diff.dir, name))
            hit = identity.by_inode(reader, sig, self.roots, path)
            if hit is None:
                new.append((name, sig))
            else:
                found.append((name, sig, hit[0], hit[1].id))
        for name, sig in diff.returned:
            rel = catalog.join(diff.dir, name)
            hit = identity.by_inode(reader, sig, self.roots, self.root.abs(rel), over_path=True)
            if hit is None or (hit[0].root, hit[0].path) == (self.root.id, rel):
                returned.append((name, sig))
            else:
                found.append((name, sig, hit[0], hit[1].id))
        if not found:
            return diff
        return dataclasses.replace(diff, new=new, found=found, returned=returned)

    def _flush(self, first_index: bool) -> None:
        if not self._batch:
            return
        # Before anything of this batch is committed: is the root still the
        # root? A disk unplugged mid-sweep ends the sweep here (its listings
        # may already be of an empty mount point).
        problem = self.root_ok(self.root)
        if problem:
            raise SweepAborted(problem)
        batch, self._batch, self._batch_size = self._batch, [], 0
        root, roots, now = self.root, self.roots, time.time()

        def apply(conn: apsw.Connection) -> tuple[Tally, list[int]]:
            total, gone = Tally(), []
            for diff in batch:
                tally, ids = reconcile.apply_diff(
                    conn, root, diff, now, first_index=first_index, roots=roots
                )
                total.add(tally)
                gone.extend(ids)
            return total, gone

        self._pending.append(self.writer.submit(apply, background=True))
        self._drain(BATCHES_IN_FLIGHT)

    def _drain(self, keep: int, *, quiet: bool = False) -> None:
        """Wait for handed-over batches until at most ``keep`` are in flight."""
        while len(self._pending) > keep:
            future = self._pending.popleft()
            try:
                tally, gone = future.result()
            except Exception as exc:
                if quiet:
                    continue
                raise SweepAborted(f"catalog write failed: {exc}") from exc
            self.tally.new += tally.new
            self.tally.moved += tally.moved
            self.tally.changed += tally.changed
            self.tally.restored += tally.restored
            self._gone.extend(gone)

    # -- the end: what is really missing ------------------------------------------

    def _confirm_missing(
        self, reader: apsw.Connection, started: float, last_seen: float | None
    ) -> None:
        gone = sorted(set(self._gone))
        real_root = os.path.realpath(self.root.path)
        for i in range(0, len(gone), CONFIRM_CHUNK):
            if self.stop.is_set():
                raise SweepAborted("daemon stopping")
            chunk = []
            for file_id in gone[i : i + CONFIRM_CHUNK]:
                row = catalog.get_file(reader, file_id)
                if row is None or row.state != catalog.PRESENT:
                    continue
                if not self._still_there(row.path, real_root):
                    chunk.append((file_id, row.path))
            # The last word before committing: is the root still the root?
            problem = self.root_ok(self.root)
            if problem:
                raise SweepAborted(problem)
            if chunk:
                self.tally.missing += self.writer.call(
                    partial(
                        reconcile.confirm_missing,
                        root=self.root,
                        paths=chunk,
                        reason="not_found",
                        now=started,
                        last_seen=last_seen,
                    ),
                    background=True,
                )
        # The directories that vanished: their files are missing now; forget
        # their listings (unless they are back).
        vanished = [v for v in self._vanished if not os.path.isdir(self.root.abs(v))]
        if vanished:
            root_id = self.root.id

            def forget(conn: apsw.Connection) -> None:
                for path in vanished:
                    catalog.forget_dirs_under(conn, root_id, path)

            self.writer.call(forget, background=True)

    def _still_there(self, rel: bytes, real_root: bytes) -> bool:
        """A gone candidate that is on disk again (and not excluded), or that cannot be
        checked (permission denied), is not missing.

        ``lstat`` follows symlinks in the directories above the name; a
        directory replaced by a symlink must not keep its old files present,
        so the real path of the parent must be the expected one.
        """
        if self.root.excluder.excluded_path(rel):
            return False
        path = self.root.abs(rel)
        try:
            if stat_regular(path, strict=True) is None:
                return False
        except OSError as exc:
            fault = classify(exc)
            if fault is Fault.ROOT:
                raise SweepAborted(f"{exc.strerror or exc} checking {os.fsdecode(path)}") from exc
            # Permission denied (or another error) is not "gone": unconfirmed, it stays.
            return fault is not Fault.GONE
        dir = catalog.split(rel)[0]
        expected = real_root + b"/" + dir if dir else real_root
        return os.path.realpath(os.path.dirname(path)) == expected
