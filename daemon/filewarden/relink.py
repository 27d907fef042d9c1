"""Identity: telling that a file that appears is one the catalog already knows.

Rules, in order (the contract's relink):

1. same ``(device, inode)`` with the same size and mtime as a known file
   whose own path no longer holds it: the same file, moved (also while the
   daemon was down). Decided *before* the file is added, with no hashing.
2. same size and xxh3-128 as a missing file, on any root: the missing file
   is back. Decided from the journal right after the new file is committed:
   a new file is hashed at once only when a missing file of its size has a
   hash. The new file is merged into the old id. And when a file goes
   missing, files of its size that arrived *on another filesystem* and were
   last written within ``MOVE_WINDOW`` before it went are checked the same
   way: a move between filesystems is a copy, then a delete (``mv``,
   ``rsync --remove-source-files``). On one filesystem a move is a rename
   (rule 1), so two identical copies there stay two files when one goes.
3. otherwise it is new. A copy of a present file is a new file.

Among several missing files with the same hash, the one with the same name
wins, then the most recently missing; the choice is logged.
"""

from __future__ import annotations

import array
import bisect
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import apsw

from filewarden import catalog, hasher, logs
from filewarden.catalog import FileRow, Signature
from filewarden.roots import Root
from filewarden.writer import Writer

log = logs.get("filewarden.relink")

RECENT_SECONDS = 3600.0  # how long a new file is remembered as a possible copy-half of a move
MOVE_WINDOW = 60.0  # a copy must have been finished this recently before the original went
RECENT_MAX = 100_000
FEW_SIZES = 6  # looked up one by one in Arrivals; more in one pass


def by_inode(
    reader: apsw.Connection,
    sig: Signature,
    roots: Mapping[int, Root],
    exclude_path: tuple[int, bytes] | None = None,
) -> tuple[FileRow, Root] | None:
    """The known file that ``sig`` (a new path's stat) is, by inode; None if none.

    A present candidate still at its own path is a hard link, a different
    file. Several missing candidates: the most recently missing.
    """
    size, mtime_ns, _, device, inode = sig
    best: tuple[FileRow, Root] | None = None
    for row in catalog.files_with_inode(reader, device, inode):
        root = roots.get(row.root)
        if root is None or row.size != size or row.mtime_ns != mtime_ns:
            continue
        if exclude_path is not None and (row.root, row.path) == exclude_path:
            continue
        if row.state == catalog.PRESENT:
            there = _stat(root.abs(row.path))
            if there is not None and there[3:] == (device, inode):
                continue  # still there: a hard link
            return row, root
        if best is None or (row.missing_since or 0) > (best[0].missing_since or 0):
            best = (row, root)
    return best


def _stat(path: bytes) -> Signature | None:
    import os
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return None
    return catalog.signature(st) if stat.S_ISREG(st.st_mode) else None


