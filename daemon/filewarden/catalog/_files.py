"""The files table: lookups, inserts, signatures, missing files and purging them."""

from __future__ import annotations

import functools
import json
import marshal
from collections.abc import Iterator, Sequence
from typing import Any

import apsw
import xxhash

from filewarden.catalog._dirs import dir_changed
from filewarden.catalog._journal import journal
from filewarden.catalog._records import (
    FILE_COLS,
    MISSING,
    OFFLINE,
    PATH_SQL,
    PRESENT,
    DirRow,
    FileRow,
    Signature,
    _rows,
    _value,
    join,
    split,
    under,
)
from filewarden.catalog._roots import bump


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


def files_by_id(conn: apsw.Connection, ids: Sequence[int]) -> dict[int, FileRow]:
    """The rows of many ids in one query (those that exist)."""
    return {
        int(r[0]): FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
    }


def file_at(conn: apsw.Connection, root: int, path: bytes) -> FileRow | None:
    """The file at ``path``: the present one, else the most recently missing (or offline) one."""
    dir, name = split(path)
    # Chosen here, not by an ORDER BY: SQLite sorts even one row in a temporary
    # b-tree, which made this lookup, once per file of a create storm, six
    # times slower (41 us instead of 7).
    rows = [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files WHERE root = ? AND dir = ? AND name = ?",
            (root, dir, name),
        )
    ]
    return min(rows, key=_latest_at_path) if rows else None


_STATE_RANK = {PRESENT: 0, OFFLINE: 1}


def _latest_at_path(row: FileRow) -> tuple[int, float, int]:
    """Present first, then offline, then the most recently missing; the newest id breaks ties."""
    return (_STATE_RANK.get(row.state, 2), -(row.missing_since or 0.0), -row.id)


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
    remembered as an arrival (see :func:`copy_candidates`).
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
        conn.execute(
            f"INSERT INTO journal(time, kind, file, root, path) SELECT ?, 'new', id, root, {PATH_SQL}"
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


def iter_files(conn: apsw.Connection, root: int | None = None) -> Iterator[FileRow]:
    """Every file row (for checks and exports; streams, holds nothing)."""
    if root is None:
        cursor = conn.execute(f"SELECT {FILE_COLS} FROM files ORDER BY id")
    else:
        cursor = conn.execute(f"SELECT {FILE_COLS} FROM files WHERE root = ? ORDER BY id", (root,))
    for row in cursor:
        yield FileRow(*row)


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


def purge_root(conn: apsw.Connection, root: int, now: float, detail: dict[str, Any]) -> int:
    """Delete every file of a root that is no longer configured, whatever its state, with
    their annotations, listings and arrivals; journal a ``purge`` for each. Returns how many.

    The root's row stays (old journal entries name it), with zero counts.
    """
    conn.execute(
        "INSERT INTO journal(time, kind, file, root, path, detail)"
        f" SELECT ?, 'purge', id, root, {PATH_SQL}, ? FROM files WHERE root = ? ORDER BY id",
        (now, json.dumps(detail), root),
    )
    purged = conn.changes()
    conn.execute(
        "DELETE FROM arrivals WHERE file IN (SELECT id FROM files WHERE root = ?)", (root,)
    )
    conn.execute(
        "DELETE FROM annotations WHERE file IN (SELECT id FROM files WHERE root = ?)", (root,)
    )
    conn.execute("DELETE FROM files WHERE root = ?", (root,))
    conn.execute("DELETE FROM dirs WHERE root = ?", (root,))
    conn.execute("UPDATE roots SET present = 0, missing = 0, offline = 0 WHERE id = ?", (root,))
    return purged
