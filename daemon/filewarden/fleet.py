"""Questions to a fleet's PostgreSQL (``filewarden fleet``): each one SQL query.

The queries are here as text an operator could also run by hand in psql
(README, "Many hosts"); the command line only fills in the filters.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from filewarden.config import parse_duration
from filewarden.ship import SCHEMA

TIME = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'  # the socket's RFC 3339 (milliseconds, UTC)

STATUS = f"""
SELECT h.name, h.host::text AS host, h.cursor, h.daemon_seq,
       greatest(h.daemon_seq - h.cursor, 0) AS behind, h.lag_seconds,
       round(extract(epoch FROM now() - h.heard)::numeric, 1)::float AS heard_s_ago,
       r.path AS root, r.state, r.present, r.missing, r.offline
FROM {SCHEMA}.hosts h
LEFT JOIN {SCHEMA}.roots r ON r.host = h.host
ORDER BY h.name, h.host, r.path
"""

# A file's columns, as `fleet missing` and `fleet find` show them.
FILE = f"""
SELECT h.name AS host_name, f.host::text AS host, f.id, r.path AS root, f.path,
       encode(f.raw_path, 'base64') AS path_b64, f.state, f.size,
       encode(f.hash, 'hex') AS hash,
       to_char(f.missing_since AT TIME ZONE 'UTC', '{TIME}') AS missing_since,
       f.missing_reason
FROM {SCHEMA}.files f
JOIN {SCHEMA}.hosts h ON h.host = f.host
JOIN {SCHEMA}.roots r ON r.id = f.root
"""

MISSING = (
    FILE + "WHERE f.state = 'missing'{filters}\nORDER BY f.missing_since DESC, h.name, f.id DESC"
)

# A path: the files at that path on any host, and every file with the content
# of one of them. A hash: every file with that content.
FIND_PATH = (
    FILE.replace("SELECT ", "SELECT CASE WHEN f.path = %(path)s THEN 'path' ELSE 'content' END"
                 " AS match, ", 1)
    # ARRAY(...) is read once, before: both conditions then go to their index.
    + f"WHERE f.path = %(path)s OR f.hash = ANY (ARRAY(SELECT hash FROM {SCHEMA}.files"
    " WHERE path = %(path)s AND hash IS NOT NULL))\nORDER BY match DESC, h.name, f.path, f.id"
)  # fmt: skip
FIND_HASH = FILE + "WHERE f.hash = decode(%(hash)s, 'hex')\nORDER BY h.name, f.path, f.id"

HASH = re.compile(r"[0-9a-fA-F]{32}")
FLEET_CSV_FIELDS = [
    "host_name",
    "host",
    "id",
    "root",
    "path",
    "size",
    "hash",
    "missing_since",
    "missing_reason",
]


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(dsn, row_factory=dict_row, application_name="filewarden fleet")


def status(conn: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per host and root: files by state, and how far the host's shipper is behind."""
    return conn.execute(STATUS).fetchall()


def missing(
    conn: psycopg.Connection[dict[str, Any]],
    *,
    root: str | None = None,
    host: str | None = None,
    older_than: str | None = None,
    newer_than: str | None = None,
) -> list[dict[str, Any]]:
    """Missing files on every host, newest first, with the filters of ``missing``."""
    filters: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if root:
        filters.append(sql.SQL("r.path = %(root)s"))
        params["root"] = root
    if host:
        filters.append(sql.SQL("(h.name = %(host)s OR h.host::text = %(host)s)"))
        params["host"] = host
    if older_than:
        filters.append(sql.SQL("f.missing_since < now() - make_interval(secs => %(older)s)"))
        params["older"] = parse_duration(older_than)
    if newer_than:
        filters.append(sql.SQL("f.missing_since >= now() - make_interval(secs => %(newer)s)"))
        params["newer"] = parse_duration(newer_than)
    where = sql.SQL("").join(sql.Composed([sql.SQL("\n  AND "), f]) for f in filters)
    query = sql.SQL(MISSING.replace("{filters}", "{}")).format(where)
    return conn.execute(query, params).fetchall()


def find(conn: psycopg.Connection[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Where a file is (a path) or its content (a hash, or a path's content), on any host."""
    if HASH.fullmatch(target):
        return conn.execute(FIND_HASH, {"hash": target.lower()}).fetchall()
    return conn.execute(FIND_PATH, {"path": target}).fetchall()