class Arrivals:
    """New files remembered by size, forgotten oldest first: past ``max_age`` seconds or ``max_count``.

    Three packed columns in arrival order (when, size, file id: 24 bytes an
    entry, no Python object each), so what is remembered costs the same
    whatever the sizes, and long-lived entries do not pin the allocator's
    arenas among short-lived objects. The forgotten head is cut off once it
    is at least half of the columns. Sizes are found by searching the
    packed columns (see ``ids_by_size``), which is done only when a hashed
    file goes missing.
    """

    def __init__(self, max_age: float = RECENT_SECONDS, max_count: int = RECENT_MAX) -> None:
        self.max_age = max_age
        self.max_count = max_count
        self._when = array.array("d")
        self._size = array.array("q")
        self._id = array.array("q")
        self._first = 0  # entries before it are forgotten

    def __len__(self) -> int:
        return len(self._when) - self._first

    def sizes(self) -> int:
        """How many different sizes are remembered."""
        return len(set(self._size[self._first :]))

    def add(self, size: int, file_id: int, now: float) -> None:
        self._when.append(now)
        self._size.append(size)
        self._id.append(file_id)
        self.forget(now)

    def forget(self, now: float) -> None:
        """Drop what is older than ``max_age`` at ``now``, and the oldest beyond ``max_count``."""
        when = self._when
        # Arrival times never decrease (a monotonic clock): the young are a suffix.
        first = max(self._first, len(when) - self.max_count)
        first = bisect.bisect_left(when, now - self.max_age, lo=first)
        if first * 2 >= len(when):
            for column in (self._when, self._size, self._id):
                del column[:first]
            first = 0
        self._first = first

    def ids(self, size: int) -> list[int]:
        """The remembered arrivals of ``size``, oldest first."""
        return self.ids_by_size([size])[size]

    def ids_by_size(self, sizes: Iterable[int]) -> dict[int, list[int]]:
        """The remembered arrivals of each of ``sizes``, oldest first.

        A few sizes: a memory search each (about 0.7 ms for 100,000 entries).
        More: one pass over the entries (about 5 ms), whatever their number.
        """
        wanted = set(sizes)
        found: dict[int, list[int]] = {size: [] for size in wanted}
        first = self._first
        if len(wanted) > FEW_SIZES:
            for size, file_id in zip(self._size[first:], self._id[first:], strict=True):
                if size in wanted:
                    found[size].append(file_id)
            return found
        packed = self._size.tobytes()
        width = self._size.itemsize
        for size in wanted:
            needle = array.array("q", [size]).tobytes()
            at = packed.find(needle, first * width)
            while at >= 0:
                if at % width:  # straddles two entries
                    at = packed.find(needle, at + 1)
                    continue
                found[size].append(self._id[at // width])
                at = packed.find(needle, at + width)
        return found


def choose(candidates: list[FileRow], name: bytes) -> FileRow:
    """Same name first, then the most recently missing."""
    return max(candidates, key=lambda r: (r.name == name, r.missing_since or 0.0, r.id))


class Relinker:
    """Applies rule 2 to what the journal says arrived or went missing; one cursor for the daemon."""

    def __init__(self, writer: Writer, roots: Callable[[], dict[int, Root]]) -> None:
        self.writer = writer
        self.roots = roots
        self._lock = threading.Lock()
        self._seq: int | None = None
        # Recent arrivals by size: the new files a missing one may have become.
        self.recent = Arrivals()
        self.relinked = 0
        self.hashed = 0  # files hashed to decide a relink (not the background hasher's)

    def start_at(self, seq: int) -> None:
        with self._lock:
            if self._seq is None:
                self._seq = seq

    def skip_to(self, seq: int) -> None:
        """Do not look at entries up to ``seq`` (a root's first index: nothing there is a return)."""
        with self._lock:
            if self._seq is None or self._seq < seq:
                self._seq = seq

    def catch_up(self, reader: apsw.Connection) -> int:
        """Look at every journal entry since the last call; returns how many files were relinked."""
        with self._lock:
            if self._seq is None:
                self._seq = catalog.last_seq(reader)
                return 0
            done = 0
            upto = catalog.last_seq(reader)
            while True:
                entries = catalog.journal_tail(reader, self._seq, upto, 5000)
                if not entries:
                    self._seq = max(self._seq, upto)
                    return done
                self._seq = entries[-1][0]
                wanted = catalog.missing_hashed_sizes(reader)
                now = time.monotonic()
                arrived = []
                for _, kind, file_id, size in entries:
                    if kind == "new" and size is not None:
                        self.recent.add(size, file_id, now)
                        if size in wanted:
                            arrived.append(file_id)
                gone = [file_id for _, kind, file_id, _ in entries if kind == "missing"]
                done += self._arrivals(reader, arrived)
                done += self._departures(reader, gone)

    def _arrivals(self, reader: apsw.Connection, ids: Iterable[int]) -> int:
        """New files whose size a hashed missing file has: hash them now and compare."""
        done = 0
        roots = self.roots()
        for file_id in ids:
            row = catalog.get_file(reader, file_id)
            if row is None or row.state != catalog.PRESENT:
                continue
            root = roots.get(row.root)
            got = hasher.hash_file(root.abs(row.path), row.signature) if root is not None else None
            self.hashed += 1
            if got is None:
                continue
            matches = [c for c in catalog.missing_with_size(reader, row.size) if c.hash == got[0]]
            if matches:
                done += self._merge(choose(matches, row.name), row, got[0], len(matches))
        return done

    def _departures(self, reader: apsw.Connection, ids: Iterable[int]) -> int:
        done = 0
        roots = self.roots()
        departed = [
            row
            for row in map(partial(catalog.get_file, reader), ids)
            if row is not None and row.state == catalog.MISSING and row.hash is not None
        ]
        arrivals = self.recent.ids_by_size(row.size for row in departed)
        for gone in departed:
            for arrival_id in arrivals[gone.size]:
                new = catalog.get_file(reader, arrival_id)
                if (
                    new is None
                    or new.state != catalog.PRESENT
                    or new.device == gone.device
                    or gone.missing_since is None
                    or not 0 <= gone.missing_since - new.last_seen <= MOVE_WINDOW
                ):
                    continue
                digest = new.hash
                if digest is None:
                    root = roots.get(new.root)
                    got = (
                        hasher.hash_file(root.abs(new.path), new.signature)
                        if root is not None
                        else None
                    )
                    self.hashed += 1
                    digest = got[0] if got is not None else None
                if digest is not None and digest == gone.hash:
                    done += self._merge(gone, new, digest, 1)
                    break
        return done

    def _merge(self, keep: FileRow, take: FileRow, digest: bytes, candidates: int) -> int:
        roots = self.roots()
        detail = {"by": "hash"}
        merged = self.writer.call(
            partial(
                catalog.merge_into,
                keep=keep,
                take=take,
                digest=digest,
                now=time.time(),
                detail=detail,
            )
        )
        if merged:
            self.relinked += 1
            new_root, old_root = roots.get(take.root), roots.get(keep.root)
            log.info(
                "file.relink",
                id=keep.id,
                by="hash",
                candidates=candidates,
                path=new_root.abs(take.path) if new_root else take.path,
                old_path=old_root.abs(keep.path) if old_root else keep.path,
                replaces_id=take.id,
                chose="same name" if keep.name == take.name else "most recently missing",
            )
        return int(merged)
