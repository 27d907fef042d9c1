"""The missing files as a person looks through them: filtered, sorted, a page at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import apsw

from filewarden.catalog._records import FILE_COLS, PATH_SQL, FileRow, _rows

# Sort keys and their columns; the id breaks ties, so pages never overlap. A path
# sorts by root, then directory, then name: the order of the files_path index
# (whose last column is the id, for a file that is not present).
SORTS = {
    "missing_since": ("missing_since", "id"),
    "size": ("size", "id"),
    "path": ("root", "dir", "name", "CASE WHEN state = 'present' THEN 0 ELSE id END"),
    "id": ("id",),
}
COUNT_CAP = 100_000  # beyond this a count says "more than" (a path filter is a scan)


@dataclasses.dataclass(frozen=True)
class MissingFilter:
    """Which missing files: of a root, for a reason, missing since a time range,
    with a path holding some bytes. Every field is optional."""

    root: int | None = None
    reason: str | None = None
    before: float | None = None  # missing since before this (older than)
    after: float | None = None  # missing since at or after this (newer than)
    text: bytes = b""  # a part of the (absolute) path

    def where(self) -> tuple[str, list[object]]:
        where: list[str] = ["state = 'missing'"]
        params: list[object] = []
        if self.root is not None:
            where.append("root = ?")
            params.append(self.root)
        if self.reason:
            where.append("missing_reason = ?")
            params.append(self.reason)
        if self.before is not None:
            where.append("missing_since < ?")
            params.append(self.before)
        if self.after is not None:
            where.append("missing_since >= ?")
            params.append(self.after)
        if self.text:  # in the whole path, as it is shown
            where.append(
                f"instr((SELECT path FROM roots WHERE roots.id = files.root) || x'2f' || {PATH_SQL},"
                " ?) > 0"
            )
            params.append(self.text)
        return " AND ".join(where), params


def missing_page(
    conn: apsw.Connection,
    chosen: MissingFilter,
    *,
    sort: str = "missing_since",
    descending: bool = True,
    offset: int = 0,
    limit: int = 50,
) -> Iterator[FileRow]:
    """One page of the missing files ``chosen`` picks, in ``sort`` order (then by id).

    The newest first (the default) walks the ``files_missing`` index: the
    first page of a million missing files reads a page's rows, not a million.
    Rows are read as they are consumed (``limit`` -1: all of them, for an export).
    """
    where, params = chosen.where()
    way = "DESC" if descending else "ASC"
    order = ", ".join(f"{column} {way}" for column in SORTS[sort])
    sql = f"SELECT {FILE_COLS} FROM files WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    for r in conn.execute(sql, (*params, limit, offset)):
        yield FileRow(*r)


def missing_count(conn: apsw.Connection, chosen: MissingFilter, cap: int = COUNT_CAP) -> int:
    """How many ``chosen`` picks, up to ``cap`` (``cap + 1``: more than that)."""
    where, params = chosen.where()
    sql = f"SELECT count(*) FROM (SELECT 1 FROM files WHERE {where} LIMIT ?)"
    return int(_rows(conn, sql, (*params, cap + 1))[0][0])


def missing_ids(conn: apsw.Connection, chosen: MissingFilter) -> list[int]:
    """Every id ``chosen`` picks (what "remove all that match" removes)."""
    where, params = chosen.where()
    sql = f"SELECT id FROM files WHERE {where} ORDER BY id"
    return [int(r[0]) for r in conn.execute(sql, params)]


def missing_reasons(conn: apsw.Connection) -> list[str]:
    """The reasons missing files have: one step of the reason index each (a skip scan),
    not a read of every missing file."""
    return [
        str(r[0])
        for r in _rows(
            conn,
            "WITH RECURSIVE reason(r) AS ("
            " SELECT min(missing_reason) FROM files WHERE state = 'missing'"
            " UNION ALL SELECT (SELECT min(missing_reason) FROM files"
            "  WHERE state = 'missing' AND missing_reason > reason.r)"
            " FROM reason WHERE r IS NOT NULL)"
            " SELECT r FROM reason WHERE r IS NOT NULL",
        )
    ]
