"""Giving known files new places: one file, a whole subtree, or a relink that retires an interim id."""

from __future__ import annotations

from typing import Any

import apsw

from filewarden.catalog._dirs import dir_changed, mark_dir_dirty
from filewarden.catalog._files import get_file
from filewarden.catalog._journal import journal
from filewarden.catalog._media import get_media, set_media
from filewarden.catalog._records import (
    OFFLINE,
    PATH_SQL,
    PRESENT,
    FileRow,
    Media,
    Signature,
    _rows,
    _value,
    split,
    under,
)
from filewarden.catalog._roots import bump


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
            f" {PATH_SQL}"
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


def retire_into(
    conn: apsw.Connection,
    keep: FileRow,
    take: FileRow,
    digest: bytes | None,
    now: float,
    detail: dict[str, Any],
    media: Media | None = None,
) -> bool:
    """File ``keep`` is the file that ``take`` holds (a relink by content, an editor's save):
    ``keep`` gets its place and signature, and ``take``'s interim id is retired.

    ``take`` is deleted, journaled as ``retire`` with ``into`` naming the id
    it went into; ``keep`` keeps its own id, annotations, first_seen and
    history, and journals a ``relink`` (it was missing) or a ``move``.
    Refused (False) unless both are still as the caller saw them (``keep``
    in the same state, ``take`` present where it was) and ``take`` has no
    annotations of its own. ``digest``: ``take``'s content hash, if known;
    ``media``: its fingerprint, if read now (else the one stored goes along).
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
    media = media or get_media(conn, t.id)
    conn.execute("DELETE FROM files WHERE id = ?", (t.id,))
    conn.execute("DELETE FROM arrivals WHERE size = ? AND file = ?", (t.size, t.id))
    bump(conn, t.root, present=-1)
    dir_changed(conn, t.root, t.dir)
    journal(conn, now, "retire", t.id, t.root, t.path, detail={"into": k.id})
    kind = "relink" if k.state != PRESENT else "move"
    move_file(conn, k, t.root, t.path, t.signature, now, kind=kind, detail=detail)
    conn.execute("UPDATE files SET hash = ? WHERE id = ?", (digest or t.hash, k.id))
    held = digest or t.hash
    if media is not None and held is not None:
        set_media(conn, [(k.id, t.signature, held, media)])
    return True
