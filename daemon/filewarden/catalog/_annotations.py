"""The annotations table: a user's key/value notes on a file, kept through moves."""

from __future__ import annotations

import apsw


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
