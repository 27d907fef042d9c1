"""Walking a root for a sweep and comparing each listing with the catalog.

The :class:`Walker` lists a root depth-first and compares each directory's
listing with the catalog (:func:`compare`), yielding what differs as a
:class:`~filewarden.reconcile.DirDiff`. A full sweep that has listed
:data:`HAND_OVER_FILES` files in its own thread hands the directories still
to list to a :class:`WalkProcess`, which walks and compares them with a
read connection of its own and sends back only the directories that differ:
``os.scandir``, ``lstat``, the digests and the reads then run beside the
writer instead of taking turns with it for the GIL (measured on a first
index of 200k files: the sweep's thread and the writer were both busy the
whole time, and the sweep took the sum of their work). Small trees never
pay for starting the process; a quick sweep, which lists few directories,
always walks in its own thread.

The process is started by a big walk and kept while sweeps follow one
another (the scheduler ends it when no sweep waits: at rest the daemon is
one process again, about 0.1 s of starting per big sweep). It speaks
pickled tuples over a socket pair. It logs nothing itself: what a
listing meets (an unreadable file) comes back with the diffs and is logged
by the daemon, so every line comes from one process. A walk is stopped
between two directories when the sweep stops; a process that died ends its
sweep (aborted: nothing is marked missing) and the next big walk starts a
new one.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import apsw

from filewarden import catalog, logs, reconcile
from filewarden.catalog import DIRTY, Catalog, DirRow, DirStamp
from filewarden.errors import Fault, FilewardenError, classify
from filewarden.listing import Listing, Tally, list_dir
from filewarden.reconcile import DirDiff
from filewarden.roots import Root

log = logs.get("filewarden.sweep")

# A directory changed within this many seconds of being listed may change
# again within the same timestamp tick (coarse kernel clocks; 2 s on FAT)
# and keep the same mtime/ctime; such a listing is stored as DIRTY so the
# next quick sweep lists it again (git's "racy clean" rule).
RACY_NS = 2_000_000_000
HAND_OVER_FILES = 20_000  # listed in the sweep's thread before the rest goes to the process
SEND_FILES = 2_000  # files listed per message from the process
COMMAND = (sys.executable, "-m", "filewarden.walk")
_DIFF_FIELDS = [field.name for field in dataclasses.fields(DirDiff)]


class SweepAborted(FilewardenError):
    """The sweep stopped before the end; nothing was marked missing."""


class NoWalker(FilewardenError):
    """The walker process could not start, or ended before it answered: walk here."""


class Stop(Protocol):
    def is_set(self) -> bool: ...


def _stamp(st: os.stat_result, now_ns: int, racy_ns: int) -> DirStamp:
    if now_ns - st.st_ctime_ns < racy_ns or now_ns - st.st_mtime_ns < racy_ns:
        return DIRTY
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def compare(
    reader: apsw.Connection | None, root_id: int, listing: Listing, first_index: bool
) -> DirDiff:
    """How ``listing`` differs from the catalog (no ``reader`` needed on a first index)."""
    digest: bytes | None = catalog.files_digest(sorted(listing.files.items()))
    rows: list[DirRow] | None
    if first_index:
        rows, known, stored = [], [], None
    else:
        assert reader is not None
        stored, stored_digest = catalog.dir_memory(reader, root_id, listing.dir)
        if stored_digest == digest:
            # The catalog's files here are the listing's: no rows to read.
            rows, digest = None, None
        else:
            rows = catalog.dir_rows(reader, root_id, listing.dir)
        known = list(catalog.child_dirs(reader, root_id, listing.dir))
    return reconcile.diff_listing(listing, rows, known, stored, digest)


class Walker:
    """Walks a root depth-first; yields each directory's difference with the catalog.

    In a quick sweep it first compares each directory's stamp with the one
    stored at its last listing and only lists the changed ones. A full walk
    goes on in ``away`` (with the catalog at ``catalog_file``) once it has
    listed the process's ``hand_over_files`` files. (A walker *thread* beside the
    comparison was measured slower, the two fighting over the GIL between
    every ``lstat``; a process does not share it.)
    """

    def __init__(
        self,
        root: Root,
        *,
        full: bool,
        stop: Stop,
        first_index: bool = False,
        racy_ns: int = RACY_NS,
        away: WalkProcess | None = None,
        catalog_file: Catalog | None = None,
        warn: Callable[..., object] | None = None,
    ) -> None:
        self.root = root
        self.full = full or first_index
        self.first_index = first_index
        self.stop = stop
        self.racy_ns = racy_ns
        self.away = away if self.full and catalog_file is not None else None
        self.catalog_file = catalog_file
        self.warn = warn or log.warning
        self.tally = Tally()

    def diffs(self, reader: apsw.Connection) -> Iterator[tuple[DirDiff | None, int]]:
        """``(diff, files)``: a listed directory's diff (None when it is unchanged) and
        how many files it had, in depth-first name order."""
        stored = None if self.full else catalog.dir_stamp(reader, self.root.id, b"")
        stack: list[tuple[bytes, DirStamp | None]] = [(b"", stored)]
        until = self.away.hand_over_files if self.away is not None else None
        yield from self._compared(stack, reader, until)
        if not stack or self.away is None:
            return
        if self.first_index:
            # Every file goes to the writer, which is what takes longest:
            # this thread only hands the process's diffs over.
            theirs, beside = stack, None
        else:
            # Mostly unchanged: two walkers, each on every other subtree.
            theirs, beside = stack[::2], self._compared(stack[1::2], reader)
        try:
            yield from self.away.diffs(self, [rel for rel, _ in theirs], beside)
        except NoWalker as exc:
            # Nothing of its share came back: this thread walks it after its own.
            log.error("sweep.walker", root=self.root.display, error=str(exc))
            if beside is not None:
                yield from beside
            yield from self._compared(theirs, reader)

    def _compared(
        self,
        stack: list[tuple[bytes, DirStamp | None]],
        reader: apsw.Connection | None,
        until: int | None = None,
    ) -> Iterator[tuple[DirDiff | None, int]]:
        for listing in self.listings(stack, reader, until=until):
            diff = compare(reader, self.root.id, listing, self.first_index)
            yield diff or None, len(listing.files)

    def listings(
        self,
        stack: list[tuple[bytes, DirStamp | None]],
        reader: apsw.Connection | None,
        *,
        until: int | None = None,
    ) -> Iterator[Listing]:
        """List what ``stack`` holds (the next last), and what is below, in order.

        Returns early, with the directories not yet listed left on ``stack``,
        once ``until`` files are listed.
        """
        root, tally = self.root, self.tally
        quick = None if self.full else reader  # a quick walk reads the stored stamps
        while stack:
            if self.stop.is_set():
                raise SweepAborted("daemon stopping")
            if until is not None and tally.files >= until:
                return
            rel, stored = stack.pop()
            if stored is not None and quick is not None:
                # Quick: a stat of the directory decides whether it is listed.
                try:
                    st = os.lstat(root.abs(rel))
                except OSError as exc:
                    self._fault(exc, rel)
                    continue
                if (
                    stat.S_ISDIR(st.st_mode)
                    and (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == stored
                ):
                    tally.dirs_skipped += 1
                    stack.extend(catalog.child_dirs(quick, root.id, rel).items())
                    continue
            now_ns = time.time_ns()
            try:
                dir_st, files, subdirs = list_dir(root, rel, tally, self.warn)
            except OSError as exc:
                self._fault(exc, rel)
                continue
            tally.dirs_listed += 1
            tally.files += len(files)
            yield Listing(
                rel,
                _stamp(dir_st, now_ns, self.racy_ns),
                files,
                frozenset(subdirs),
                (dir_st.st_dev, dir_st.st_ino),
            )
            known = catalog.child_dirs(quick, root.id, rel) if quick is not None else {}
            subdirs.sort(reverse=True)  # pop in name order: index-friendly inserts
            for name in subdirs:
                child = catalog.join(rel, name)
                stack.append((child, known.get(child)))

    def _fault(self, exc: OSError, rel: bytes) -> None:
        fault = classify(exc)
        if fault is Fault.GONE:
            return  # vanished since its parent was listed: the parent's listing decides
        if fault is Fault.ROOT:
            raise SweepAborted(f"{exc.strerror or exc} reading {os.fsdecode(self.root.abs(rel))}")
        # Unreadable: keep what the catalog knew of it; never call it missing.
        if fault is Fault.DENIED:
            self.tally.unreadable += 1
        else:
            self.tally.errors += 1
        self.warn(
            "sweep.unreadable" if fault is Fault.DENIED else "sweep.error",
            root=self.root.display,
            path=self.root.abs(rel),
            error=exc.strerror or str(exc),
        )


class WalkProcess:
    """A process that walks for full sweeps, one walk at a time (the scheduler runs one sweep)."""

    def __init__(
        self, hand_over_files: int = HAND_OVER_FILES, command: Sequence[str] = COMMAND
    ) -> None:
        self.hand_over_files = hand_over_files
        self.command = list(command)  # the descriptor of its end of the socket follows
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.started = 0  # processes started, ever

    def diffs(
        self,
        walker: Walker,
        stack: list[bytes],
        beside: Iterator[tuple[DirDiff | None, int]] | None = None,
    ) -> Iterator[tuple[DirDiff | None, int]]:
        """:meth:`Walker.diffs` of the directories on ``stack``, walked in the process,
        and those of ``beside`` (the calling thread's share), as each comes.

        The process's counts are added to ``walker.tally`` and its warnings
        logged through ``walker.warn``.
        """
        assert walker.catalog_file is not None
        with self._lock:
            conn = self._connect()
            root = walker.root
            conn.send(
                (
                    "walk",
                    root.id,
                    root.config,
                    str(walker.catalog_file.path),
                    walker.first_index,
                    stack,
                    walker.racy_ns,
                )
            )
            finished = answered = False
            try:
                while not finished:
                    if walker.stop.is_set():
                        raise SweepAborted("daemon stopping")
                    if beside is not None and not conn.poll():
                        mine = next(beside, None)
                        if mine is None:
                            beside = None
                        else:
                            yield mine
                        continue
                    kind, *body = self._recv(conn, answered)
                    answered = True
                    if kind == "diffs":
                        diffs, files, warnings, tally = body
                        for event, fields in warnings:
                            walker.warn(event, **fields)
                        walker.tally.add(tally)
                        for diff in diffs:
                            yield DirDiff(*diff), 0
                        yield None, files
                    else:
                        finished = True
                        if kind == "abort":
                            raise SweepAborted(body[0])
            finally:
                if not finished:
                    self._cancel(conn)
            if beside is not None:
                yield from beside

    def close(self) -> None:
        with self._lock:
            self._close()

    def _connect(self) -> Connection:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            return self._conn
        self._close()
        mine, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [*self.command, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            mine.close()
            raise NoWalker(f"cannot start the walker process: {exc}") from exc
        finally:
            theirs.close()
        self.started += 1
        self._conn = Connection(mine.detach())
        return self._conn

    def _recv(self, conn: Connection, answered: bool = True) -> tuple[Any, ...]:
        try:
            return conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError) as exc:
            code = self._proc.wait() if self._proc is not None else None
            self._close()
            ended = f"the walker process ended (exit status {code})"
            if not answered:
                raise NoWalker(f"{ended} before it answered") from exc
            raise SweepAborted(ended) from exc

    def _cancel(self, conn: Connection) -> None:
        """Stop the walk under way and read what it still sends, so the next one starts clean."""
        if self._conn is None:
            return  # the process is gone
        try:
            conn.send(("stop",))
            while self._recv(conn)[0] == "diffs":
                pass
        except (SweepAborted, OSError):
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the process reads EOF and ends
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


# -- the process's side ------------------------------------------------------------


class _Asked:
    """A walk's stop flag in the process: a message from the daemon (always "stop")."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.asked = False

    def is_set(self) -> bool:
        if not self.asked and self.conn.poll():
            self.conn.recv()
            self.asked = True
        return self.asked


def _walk_away(
    conn: Connection,
    root: Root,
    catalog_path: str,
    first_index: bool,
    stack: list[bytes],
    racy_ns: int,
) -> None:
    warnings: list[tuple[str, dict[str, object]]] = []
    walker = Walker(
        root,
        full=True,
        stop=_Asked(conn),
        first_index=first_index,
        racy_ns=racy_ns,
        warn=lambda event, **fields: warnings.append((event, fields)),
    )
    diffs: list[tuple[object, ...]] = []  # DirDiff's fields: pickled in a third of the time
    files = 0
    sent = Tally()

    def send() -> None:
        tally = Tally(**vars(walker.tally))
        for name, value in vars(sent).items():
            setattr(tally, name, getattr(tally, name) - value)
        conn.send(("diffs", diffs, files, warnings, tally))
        sent.add(tally)
        diffs.clear()
        warnings.clear()

    reader = None
    try:
        if not first_index:
            reader = Catalog(Path(catalog_path)).reader()
        for listing in walker.listings([(rel, None) for rel in stack], reader):
            diff = compare(reader, root.id, listing, first_index)
            if diff:
                diffs.append(tuple(getattr(diff, name) for name in _DIFF_FIELDS))
            files += len(listing.files)
            if files >= SEND_FILES:
                send()
                files = 0
    except FilewardenError as exc:  # SweepAborted, or the catalog could not be read
        send()
        conn.send(("abort", str(exc)))
        return
    finally:
        if reader is not None:
            reader.close()
    send()
    conn.send(("done",))


def serve(conn: Connection) -> None:
    """The process: walk what the daemon asks, until it closes its end."""
    catalog.limit_memory()  # as the daemon does
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "walk":
            _, root_id, config, catalog_path, first_index, stack, racy_ns = message
            _walk_away(conn, Root.make(root_id, config), catalog_path, first_index, stack, racy_ns)
        # A "stop" that came after its walk had ended: nothing to stop.


def _main(argv: list[str]) -> int:
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    except BrokenPipeError:
        pass  # the daemon went away mid-walk
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
