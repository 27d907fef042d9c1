"""The annotations table: a user's key/value notes on a file, kept through moves."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import apsw

from filewarden.catalog._records import PATH_SQL


def get_annotations(conn: apsw.Connection, file_id: int) -> dict[str, str]:
    return {
        k: v
        for k, v in conn.execute("SELECT key, value FROM annotations WHERE file = ?", (file_id,))
    }


def set_annotation(
    conn: apsw.Connection, file_id: int, key: str, value: str | None, now: float | None = None
) -> None:
    """Set (or with None remove) one key, and journal an ``annotate`` with the key."""
    conn.execute(
        "INSERT INTO journal(time, kind, file, root, path, detail)"
        f" SELECT ?, 'annotate', id, root, {PATH_SQL}, json_object('key', ?) FROM files WHERE id = ?",
        (time.time() if now is None else now, key, file_id),
    )
    if value is None:
        conn.execute("DELETE FROM annotations WHERE file = ? AND key = ?", (file_id, key))
    else:
        conn.execute(
            "INSERT INTO annotations(file, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT(file, key) DO UPDATE SET value = excluded.value",
            (file_id, key, value),
        )


def annotations_of(conn: apsw.Connection, ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """The annotations of many files at once (a page of records): id -> key -> value, for
    the files that have any."""
    out: dict[int, dict[str, str]] = {}
    for file_id, key, value in conn.execute(
        "SELECT file, key, value FROM annotations WHERE file IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ):
        out.setdefault(file_id, {})[key] = value
    return out
