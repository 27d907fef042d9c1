"""The web page's access tokens: their digests, roles and revocations."""

from __future__ import annotations

import dataclasses

import apsw

from filewarden.catalog._records import _rows


@dataclasses.dataclass(frozen=True)
class Token:
    id: int
    role: str  # "reader" or "admin"
    label: str
    created: float
    revoked: float | None


def add_token(conn: apsw.Connection, digest: bytes, role: str, label: str, now: float) -> int:
    conn.execute(
        "INSERT INTO web_tokens(digest, role, label, created) VALUES (?, ?, ?, ?)",
        (digest, role, label, now),
    )
    return int(conn.last_insert_rowid())


def token_by_digest(conn: apsw.Connection, digest: bytes) -> Token | None:
    """The live (not revoked) token with this digest."""
    rows = _rows(
        conn,
        "SELECT id, role, label, created, revoked FROM web_tokens"
        " WHERE digest = ? AND revoked IS NULL",
        (digest,),
    )
    return Token(*rows[0]) if rows else None


def revoke_token(conn: apsw.Connection, token_id: int, now: float) -> bool:
    conn.execute(
        "UPDATE web_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (now, token_id)
    )
    return conn.changes() > 0


def list_tokens(conn: apsw.Connection) -> list[Token]:
    return [
        Token(*r)
        for r in _rows(conn, "SELECT id, role, label, created, revoked FROM web_tokens ORDER BY id")
    ]
