"""What the catalog hands back: rows, signatures, states, and root-relative paths.

Also the two query helpers the other catalog modules share.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, cast

import apsw

# Column order of a file row as returned by every catalog query (FILE_COLS).
FILE_COLS = (
    "id, root, dir, name, size, mtime_ns, ctime_ns, device, inode, hash, state,"
    " first_seen, last_seen, missing_since, missing_reason"
)


PRESENT, MISSING, OFFLINE = "present", "missing", "offline"


@dataclasses.dataclass(frozen=True, slots=True)
class FileRow:
    id: int
    root: int
    dir: bytes
    name: bytes
    size: int
    mtime_ns: int
    ctime_ns: int
    device: int
    inode: int
    hash: bytes | None
    state: str
    first_seen: float
    last_seen: float
    missing_since: float | None
    missing_reason: str | None

    @property
    def path(self) -> bytes:
        return join(self.dir, self.name)

    @property
    def signature(self) -> Signature:
        return (self.size, self.mtime_ns, self.ctime_ns, self.device, self.inode)


@dataclasses.dataclass(frozen=True, slots=True)
class RootRow:
    id: int
    path: bytes
    state: str
    state_reason: str | None
    state_since: float | None
    last_sweep: float | None
    last_full_sweep: float | None
    present: int
    missing: int
    offline: int


# What a stat says about a regular file: (size, mtime_ns, ctime_ns, device,
# inode); equal signatures mean unchanged (borg's files cache). A plain tuple:
# a sweep builds one per file, and anything richer costs more than the stat.
Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


@dataclasses.dataclass(frozen=True, slots=True)
class Media:
    """A photo's or song's fingerprint (see :mod:`filewarden.fingerprint`), and what
    ``candidates`` compares: ``value`` None for a file of the format that does not parse."""

    kind: str
    value: bytes | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # duration, width, height, tags


@dataclasses.dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    time: float
    kind: str
    file: int | None
    root: int | None
    path: bytes | None
    old_root: int | None
    old_path: bytes | None
    detail: dict[str, Any] | None


# What a sweep compares per directory, as plain tuples (a row object per file
# would cost more than the comparison): name, signature..., state, id.
DirRow = tuple[bytes, int, int, int, int, int, str, int]


DirStamp = tuple[int, int, int]  # (mtime_ns, ctime_ns, inode) of a directory


DIRTY: DirStamp = (0, 0, 0)


Row = tuple[Any, ...]


def _rows(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """Run a query and return all rows (typed loosely: SQLite's types are the schema's)."""
    return cast(list[Row], conn.execute(sql, params).fetchall())


def _value(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row, or None."""
    rows = _rows(conn, sql, params)
    return rows[0][0] if rows else None


# A row's root-relative path in SQL (:func:`join`). CAST: || on BLOBs yields
# TEXT, and paths are BLOBs everywhere.
PATH_SQL = "CAST(CASE WHEN dir = x'' THEN name ELSE dir || x'2f' || name END AS BLOB)"


def join(dir: bytes, name: bytes) -> bytes:
    """The root-relative path of ``name`` in ``dir``."""
    return dir + b"/" + name if dir else name


def split(path: bytes) -> tuple[bytes, bytes]:
    """Split a root-relative path into ``(dir, name)``."""
    dir, _, name = path.rpartition(b"/")
    return dir, name


def under(prefix: bytes) -> tuple[bytes, bytes]:
    """The half-open BLOB range of paths strictly below directory ``prefix``.

    ``0x30`` ("0") is the byte after ``/``, so ``[p/, p0)`` is exactly the
    paths that start with ``p/``.
    """
    return prefix + b"/", prefix + b"0"
