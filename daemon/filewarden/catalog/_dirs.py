"""The dirs table: what the quick sweep remembers of each directory's last listing."""

from __future__ import annotations

import apsw

from filewarden.catalog._records import DIRTY, DirStamp, _rows, split, under


def dir_changed(conn: apsw.Connection, root: int, dir: bytes) -> None:
    """Forget the digest of ``dir``: its files' names, signatures or states changed.

    Every catalog function that adds, removes, renames, re-signs or changes the
    state of a file calls this in the same transaction, for the directory
    it leaves and the one it enters; a stored digest therefore always
    describes the rows as they are.
    """
    conn.execute(
        "UPDATE dirs SET digest = NULL WHERE root = ? AND path = ? AND digest IS NOT NULL",
        (root, dir),
    )


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
