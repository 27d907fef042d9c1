"""The SQLite catalog: schema, migrations and every SQL statement filewarden runs.

Plain typed functions that take a connection. One writer thread owns the
write connection (see :mod:`filewarden.writer`); readers open their own
connections and rely on WAL. Paths are stored as BLOBs relative to their root,
split into ``dir`` (``b""`` for the root itself) and ``name``, so one
directory's files are one index range and a directory move is one UPDATE.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import marshal
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import apsw
import xxhash

from filewarden.errors import CatalogError, prepare_dir

# Column order of a file row as returned by every query below (FILE_COLS).
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


Row = tuple[Any, ...]


def _rows(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """Run a query and return all rows (typed loosely: SQLite's types are the schema's)."""
    return cast(list[Row], conn.execute(sql, params).fetchall())


def _value(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row, or None."""
    rows = _rows(conn, sql, params)
    return rows[0][0] if rows else None


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


# --- schema -------------------------------------------------------------------

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE roots (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        state TEXT NOT NULL DEFAULT 'unknown',
        state_reason TEXT,
        state_since REAL,
        device INTEGER,
        fs_source TEXT,
        fs_uuid TEXT,
        last_sweep REAL,
        last_full_sweep REAL,
        present INTEGER NOT NULL DEFAULT 0,
        missing INTEGER NOT NULL DEFAULT 0,
        offline INTEGER NOT NULL DEFAULT 0
    );
    -- AUTOINCREMENT: a purged id is never handed out again.
    CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        root INTEGER NOT NULL REFERENCES roots(id),
        dir BLOB NOT NULL,
        name BLOB NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        device INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        hash BLOB,
        state TEXT NOT NULL CHECK (state IN ('present', 'missing', 'offline')),
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        missing_since REAL,
        missing_reason TEXT
    );
    CREATE UNIQUE INDEX files_path ON files(root, dir, name);
    CREATE INDEX files_inode ON files(device, inode);
    CREATE INDEX files_missing ON files(missing_since) WHERE state = 'missing';
    CREATE TABLE dirs (
        root INTEGER NOT NULL,
        path BLOB NOT NULL,
        parent BLOB,
        -- 0 in all three means "list me on the next quick sweep".
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        PRIMARY KEY (root, path)
    ) WITHOUT ROWID;
    CREATE INDEX dirs_parent ON dirs(root, parent);
    CREATE TABLE annotations (
        file INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (file, key)
    ) WITHOUT ROWID;
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        file INTEGER,
        root INTEGER,
        path BLOB,
        old_root INTEGER,
        old_path BLOB,
        detail TEXT
    );
    CREATE INDEX journal_file ON journal(file, seq);
    """,
    # 2: identity. The background hasher walks unhashed present files by id;
    # relinking looks up missing files by size. Both indexes hold few rows.
    """
    CREATE INDEX files_unhashed ON files(id) WHERE hash IS NULL AND state = 'present';
    CREATE INDEX files_missing_size ON files(size) WHERE state = 'missing';
    """,
    # 3: what a directory's files were when the catalog last matched a
    # listing of it (see files_digest), so an unchanged directory costs a
    # sweep one digest instead of reading back every row. NULL: not known.
    """
    ALTER TABLE dirs ADD COLUMN digest BLOB;
    """,
    # 4: the volume a root was first seen on, to tell it from another
    # filesystem mounted at the same path.
    """
    ALTER TABLE roots ADD COLUMN fs_type TEXT;
    ALTER TABLE roots ADD COLUMN fs_inner BLOB;
    ALTER TABLE roots ADD COLUMN fs_id INTEGER;
    """,
    # 5: one *present* file per path. A missing or offline file keeps its
    # last path without holding it: a known file moved onto that path keeps
    # its own id (the missing one stays missing, as history). One index both
    # enforces that (0 for present rows, the id otherwise) and serves
    # lookups by path.
    """
    DROP INDEX files_path;
    CREATE UNIQUE INDEX files_path ON files(root, dir, name, CASE WHEN state = 'present' THEN 0 ELSE id END);
    """,
    # 6: files that arrived after their root's first index, by size: the
    # possible copy halves of a copy-then-delete move (see identity.py). Kept
    # here rather than in memory so that the window can be days at any
    # catalog size; rows older than [identity] match_window are pruned by
    # retention.
    """
    CREATE TABLE arrivals (
        size INTEGER NOT NULL,
        file INTEGER NOT NULL,
        time REAL NOT NULL,
        PRIMARY KEY (size, file)
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


WRITER_CACHE_KIB = 32_000
READER_CACHE_KIB = 4_000
# All of SQLite's memory in the daemon, every connection's page cache
# included. The caps above add up to far more (up to 68 server workers
# each hold a read connection), and each cache keeps every page it touches
# up to its cap: the writer's held a page of every journal entry written,
# about 2 MB a minute under a steady stream of changes.
MEMORY_BUDGET_KIB = 16_000


def limit_memory(kib: int = MEMORY_BUDGET_KIB) -> None:
    """Bound SQLite's memory in this process to ``kib``, for every connection together.

    A soft limit: near it, each page cache recycles its own least recently
    used pages instead of growing, and nothing fails; a cache with no pages
    of its own may still take a few.
    """
    apsw.soft_heap_limit(kib * 1024)


def memory_kib() -> tuple[int, int]:
    """SQLite's memory in this process now, and its bound (0: none), in KiB."""
    return apsw.memory_used() // 1024, apsw.soft_heap_limit(-1) // 1024


def connect(path: Path, *, readonly: bool = False, cache_kib: int | None = None) -> apsw.Connection:
    """Open the catalog; the writer's connection also creates and migrates it.

    ``cache_kib`` bounds the connection's own page cache (memory the process
    keeps, up to this much per connection); pages beyond it are read again
    from the OS page cache. The writer's default is large, as every write
    walks the indexes; a reader's is small, as most read a few pages at a
    time (a sweep, which reads whole directories, asks for more).
    """
    if cache_kib is None:
        cache_kib = READER_CACHE_KIB if readonly else WRITER_CACHE_KIB
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    else:
        prepare_dir(path.parent, 0o700)
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    try:
        conn = apsw.Connection(str(path), flags=flags)
        # Readers wait for a checkpoint or a migration rather than fail; the
        # writer waits longer for another process holding the write lock (an
        # admin's sqlite3 session), which the service watchdog notices.
        conn.set_busy_timeout(10_000 if readonly else 120_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never
        # corrupt; a sweep finds again what was lost.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        if not readonly:
            migrate(conn)
        else:
            version = user_version(conn)
            if version != SCHEMA_VERSION:
                raise CatalogError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
    except apsw.Error as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return conn


def user_version(conn: apsw.Connection) -> int:
    return int(_rows(conn, "PRAGMA user_version")[0][0])


def migrate(conn: apsw.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one migration per transaction."""
    version = user_version(conn)
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog schema {version} is newer than this filewarden knows ({SCHEMA_VERSION})"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with conn:
            conn.execute(MIGRATIONS[number - 1])
            conn.execute(f"PRAGMA user_version = {number}")


# --- roots --------------------------------------------------------------------

_ROOT_COLS = "id, path, state, state_reason, state_since, last_sweep, last_full_sweep, present, missing, offline"


def ensure_root(conn: apsw.Connection, path: bytes) -> int:
    """The id of the root at ``path``, added if new."""
    conn.execute("INSERT OR IGNORE INTO roots(path) VALUES (?)", (path,))
    return int(_rows(conn, "SELECT id FROM roots WHERE path = ?", (path,))[0][0])


def get_root(conn: apsw.Connection, root: int) -> RootRow | None:
    rows = _rows(conn, f"SELECT {_ROOT_COLS} FROM roots WHERE id = ?", (root,))
    return RootRow(*rows[0]) if rows else None


def all_roots(conn: apsw.Connection) -> list[RootRow]:
    return [RootRow(*r) for r in conn.execute(f"SELECT {_ROOT_COLS} FROM roots ORDER BY id")]


def set_root_state(
    conn: apsw.Connection, root: int, state: str, reason: str | None, now: float
) -> None:
    conn.execute(
        "UPDATE roots SET state = ?, state_reason = ?, state_since = ? WHERE id = ?"
        " AND (state IS NOT ? OR state_reason IS NOT ?)",
        (state, reason, now, root, state, reason),
    )


def set_root_swept(conn: apsw.Connection, root: int, now: float, *, full: bool) -> None:
    column = "last_full_sweep = ?, last_sweep" if full else "last_sweep"
    params = (now, now, root) if full else (now, root)
    conn.execute(f"UPDATE roots SET {column} = ? WHERE id = ?", params)


def recount(conn: apsw.Connection, root: int) -> tuple[int, int, int]:
    """Count a root's files the slow way; the kept counters must always agree."""
    row = _rows(
        conn,
        "SELECT count(*) FILTER (WHERE state = 'present'), count(*) FILTER (WHERE state = 'missing'),"
        " count(*) FILTER (WHERE state = 'offline') FROM files WHERE root = ?",
        (root,),
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


# --- files --------------------------------------------------------------------


# What a sweep compares per directory, as plain tuples (a row object per file
# would cost more than the comparison): name, signature..., state, id.
DirRow = tuple[bytes, int, int, int, int, int, str, int]


def dir_rows(conn: apsw.Connection, root: int, dir: bytes) -> list[DirRow]:
    """The files the catalog has directly in ``dir``, in the sweep's compact form."""
    return _rows(
        conn,
        "SELECT name, size, mtime_ns, ctime_ns, device, inode, state, id FROM files"
        " WHERE root = ? AND dir = ?",
        (root, dir),
    )


def files_digest(entries: list[tuple[bytes, Signature]]) -> bytes:
    """The digest of a directory's files: ``(name, signature)`` pairs sorted by name.

    Stable across processes (marshal format 2 has no back-references, so
    equal values give equal bytes; ``hash()`` of bytes is salted). Should a
    Python release ever change those bytes, digests stop matching and sweeps
    compare rows again until the next one stores new digests: slower, never wrong.
    """
    return xxhash.xxh3_128_digest(marshal.dumps(entries, 2))


def present_digest(conn: apsw.Connection, root: int, dir: bytes) -> bytes:
    """:func:`files_digest` of the present files the catalog has directly in ``dir``."""
    return files_digest(
        [
            (r[0], tuple(r[1:]))
            for r in conn.execute(
                "SELECT name, size, mtime_ns, ctime_ns, device, inode FROM files"
                " WHERE root = ? AND dir = ? AND state = 'present' ORDER BY name",
                (root, dir),
            )
        ]
    )


def dir_is_empty(conn: apsw.Connection, root: int, dir: bytes) -> bool:
    """Whether the catalog has no file at all, in any state, directly in ``dir``."""
    return not _rows(conn, "SELECT 1 FROM files WHERE root = ? AND dir = ? LIMIT 1", (root, dir))


def files_in_dir(conn: apsw.Connection, root: int, dir: bytes) -> list[FileRow]:
    """Every file the catalog has directly in ``dir``, whatever its state."""
    return [
        FileRow(*r)
        for r in conn.execute(
            f"SELECT {FILE_COLS} FROM files WHERE root = ? AND dir = ?", (root, dir)
        )
    ]


def get_file(conn: apsw.Connection, file_id: int) -> FileRow | None:
    rows = _rows(conn, f"SELECT {FILE_COLS} FROM files WHERE id = ?", (file_id,))
    return FileRow(*rows[0]) if rows else None


def file_at(conn: apsw.Connection, root: int, path: bytes) -> FileRow | None:
    """The file at ``path``: the present one, else the most recently missing (or offline) one."""
    dir, name = split(path)
    rows = _rows(
        conn,
        f"SELECT {FILE_COLS} FROM files WHERE root = ? AND dir = ? AND name = ?"
        " ORDER BY CASE state WHEN 'present' THEN 0 WHEN 'offline' THEN 1 ELSE 2 END,"
        " coalesce(missing_since, 0) DESC, id DESC LIMIT 1",
        (root, dir, name),
    )
    return FileRow(*rows[0]) if rows else None


def present_ids_under(
    conn: apsw.Connection, root: int, dir: bytes
) -> list[tuple[int, bytes, bytes]]:
    """``(id, dir, name)`` of present files in ``dir`` and everything below it."""
    lo, hi = under(dir)
    return [
        (int(r[0]), r[1], r[2])
        for r in conn.execute(
            # Two ranges, not one OR: with the OR the planner scans every file of the root.
            "SELECT id, dir, name FROM files WHERE root = ?1 AND dir = ?2 AND state = 'present'"
            " UNION ALL SELECT id, dir, name FROM files"
            " WHERE root = ?1 AND dir >= ?3 AND dir < ?4 AND state = 'present'",
            (root, dir, lo, hi),
        )
    ]


def bump(
    conn: apsw.Connection, root: int, present: int = 0, missing: int = 0, offline: int = 0
) -> None:
    """Adjust a root's counters. Every function here that adds, removes or
    changes the state of files calls this in the same transaction, so the
    counters are exact without a per-row trigger (which cost 5 µs a row)."""
    if present or missing or offline:
        conn.execute(
            "UPDATE roots SET present = present + ?, missing = missing + ?, offline = offline + ?"
            " WHERE id = ?",
            (present, missing, offline, root),
        )


# Rows per INSERT statement. One statement of many rows instead of one step
# per row: apsw releases and retakes the GIL around every step, and with a
# sweep walking in another thread each handoff is a wait (measured: the
# insert cost halves). Chunks are powers of two so that only a handful of
# statements are ever prepared and they stay in the statement cache.
_INSERT_ROWS = 64


@functools.cache
def _insert_sql(rows: int) -> str:
    """``INSERT`` of ``rows`` files; ?1 root, ?2 dir, ?3 time, then 6 values a file."""
    values = ", ".join(
        f"(?1, ?2, ?{4 + 6 * i}, ?{5 + 6 * i}, ?{6 + 6 * i}, ?{7 + 6 * i}, ?{8 + 6 * i},"
        f" ?{9 + 6 * i}, 'present', ?3, ?3)"
        for i in range(rows)
    )
    return (
        "INSERT OR IGNORE INTO files(root, dir, name, size, mtime_ns, ctime_ns, device, inode,"
        f" state, first_seen, last_seen) VALUES {values}"
    )


def dir_changed(conn: apsw.Connection, root: int, dir: bytes) -> None:
    """Forget the digest of ``dir``: its files' names, signatures or states changed.

    Every function here that adds, removes, renames, re-signs or changes the
    state of a file calls this in the same transaction, for the directory
    it leaves and the one it enters; a stored digest therefore always
    describes the rows as they are.
    """
    conn.execute(
        "UPDATE dirs SET digest = NULL WHERE root = ? AND path = ? AND digest IS NOT NULL",
        (root, dir),
    )


def insert_files(
    conn: apsw.Connection,
    root: int,
    dir: bytes,
    entries: Sequence[tuple[bytes, Signature]],
    now: float,
    *,
    arrivals: bool = True,
) -> tuple[int, int]:
    """Add new present files of one directory, journal each as ``new``.

    A name that already has a row (a live event got there first) is skipped.
    With ``arrivals`` (not during a root's first index) each is also
    remembered as an arrival (see :func:`arrivals_of_size`).
    Returns ``(after, count)``: the rows added are those of this directory
    with ``id > after``, ``count`` of them (see :func:`added_since`).
    """
    after = int(_value(conn, "SELECT coalesce(max(id), 0) FROM files"))
    changes = conn.total_changes()
    start = 0
    while start < len(entries):
        rows = min(_INSERT_ROWS, 1 << ((len(entries) - start).bit_length() - 1))
        params: list[Any] = [root, dir, now]
        for name, sig in entries[start : start + rows]:
            params.append(name)
            params.extend(sig)
        conn.execute(_insert_sql(rows), params)
        start += rows
    count = conn.total_changes() - changes
    if count:
        # CAST: || on BLOBs yields TEXT, and journal paths are BLOBs like every path.
        conn.execute(
            "INSERT INTO journal(time, kind, file, root, path)"
            " SELECT ?, 'new', id, root, CAST(CASE WHEN dir = x'' THEN name ELSE dir || x'2f' || name END AS BLOB)"
            " FROM files WHERE id > ? ORDER BY id",
            (now, after),
        )
        if arrivals:
            conn.execute(
                "INSERT OR IGNORE INTO arrivals(size, file, time) SELECT size, id, ? FROM files"
                " WHERE id > ?",
                (now, after),
            )
        bump(conn, root, present=count)
        dir_changed(conn, root, dir)
    return after, count


def added_since(conn: apsw.Connection, after: int) -> list[tuple[int, bytes]]:
    """``(id, name)`` of the files inserted after id ``after``."""
    return [
        (int(r[0]), r[1])
        for r in conn.execute("SELECT id, name FROM files WHERE id > ? ORDER BY id", (after,))
    ]


def update_signature(
    conn: apsw.Connection, file_id: int, sig: Signature, now: float, *, keep_hash: bool
) -> None:
    """Store a new stat signature; the hash goes unless the content is known unchanged."""
    for root, dir in _rows(
        conn,
        "UPDATE files SET size = ?, mtime_ns = ?, ctime_ns = ?, device = ?, inode = ?, last_seen = ?"
        + ("" if keep_hash else ", hash = NULL")
        + " WHERE id = ? RETURNING root, dir",
        (*sig, now, file_id),
    ):
        dir_changed(conn, root, dir)


def set_present(conn: apsw.Connection, row: FileRow, now: float) -> None:
    """Make a missing or offline file present again at its path."""
    conn.execute(
        "UPDATE files SET state = 'present', missing_since = NULL, missing_reason = NULL, last_seen = ?"
        " WHERE id = ?",
        (now, row.id),
    )
    bump(conn, row.root, present=1, **{row.state: -1})
    dir_changed(conn, row.root, row.dir)


def mark_missing(
    conn: apsw.Connection, ids: Sequence[int], reason: str, now: float, last_seen: float | None
) -> list[tuple[int, int, bytes]]:
    """Mark present files missing and journal each; returns ``(id, root, path)`` of those changed.

    ``last_seen`` is when the catalog last knew them present (the previous
    sweep); files seen later than that keep their own time.
    """
    changed = []
    for file_id in ids:
        rows = _rows(
            conn,
            "UPDATE files SET state = 'missing', missing_since = ?, missing_reason = ?,"
            " last_seen = max(last_seen, coalesce(?, last_seen))"
            " WHERE id = ? AND state = 'present' RETURNING root, dir, name",
            (now, reason, last_seen, file_id),
        )
        if rows:
            root, dir, name = rows[0]
            path = join(dir, name)
            journal(conn, now, "missing", file_id, root, path, detail={"reason": reason})
            bump(conn, root, present=-1, missing=1)
            dir_changed(conn, root, dir)
            changed.append((file_id, int(root), path))
    return changed


# --- directories (what the quick sweep remembers) ----------------------------


DirStamp = tuple[int, int, int]  # (mtime_ns, ctime_ns, inode) of a directory
DIRTY: DirStamp = (0, 0, 0)


def dir_stamp(conn: apsw.Connection, root: int, path: bytes) -> DirStamp | None:
    rows = _rows(
        conn, "SELECT mtime_ns, ctime_ns, inode FROM dirs WHERE root = ? AND path = ?", (root, path)
    )
    return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None


def dir_memory(
    conn: apsw.Connection, root: int, path: bytes
) -> tuple[DirStamp | None, bytes | None]:
    """The stamp and files digest stored for ``path`` (each None when unknown)."""
    rows = _rows(
        conn,
        "SELECT mtime_ns, ctime_ns, inode, digest FROM dirs WHERE root = ? AND path = ?",
        (root, path),
    )
    if not rows:
        return None, None
    mtime_ns, ctime_ns, inode, digest = rows[0]
    return (int(mtime_ns), int(ctime_ns), int(inode)), digest


def set_dir_digest(conn: apsw.Connection, root: int, path: bytes, digest: bytes) -> None:
    """Remember the digest of the present files in ``path``; only ever what
    :func:`present_digest` would say now (see :func:`dir_changed`)."""
    conn.execute("UPDATE dirs SET digest = ? WHERE root = ? AND path = ?", (digest, root, path))


def child_dirs(conn: apsw.Connection, root: int, parent: bytes) -> dict[bytes, DirStamp]:
    """The known subdirectories of ``parent``: path → stamp of the last listing."""
    return {
        r[0]: (int(r[1]), int(r[2]), int(r[3]))
        for r in conn.execute(
            # Without statistics the planner prefers the primary key on root
            # alone, a scan of every directory of the root per call (0.4 ms
            # each at 10,000 directories, most of a quick sweep).
            "SELECT path, mtime_ns, ctime_ns, inode FROM dirs INDEXED BY dirs_parent"
            " WHERE root = ? AND parent = ?",
            (root, parent),
        )
    }


def put_dir(conn: apsw.Connection, root: int, path: bytes, stamp: DirStamp) -> None:
    parent = split(path)[0] if path else None
    conn.execute(
        "INSERT INTO dirs(root, path, parent, mtime_ns, ctime_ns, inode) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(root, path) DO UPDATE SET mtime_ns = excluded.mtime_ns,"
        " ctime_ns = excluded.ctime_ns, inode = excluded.inode",
        (root, path, parent, *stamp),
    )


def forget_dirs_under(conn: apsw.Connection, root: int, path: bytes) -> None:
    """Drop ``path`` and every directory below it from the quick-sweep memory."""
    lo, hi = under(path)
    conn.execute(
        "DELETE FROM dirs WHERE root = ? AND (path = ? OR (path >= ? AND path < ?))",
        (root, path, lo, hi),
    )


# --- journal --------------------------------------------------------------------


def journal(
    conn: apsw.Connection,
    now: float,
    kind: str,
    file: int | None,
    root: int | None,
    path: bytes | None,
    old_root: int | None = None,
    old_path: bytes | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    conn.execute(
        "INSERT INTO journal(time, kind, file, root, path, old_root, old_path, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (now, kind, file, root, path, old_root, old_path, json.dumps(detail) if detail else None),
    )
    return conn.last_insert_rowid()


def last_seq(conn: apsw.Connection) -> int:
    rows = _rows(conn, "SELECT max(seq) FROM journal")
    return int(rows[0][0] or 0)


def journal_since(conn: apsw.Connection, since: int, limit: int) -> Iterator[JournalEntry]:
    """Up to ``limit`` entries after ``since``, read as they are consumed."""
    for r in conn.execute(
        "SELECT seq, time, kind, file, root, path, old_root, old_path, detail FROM journal"
        " WHERE seq > ? ORDER BY seq LIMIT ?",
        (since, limit),
    ):
        yield _entry(r)


def history(conn: apsw.Connection, file_id: int) -> list[JournalEntry]:
    return [
        _entry(r)
        for r in conn.execute(
            "SELECT seq, time, kind, file, root, path, old_root, old_path, detail FROM journal"
            " WHERE file = ? ORDER BY seq",
            (file_id,),
        )
    ]


def _entry(row: Row) -> JournalEntry:
    seq, time, kind, file, root, path, old_root, old_path, detail = row
    return JournalEntry(
        seq,
        time,
        kind,
        file,
        root,
        path,
        old_root,
        old_path,
        json.loads(detail) if detail else None,
    )


# --- annotations ------------------------------------------------------------------


def get_annotations(conn: apsw.Connection, file_id: int) -> dict[str, str]:
    return {
        k: v
        for k, v in conn.execute("SELECT key, value FROM annotations WHERE file = ?", (file_id,))
    }


def set_annotation(conn: apsw.Connection, file_id: int, key: str, value: str | None) -> None:
    if value is None:
        conn.execute("DELETE FROM annotations WHERE file = ? AND key = ?", (file_id, key))
    else:
        conn.execute(
            "INSERT INTO annotations(file, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT(file, key) DO UPDATE SET value = excluded.value",
            (file_id, key, value),
        )


# --- helpers for tests and tools ------------------------------------------------------


def iter_files(conn: apsw.Connection, root: int | None = None) -> Iterator[FileRow]:
    """Every file row (for checks and exports; streams, holds nothing)."""
    if root is None:
        cursor = conn.execute(f"SELECT {FILE_COLS} FROM files ORDER BY id")
    else:
        cursor = conn.execute(f"SELECT {FILE_COLS} FROM files WHERE root = ? ORDER BY id", (root,))
    for row in cursor:
        yield FileRow(*row)


# --- queries for the socket API -------------------------------------------------


def list_files(
    conn: apsw.Connection,
    *,
    state: str | None,
    root: int | None,
    after_id: int,
    limit: int,
    missing_before: float | None = None,
    missing_after: float | None = None,
) -> Iterator[FileRow]:
    """A page of files in id order, optionally of one state and one root, missing since when.

    Rows are read as they are consumed, so a page of thousands is never held whole.
    """
    where, params = ["id > ?"], [after_id]
    if missing_before is not None:
        where.append("missing_since < ?")
        params.append(missing_before)  # type: ignore[arg-type]
    if missing_after is not None:
        where.append("missing_since >= ?")
        params.append(missing_after)  # type: ignore[arg-type]
    if state is not None:
        where.append("state = ?")
        params.append(state)  # type: ignore[arg-type]
    if root is not None:
        where.append("root = ?")
        params.append(root)
    sql = f"SELECT {FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
    for r in conn.execute(sql, (*params, limit)):
        yield FileRow(*r)


def totals(conn: apsw.Connection) -> tuple[int, int, int]:
    """Present, missing and offline files over all roots, from the kept counters."""
    row = _rows(
        conn,
        "SELECT coalesce(sum(present), 0), coalesce(sum(missing), 0),"
        " coalesce(sum(offline), 0) FROM roots",
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def missing_before(conn: apsw.Connection, cutoff: float) -> list[int]:
    """Ids of files missing since before ``cutoff`` (unix seconds)."""
    return [
        int(r[0])
        for r in _rows(
            conn,
            "SELECT id FROM files WHERE state = 'missing' AND missing_since < ? ORDER BY id",
            (cutoff,),
        )
    ]


def all_missing(conn: apsw.Connection) -> list[int]:
    return [
        int(r[0]) for r in _rows(conn, "SELECT id FROM files WHERE state = 'missing' ORDER BY id")
    ]


def purge(
    conn: apsw.Connection, file_id: int, now: float, detail: dict[str, Any]
) -> FileRow | None:
    """Delete a missing file for good, with its annotations; journal it. None if not missing."""
    row = get_file(conn, file_id)
    if row is None or row.state != MISSING:
        return None
    conn.execute("DELETE FROM annotations WHERE file = ?", (file_id,))
    conn.execute("DELETE FROM arrivals WHERE size = ? AND file = ?", (row.size, file_id))
    conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    bump(conn, row.root, missing=-1)
    journal(conn, now, "purge", file_id, row.root, row.path, detail=detail)
    return row


def mark_dir_dirty(conn: apsw.Connection, root: int, dir: bytes) -> None:
    """Make the next quick sweep list ``dir``: its listing is known to be stale.

    Ancestors without a row get one too, or the quick sweep, which reaches a
    directory only through its parent's known children, would never get there.
    """
    put_dir(conn, root, dir, DIRTY)
    while dir:
        dir = split(dir)[0]
        conn.execute(
            "INSERT OR IGNORE INTO dirs(root, path, parent, mtime_ns, ctime_ns, inode) VALUES (?, ?, ?, 0, 0, 0)",
            (root, dir, split(dir)[0] if dir else None),
        )


# --- moves (live events) ----------------------------------------------------------


def files_with_inode(conn: apsw.Connection, device: int, inode: int) -> list[FileRow]:
    """Present or missing files last seen with this ``(device, inode)``."""
    return [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files WHERE device = ? AND inode = ? AND state != 'offline'",
            (device, inode),
        )
    ]


def move_file(
    conn: apsw.Connection,
    row: FileRow,
    root: int,
    path: bytes,
    sig: Signature | None,
    now: float,
    *,
    kind: str = "move",
    detail: dict[str, Any] | None = None,
) -> None:
    """Give file ``row`` a new place (and present state); journal it as ``kind``.

    A rename changes the inode's ctime and nothing else: the hash stays
    valid when size, mtime and inode are unchanged.
    """
    dir, name = split(path)
    new_sig = sig or row.signature
    keep_hash = (new_sig[0], new_sig[1], new_sig[3], new_sig[4]) == (
        row.size,
        row.mtime_ns,
        row.device,
        row.inode,
    )
    conn.execute(
        "UPDATE files SET root = ?, dir = ?, name = ?, size = ?, mtime_ns = ?, ctime_ns = ?, device = ?, inode = ?,"
        " state = 'present', missing_since = NULL, missing_reason = NULL, last_seen = ?"
        + ("" if keep_hash else ", hash = NULL")
        + " WHERE id = ?",
        (root, dir, name, *new_sig, now, row.id),
    )
    if row.root != root or row.state != PRESENT:
        bump(conn, row.root, **{row.state: -1})
        bump(conn, root, present=1)
    dir_changed(conn, row.root, row.dir)
    dir_changed(conn, root, dir)
    journal(
        conn,
        now,
        kind,
        row.id,
        root,
        path,
        old_root=row.root if row.root != root else None,
        old_path=row.path,
        detail=detail,
    )


def move_prefix(
    conn: apsw.Connection, src_root: int, src: bytes, dst_root: int, dst: bytes, now: float
) -> int:
    """Move every file under directory ``src`` to under ``dst``: one UPDATE for the subtree.

    Journals a ``move`` per file (in one INSERT ... SELECT) so history and
    ``changes`` show each file's new path. Returns the number of files.
    Raises apsw.ConstraintError when a moved path is taken at the destination.
    """
    lo, hi = under(src)
    cut = len(src) + 1
    # Two index ranges each time (the directory itself, and below it): an OR
    # of the two makes the planner scan the whole root.
    ranges = (("dir = ?", (src,)), ("dir >= ? AND dir < ?", (lo, hi)))
    count = 0
    for cond, args in ranges:
        # CAST keeps paths BLOBs (|| on BLOBs yields TEXT). The journal is
        # written first, from the rows as they are, with their new paths.
        conn.execute(
            "INSERT INTO journal(time, kind, file, root, path, old_root, old_path)"
            " SELECT ?, 'move', id, ?, CAST(? || substr(dir, ?) || x'2f' || name AS BLOB), ?,"
            f" CAST(CASE WHEN dir = x'' THEN name ELSE dir || x'2f' || name END AS BLOB)"
            f" FROM files WHERE root = ? AND {cond} ORDER BY id",
            (now, dst_root, dst, cut, src_root if src_root != dst_root else None, src_root, *args),
        )
        if src_root != dst_root:
            for state, n in _rows(
                conn,
                f"SELECT state, count(*) FROM files WHERE root = ? AND {cond} GROUP BY state",
                (src_root, *args),
            ):
                bump(conn, src_root, **{state: -n})
                bump(conn, dst_root, **{state: n})
        conn.execute(
            f"UPDATE files SET root = ?, dir = CAST(? || substr(dir, ?) AS BLOB) WHERE root = ? AND {cond}",
            (dst_root, dst, cut, src_root, *args),
        )
        count += conn.changes()
    # The quick sweep's memory moves along; the moved directory itself is dirty.
    conn.execute(
        "UPDATE dirs SET root = ?, path = CAST(? || substr(path, ?) AS BLOB),"
        " parent = CAST(? || substr(parent, ?) AS BLOB)"
        " WHERE root = ? AND path >= ? AND path < ?",
        (dst_root, dst, cut, dst, cut, src_root, lo, hi),
    )
    conn.execute("DELETE FROM dirs WHERE root = ? AND path = ?", (src_root, src))
    mark_dir_dirty(conn, dst_root, dst)
    return count


def unhashed(conn: apsw.Connection, after_id: int, limit: int) -> list[FileRow]:
    """Present files without a hash, in id order (the background hasher's queue)."""
    return [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files WHERE hash IS NULL AND state = 'present' AND id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        )
    ]


def count_unhashed(conn: apsw.Connection) -> int:
    return int(_value(conn, "SELECT count(*) FROM files WHERE hash IS NULL AND state = 'present'"))


def set_hash(conn: apsw.Connection, file_id: int, sig: Signature, digest: bytes) -> str:
    """Store a hash if the file is still what was hashed (same signature).

    Returns ``"stored"``; ``"stale"`` when the row no longer has that
    signature (the file changed or went; nothing is stored); or
    ``"mismatch"`` when the row already holds another hash for the same
    signature. A file cannot change without its ctime changing, so that is a
    hash that belongs to another file: it is dropped here, to be hashed again.
    """
    match = "id = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND device = ? AND inode = ?"
    conn.execute(
        f"UPDATE files SET hash = ? WHERE {match} AND hash IS NULL", (digest, file_id, *sig)
    )
    if conn.changes():
        return "stored"
    held = _rows(conn, f"SELECT hash FROM files WHERE {match}", (file_id, *sig))
    if not held:
        return "stale"
    if held[0][0] == digest:
        return "stored"
    conn.execute("UPDATE files SET hash = NULL WHERE id = ?", (file_id,))
    return "mismatch"


def missing_with_size(conn: apsw.Connection, size: int) -> list[FileRow]:
    """Missing files of this size that have a hash: the candidates for relinking by content."""
    return [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files WHERE state = 'missing' AND size = ? AND hash IS NOT NULL",
            (size,),
        )
    ]


def retire_into(
    conn: apsw.Connection,
    keep: FileRow,
    take: FileRow,
    digest: bytes | None,
    now: float,
    detail: dict[str, Any],
) -> bool:
    """File ``keep`` is the file that ``take`` holds (a relink by content, an editor's save):
    ``keep`` gets its place and signature, and ``take``'s interim id is retired.

    ``take`` is deleted, journaled as ``retire`` with ``into`` naming the id
    it went into; ``keep`` keeps its own id, annotations, first_seen and
    history, and journals a ``relink`` (it was missing) or a ``move``.
    Refused (False) unless both are still as the caller saw them (``keep``
    in the same state, ``take`` present where it was) and ``take`` has no
    annotations of its own. ``digest``: ``take``'s content hash, if known.
    """
    k, t = get_file(conn, keep.id), get_file(conn, take.id)
    if (
        k is None
        or t is None
        or (k.state, k.root, k.path) != (keep.state, keep.root, keep.path)
        or k.state == OFFLINE
        or t.state != PRESENT
        or (t.root, t.path) != (take.root, take.path)
    ):
        return False
    if _value(conn, "SELECT 1 FROM annotations WHERE file = ? LIMIT 1", (t.id,)) is not None:
        return False  # someone already gave the new file an identity of its own
    conn.execute("DELETE FROM files WHERE id = ?", (t.id,))
    conn.execute("DELETE FROM arrivals WHERE size = ? AND file = ?", (t.size, t.id))
    bump(conn, t.root, present=-1)
    dir_changed(conn, t.root, t.dir)
    journal(conn, now, "retire", t.id, t.root, t.path, detail={"into": k.id})
    kind = "relink" if k.state != PRESENT else "move"
    move_file(conn, k, t.root, t.path, t.signature, now, kind=kind, detail=detail)
    conn.execute("UPDATE files SET hash = ? WHERE id = ?", (digest or t.hash, k.id))
    return True


def arrivals_of_size(conn: apsw.Connection, size: int, since: float, exclude: int) -> list[FileRow]:
    """Present files of ``size`` that arrived at or after ``since`` (not first-indexed), oldest first."""
    return [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {', '.join('f.' + c.strip() for c in FILE_COLS.split(','))}"
            " FROM arrivals a JOIN files f ON f.id = a.file"
            " WHERE a.size = ? AND f.first_seen >= ? AND f.state = 'present' AND f.size = a.size"
            " AND f.id != ? ORDER BY a.file",
            (size, since, exclude),
        )
    ]


def prune_arrivals(conn: apsw.Connection, cutoff: float) -> int:
    """Forget arrivals older than ``cutoff``: they can no longer be the copy half of a move."""
    conn.execute("DELETE FROM arrivals WHERE time < ?", (cutoff,))
    return conn.changes()


def has_annotations(conn: apsw.Connection, file_id: int) -> bool:
    return _value(conn, "SELECT 1 FROM annotations WHERE file = ? LIMIT 1", (file_id,)) is not None


def journal_tail(
    conn: apsw.Connection, since: int, upto: int, limit: int
) -> list[tuple[int, str, int, int | None]]:
    """``(seq, kind, file, size)`` of the ``new`` and ``missing`` entries in ``(since, upto]``.

    Moves and edits are skipped in SQL: a directory move journals a row per
    file, and none of them can be a return.
    """
    return [
        (int(r[0]), r[1], int(r[2]), r[3])
        for r in _rows(
            conn,
            "SELECT j.seq, j.kind, j.file, f.size FROM journal j LEFT JOIN files f ON f.id = j.file"
            " WHERE j.seq > ? AND j.seq <= ? AND j.kind IN ('new', 'missing')"
            " AND j.file IS NOT NULL ORDER BY j.seq LIMIT ?",
            (since, upto, limit),
        )
    ]


def missing_hashed_sizes(conn: apsw.Connection) -> set[int]:
    return {
        int(r[0])
        for r in _rows(
            conn, "SELECT DISTINCT size FROM files WHERE state = 'missing' AND hash IS NOT NULL"
        )
    }


def has_files_outside(conn: apsw.Connection, root: int) -> bool:
    """True if any other root has files (a first index may find some of them moved in)."""
    return _value(conn, "SELECT 1 FROM files WHERE root != ? LIMIT 1", (root,)) is not None


# --- roots going offline and coming back ----------------------------------------------


def get_identity(
    conn: apsw.Connection, root: int
) -> tuple[str | None, str, str, int, bytes, int] | None:
    """``(uuid, source, fstype, device, inner, fsid)`` recorded for a root, or None."""
    rows = _rows(
        conn,
        "SELECT fs_uuid, fs_source, fs_type, device, fs_inner, coalesce(fs_id, 0) FROM roots"
        " WHERE id = ? AND device IS NOT NULL",
        (root,),
    )
    return tuple(rows[0]) if rows else None


def set_identity(
    conn: apsw.Connection, root: int, identity: tuple[str | None, str, str, int, bytes, int]
) -> None:
    """Record the volume a root is on (see :class:`filewarden.mounts.Identity`, in field order)."""
    conn.execute(
        "UPDATE roots SET fs_uuid = ?, fs_source = ?, fs_type = ?, device = ?, fs_inner = ?, fs_id = ?"
        " WHERE id = ?",
        (*identity, root),
    )


def set_root_offline(conn: apsw.Connection, root: int, reason: str, now: float) -> int:
    """The root is not there: its present files become offline, in one update; missing ones stay.

    One journal entry for the root, not one per file: an unplugged disk of a
    million files must not write a million rows. Returns the number of files.
    """
    conn.execute("UPDATE files SET state = 'offline' WHERE root = ? AND state = 'present'", (root,))
    changed = conn.changes()
    bump(conn, root, present=-changed, offline=changed)
    conn.execute("UPDATE dirs SET digest = NULL WHERE root = ?", (root,))
    set_root_state(conn, root, OFFLINE, reason, now)
    path = _value(conn, "SELECT path FROM roots WHERE id = ?", (root,))
    journal(
        conn,
        now,
        "offline",
        None,
        root,
        None,
        detail={"reason": reason, "files": changed, "root": os.fsdecode(path)},
    )
    return changed


def set_root_online(conn: apsw.Connection, root: int, now: float) -> int:
    """The root is back: its offline files are present again until the sweep that follows says otherwise."""
    conn.execute(
        "UPDATE files SET state = 'present', last_seen = ? WHERE root = ? AND state = 'offline'",
        (now, root),
    )
    changed = conn.changes()
    bump(conn, root, present=changed, offline=-changed)
    conn.execute("UPDATE dirs SET digest = NULL WHERE root = ?", (root,))
    was = _value(conn, "SELECT state FROM roots WHERE id = ?", (root,))
    set_root_state(conn, root, "online", None, now)
    if was == OFFLINE:  # a root seen for the first time has nothing to come back from
        path = _value(conn, "SELECT path FROM roots WHERE id = ?", (root,))
        journal(
            conn,
            now,
            "online",
            None,
            root,
            None,
            detail={"files": changed, "root": os.fsdecode(path)},
        )
    return changed


# --- retention -------------------------------------------------------------------------


def compact_journal(conn: apsw.Connection, cutoff: float) -> int:
    """Drop journal entries older than ``cutoff``, except each file's latest and the very last.

    A program that keeps its own copy and asks for ``changes`` since a seq
    that is gone is told so (``oldest_seq``) and re-reads with ``list``.
    Returns how many entries went.
    """
    conn.execute(
        "DELETE FROM journal WHERE time < ? AND seq < (SELECT max(seq) FROM journal)"
        " AND seq NOT IN (SELECT max(seq) FROM journal WHERE file IS NOT NULL GROUP BY file)",
        (cutoff,),
    )
    return conn.changes()


def oldest_seq(conn: apsw.Connection) -> int:
    return int(_value(conn, "SELECT coalesce(min(seq), 0) FROM journal"))
