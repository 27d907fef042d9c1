"""Content hashes and the candidates a file is matched against.

The background hasher's queue, and the known files :mod:`filewarden.identity`
weighs when a file appears: by inode, by size and hash, and the arrivals
table of recent copies.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import apsw

from filewarden.catalog._journal import journal
from filewarden.catalog._records import FILE_COLS, FileRow, Row, Signature, _rows, _value


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


_SAME = "id = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND device = ? AND inode = ?"


def set_hashes(
    conn: apsw.Connection,
    results: Sequence[tuple[int, Signature, bytes]],
    now: float | None = None,
) -> tuple[int, list[int]]:
    """Store ``(id, signature, digest)`` hashes, each if the file is still what was hashed,
    and journal one ``hash`` entry with the ids of those stored (a program that keeps a
    copy of the records, such as a fleet's, reads their hashes again).

    Returns how many were stored, and the ids whose row already held
    another hash for the same signature. A file cannot change without its
    ctime changing, so that is a hash that belongs to another file: it is
    dropped here, to be hashed again. A row that no longer has the
    signature (the file changed or went) is left alone.
    """
    moment = time.time() if now is None else now
    before = conn.total_changes()
    conn.executemany(
        f"UPDATE files SET hash = ? WHERE {_SAME} AND hash IS NULL",
        [(digest, file_id, *sig) for file_id, sig, digest in results],
    )
    if conn.total_changes() - before == len(results):
        # The usual case: every one stored in one statement. One entry for the batch, not
        # one a file (that cost the hasher 15% over small files; so did RETURNING).
        _journal_hashes(conn, moment, [file_id for file_id, _, _ in results])
        return len(results), []
    stored, mismatched = [], []
    for file_id, sig, digest in results:
        held = _rows(conn, f"SELECT hash FROM files WHERE {_SAME}", (file_id, *sig))
        if not held:
            continue
        if held[0][0] == digest:
            stored.append(file_id)
        else:
            conn.execute("UPDATE files SET hash = NULL WHERE id = ?", (file_id,))
            mismatched.append(file_id)
    _journal_hashes(conn, moment, stored)
    return len(stored), mismatched


def _journal_hashes(conn: apsw.Connection, now: float, ids: list[int]) -> None:
    if ids:
        journal(conn, now, "hash", None, None, None, detail={"ids": ids})


def set_hash(conn: apsw.Connection, file_id: int, sig: Signature, digest: bytes) -> str:
    """One hash (see :func:`set_hashes`): ``"stored"``, ``"stale"`` (the row no longer has that
    signature; nothing is stored) or ``"mismatch"`` (another hash was held; dropped)."""
    stored, mismatched = set_hashes(conn, [(file_id, sig, digest)])
    return "mismatch" if mismatched else "stored" if stored else "stale"


def files_with_inode(conn: apsw.Connection, device: int, inode: int) -> list[FileRow]:
    """Present or missing files last seen with this ``(device, inode)``.

    Nothing while a first index loads in bulk (its inode index is built after
    the rows; see ``begin_bulk``): a scan of every row per lookup would stall
    the live events of a storm. The files it could find then are those the
    index listed moments before that moved without a paired event; content
    (rule 3) still finds them.
    """
    try:
        rows = _rows(
            conn,
            f"SELECT {FILE_COLS} FROM files INDEXED BY files_inode"
            " WHERE device = ? AND inode = ? AND state != 'offline'",
            (device, inode),
        )
    except apsw.SQLError as exc:
        if "no such index" not in str(exc):
            raise
        return []
    return [FileRow(*r) for r in rows]


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


def missing_hashed_sizes(conn: apsw.Connection) -> set[int]:
    return {
        int(r[0])
        for r in _rows(
            conn, "SELECT DISTINCT size FROM files WHERE state = 'missing' AND hash IS NOT NULL"
        )
    }


def copy_candidates(
    conn: apsw.Connection, size: int, hashes: Collection[bytes], unhashed: int
) -> list[FileRow]:
    """Present files of ``size`` that arrived (not first-indexed), without annotations: all
    whose hash is one of ``hashes``, and the ``unhashed`` latest to arrive without a hash yet.

    The possible copy halves of files of ``size`` that went missing, asked
    once for all that went at once and weighed by the caller: deleting a
    fresh import of many files of one size would otherwise walk all its
    arrivals for every file deleted.
    """
    cols = ", ".join("f." + c.strip() for c in FILE_COLS.split(","))
    where = (
        f"SELECT {cols} FROM arrivals a JOIN files f ON f.id = a.file"
        " WHERE a.size = ? AND f.state = 'present' AND f.size = a.size"
        " AND NOT EXISTS (SELECT 1 FROM annotations n WHERE n.file = f.id)"
    )
    found: list[Row] = []
    wanted = list(hashes)
    for i in range(0, len(wanted), 500):
        part = wanted[i : i + 500]
        found += _rows(conn, f"{where} AND f.hash IN ({', '.join('?' * len(part))})", (size, *part))
    found += _rows(
        conn, f"{where} AND f.hash IS NULL ORDER BY a.file DESC LIMIT ?", (size, unhashed)
    )
    return [FileRow(*r) for r in found]


def prune_arrivals(conn: apsw.Connection, cutoff: float) -> int:
    """Forget arrivals older than ``cutoff``: they can no longer be the copy half of a move."""
    conn.execute("DELETE FROM arrivals WHERE time < ?", (cutoff,))
    return conn.changes()


def has_files_outside(conn: apsw.Connection, root: int) -> bool:
    """True if any other root has files (a first index may find some of them moved in)."""
    return _value(conn, "SELECT 1 FROM files WHERE root != ? LIMIT 1", (root,)) is not None
