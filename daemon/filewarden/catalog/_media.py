"""Media fingerprints: rule 4's lookups, ``candidates``' comparisons and coverage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apsw

from filewarden.catalog._records import FILE_COLS, FileRow, Media, Signature, _rows

_EXTRA = ("duration", "width", "height", "title", "artist", "album")
_SAME = "id = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND device = ? AND inode = ?"


def set_media(conn: apsw.Connection, found: Sequence[tuple[int, Signature, bytes, Media]]) -> int:
    """Store ``(id, signature, digest, media)``, each if the row still holds that signature
    and hash (the media of a hash that was not stored belongs to nothing). Returns how many."""
    before = conn.total_changes()
    conn.executemany(
        "INSERT OR REPLACE INTO media(file, kind, fingerprint, duration, width, height, title,"
        " artist, album) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?"
        f" WHERE EXISTS (SELECT 1 FROM files WHERE {_SAME} AND hash = ?)",
        [
            (file_id, m.kind, m.value, *(m.extra.get(k) for k in _EXTRA), file_id, *sig, digest)
            for file_id, sig, digest, m in found
        ],
    )
    return conn.total_changes() - before


def get_media(conn: apsw.Connection, file_id: int) -> Media | None:
    rows = _rows(
        conn,
        f"SELECT kind, fingerprint, {', '.join(_EXTRA)} FROM media WHERE file = ?",
        (file_id,),
    )
    if not rows:
        return None
    kind, value, *extra = rows[0]
    return Media(kind, value, {k: v for k, v in zip(_EXTRA, extra, strict=True) if v is not None})


def media_of(conn: apsw.Connection, ids: Sequence[int]) -> dict[int, Media]:
    """The media rows of many files at once (a page of records), for those that have one."""
    return {
        int(file_id): Media(
            kind, value, {k: v for k, v in zip(_EXTRA, extra, strict=True) if v is not None}
        )
        for file_id, kind, value, *extra in _rows(
            conn,
            f"SELECT file, kind, fingerprint, {', '.join(_EXTRA)} FROM media"
            " WHERE file IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
    }


def with_fingerprint(conn: apsw.Connection, kind: str, value: bytes, state: str) -> list[FileRow]:
    """Files in ``state`` whose media has this fingerprint."""
    cols = ", ".join(f"f.{c.strip()}" for c in FILE_COLS.split(","))
    return [
        FileRow(*r)
        for r in _rows(
            conn,
            f"SELECT {cols} FROM media m JOIN files f ON f.id = m.file"
            " WHERE m.fingerprint = ? AND m.kind = ? AND f.state = ? ORDER BY f.id",
            (value, kind, state),
        )
    ]


def missing_media_kinds(conn: apsw.Connection) -> set[str]:
    """The kinds of fingerprint that some missing file has: what is worth reading an arrival for."""
    return {
        r[0]
        for r in _rows(
            conn,
            "SELECT DISTINCT m.kind FROM media m JOIN files f ON f.id = m.file"
            " WHERE f.state = 'missing' AND m.fingerprint IS NOT NULL",
        )
    }


def media_coverage(conn: apsw.Connection) -> dict[str, Any]:
    """Fingerprinted files by kind, and media files that did not parse (present files only)."""
    kinds: dict[str, int] = {}
    unfit = 0
    for kind, has, count in _rows(
        conn,
        "SELECT m.kind, m.fingerprint IS NOT NULL, count(*) FROM media m"
        " JOIN files f ON f.id = m.file WHERE f.state = 'present' GROUP BY 1, 2",
    ):
        if has:
            kinds[kind] = count
        else:
            unfit += count
    return {"fingerprinted": sum(kinds.values()), "by_kind": kinds, "unfit": unfit}


def candidates(
    conn: apsw.Connection, gone: FileRow, media: Media | None, limit: int
) -> list[tuple[FileRow, list[str]]]:
    """Present files that may be what ``gone`` became, best first, each with why.

    Evidence: the same fingerprint (a match rule 4 left alone: several
    files share it), the same stem (name without extension), the same
    title and artist, the same duration (within a second) or the same
    dimensions.
    Only files with a media row are weighed, and at most ``limit`` returned.
    """
    stem = gone.name.rsplit(b".", 1)[0]
    extra = media.extra if media is not None else {}
    cols = ", ".join(f"f.{c.strip()}" for c in FILE_COLS.split(","))
    found: list[tuple[FileRow, list[str]]] = []
    for r in _rows(
        conn,
        f"SELECT {cols}, {', '.join('m.' + k for k in _EXTRA)}, m.kind, m.fingerprint"
        " FROM media m JOIN files f ON f.id = m.file WHERE f.state = 'present' AND f.id != ?"
        " AND ((m.fingerprint = ? AND m.kind = ?) OR f.name = ? OR substr(f.name, 1, ?) = ?"
        " OR (m.title IS NOT NULL AND m.title = ? AND m.artist IS ?)"
        " OR abs(m.duration - ?) <= 1.0 OR (m.width = ? AND m.height = ?))",
        (
            gone.id,
            media.value if media is not None else None,
            media.kind if media is not None else None,
            gone.name,
            len(stem) + 1,
            stem + b".",
            extra.get("title"),
            extra.get("artist"),
            extra.get("duration"),
            extra.get("width"),
            extra.get("height"),
        ),
    ):
        row, got = FileRow(*r[:15]), dict(zip(_EXTRA, r[15:21], strict=True))
        why = []
        if (
            media is not None
            and media.value is not None
            and (r[21], r[22])
            == (
                media.kind,
                media.value,
            )
        ):
            why.append("fingerprint")  # what rule 4 would have taken, had it been alone
        if row.name.rsplit(b".", 1)[0] == stem:
            why.append("stem")
        if extra.get("title") is not None and (got["title"], got["artist"]) == (
            extra.get("title"),
            extra.get("artist"),
        ):
            why.append("tags")
        if (
            extra.get("duration") is not None
            and got["duration"] is not None
            and abs(got["duration"] - extra["duration"]) <= 1.0
        ):
            why.append("duration")
        if extra.get("width") is not None and (got["width"], got["height"]) == (
            extra.get("width"),
            extra.get("height"),
        ):
            why.append("dimensions")
        found.append((row, why))
    found.sort(key=lambda item: (-len(item[1]), -item[0].first_seen))
    return found[:limit]
