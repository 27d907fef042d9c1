"""The roots table: each root's state, kept counters and the volume it was first seen on."""

from __future__ import annotations

import dataclasses
import os

import apsw

from filewarden import mounts
from filewarden.catalog._journal import journal
from filewarden.catalog._records import OFFLINE, RootRow, _rows, _value

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


def bump(
    conn: apsw.Connection, root: int, present: int = 0, missing: int = 0, offline: int = 0
) -> None:
    """Adjust a root's counters. Every catalog function that adds, removes or
    changes the state of files calls this in the same transaction, so the
    counters are exact without a per-row trigger (which cost 5 µs a row)."""
    if present or missing or offline:
        conn.execute(
            "UPDATE roots SET present = present + ?, missing = missing + ?, offline = offline + ?"
            " WHERE id = ?",
            (present, missing, offline, root),
        )


def totals(conn: apsw.Connection) -> tuple[int, int, int]:
    """Present, missing and offline files over all roots, from the kept counters."""
    row = _rows(
        conn,
        "SELECT coalesce(sum(present), 0), coalesce(sum(missing), 0),"
        " coalesce(sum(offline), 0) FROM roots",
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def get_identity(conn: apsw.Connection, root: int) -> mounts.Identity | None:
    """The volume recorded for a root by :func:`set_identity`, or None."""
    rows = _rows(
        conn,
        "SELECT fs_uuid, fs_source, fs_type, device, fs_inner, coalesce(fs_id, 0) FROM roots"
        " WHERE id = ? AND device IS NOT NULL",
        (root,),
    )
    return mounts.Identity(*rows[0]) if rows else None


def set_identity(conn: apsw.Connection, root: int, identity: mounts.Identity) -> None:
    """Record the volume a root is on; :func:`get_identity` reads it back."""
    conn.execute(
        "UPDATE roots SET fs_uuid = ?, fs_source = ?, fs_type = ?, device = ?, fs_inner = ?, fs_id = ?"
        " WHERE id = ?",
        (*dataclasses.astuple(identity), root),
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
