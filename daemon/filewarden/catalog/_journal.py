"""The journal: one entry per change, read back by ``changes``, ``history`` and relinking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apsw

from filewarden.catalog._records import JournalEntry, Row, _rows, _value


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


def compact_journal(conn: apsw.Connection, cutoff: float) -> int:
    """Drop journal entries older than ``cutoff``, except each file's latest and the very last.

    A program that keeps its own copy and asks for ``changes`` since a seq
    before the last entry removed is told so (``reset_required``,
    :func:`compacted_through`) and re-reads with ``list``.
    Returns how many entries went.
    """
    removed = _rows(
        conn,
        "DELETE FROM journal WHERE time < ? AND seq < (SELECT max(seq) FROM journal)"
        " AND seq NOT IN (SELECT max(seq) FROM journal WHERE file IS NOT NULL GROUP BY file)"
        " RETURNING seq",
        (cutoff,),
    )
    if removed:
        # A cursor before the last entry removed can no longer be served in full.
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('compacted_through', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
            (max(seq for (seq,) in removed),),
        )
    return len(removed)


def compacted_through(conn: apsw.Connection) -> int:
    """The last seq that compaction removed (0: none): a cursor before it missed entries."""
    return int(_value(conn, "SELECT value FROM meta WHERE key = 'compacted_through'") or 0)


def oldest_seq(conn: apsw.Connection) -> int:
    return int(_value(conn, "SELECT coalesce(min(seq), 0) FROM journal"))


def instance(conn: apsw.Connection) -> str:
    """The catalog's instance: a UUID made with it, never reused."""
    return str(_value(conn, "SELECT value FROM meta WHERE key = 'instance'"))


LAG_CAP = 10_000_000


def journal_lag(conn: apsw.Connection, cursor: int) -> tuple[int, float | None]:
    """How many entries follow ``cursor`` (counted up to LAG_CAP), and the time of the
    first of them (None: none follow)."""
    count = _value(
        conn,
        "SELECT count(*) FROM (SELECT 1 FROM journal WHERE seq > ? LIMIT ?)",
        (cursor, LAG_CAP),
    )
    first = _value(conn, "SELECT time FROM journal WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,))
    return int(count), first


def host(conn: apsw.Connection) -> str:
    """The host's identity in a fleet: a UUID made once, kept with the catalog."""
    return str(_value(conn, "SELECT value FROM meta WHERE key = 'host'"))


def journal_by_day(conn: apsw.Connection, since: float) -> list[tuple[int, str, int, int]]:
    """``(day, kind, entries, files)`` for the entries from ``since`` (unix seconds) on,
    ``day`` counted from the epoch (UTC) and ``files`` the sum of the entries' ``files``
    (a root's ``offline`` and ``online``). Entries are in time order, so the first one
    to count is found by bisecting ``seq``, not by a scan."""
    low = int(_value(conn, "SELECT min(seq) FROM journal") or 0)
    high = int(_value(conn, "SELECT max(seq) FROM journal") or 0) + 1
    while low < high:
        mid = (low + high) // 2
        at = _value(conn, "SELECT time FROM journal WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,))
        if at is not None and at < since:
            low = mid + 1
        else:
            high = mid
    return [
        (int(day), str(kind), int(count), int(files or 0))
        for day, kind, count, files in _rows(
            conn,
            "SELECT CAST(time / 86400 AS INTEGER), kind, count(*),"
            " sum(json_extract(detail, '$.files')) FROM journal WHERE seq >= ? GROUP BY 1, 2",
            (low,),
        )
    ]
