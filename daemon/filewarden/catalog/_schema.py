"""The schema, its migrations, and opening the catalog (within a memory budget)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apsw

from filewarden.catalog._records import _rows
from filewarden.dirs import prepare_dir
from filewarden.errors import CatalogError

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE roots (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        state TEXT NOT NULL DEFAULT 'unknown',
        state_reason TEXT,
        state_since REAL,
        device INTEGER,
        fs_source TEXT,
        fs_uuid TEXT,
        last_sweep REAL,
        last_full_sweep REAL,
        present INTEGER NOT NULL DEFAULT 0,
        missing INTEGER NOT NULL DEFAULT 0,
        offline INTEGER NOT NULL DEFAULT 0
    );
    -- AUTOINCREMENT: a purged id is never handed out again.
    CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        root INTEGER NOT NULL REFERENCES roots(id),
        dir BLOB NOT NULL,
        name BLOB NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        device INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        hash BLOB,
        state TEXT NOT NULL CHECK (state IN ('present', 'missing', 'offline')),
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        missing_since REAL,
        missing_reason TEXT
    );
    CREATE UNIQUE INDEX files_path ON files(root, dir, name);
    CREATE INDEX files_inode ON files(device, inode);
    CREATE INDEX files_missing ON files(missing_since) WHERE state = 'missing';
    CREATE TABLE dirs (
        root INTEGER NOT NULL,
        path BLOB NOT NULL,
        parent BLOB,
        -- 0 in all three means "list me on the next quick sweep".
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        PRIMARY KEY (root, path)
    ) WITHOUT ROWID;
    CREATE INDEX dirs_parent ON dirs(root, parent);
    CREATE TABLE annotations (
        file INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (file, key)
    ) WITHOUT ROWID;
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        file INTEGER,
        root INTEGER,
        path BLOB,
        old_root INTEGER,
        old_path BLOB,
        detail TEXT
    );
    CREATE INDEX journal_file ON journal(file, seq);
    """,
    # 2: identity. The background hasher walks unhashed present files by id;
    # relinking looks up missing files by size. Both indexes hold few rows.
    """
    CREATE INDEX files_unhashed ON files(id) WHERE hash IS NULL AND state = 'present';
    CREATE INDEX files_missing_size ON files(size) WHERE state = 'missing';
    """,
    # 3: what a directory's files were when the catalog last matched a
    # listing of it (see files_digest), so an unchanged directory costs a
    # sweep one digest instead of reading back every row. NULL: not known.
    """
    ALTER TABLE dirs ADD COLUMN digest BLOB;
    """,
    # 4: the volume a root was first seen on, to tell it from another
    # filesystem mounted at the same path.
    """
    ALTER TABLE roots ADD COLUMN fs_type TEXT;
    ALTER TABLE roots ADD COLUMN fs_inner BLOB;
    ALTER TABLE roots ADD COLUMN fs_id INTEGER;
    """,
    # 5: one *present* file per path. A missing or offline file keeps its
    # last path without holding it: a known file moved onto that path keeps
    # its own id (the missing one stays missing, as history). One index both
    # enforces that (0 for present rows, the id otherwise) and serves
    # lookups by path.
    """
    DROP INDEX files_path;
    CREATE UNIQUE INDEX files_path ON files(root, dir, name, CASE WHEN state = 'present' THEN 0 ELSE id END);
    """,
    # 6: files that arrived after their root's first index, by size: the
    # possible copy halves of a copy-then-delete move (see identity.py). Kept
    # here rather than in memory so that the window can be days at any
    # catalog size; rows older than [identity] match_window are pruned by
    # retention.
    """
    CREATE TABLE arrivals (
        size INTEGER NOT NULL,
        file INTEGER NOT NULL,
        time REAL NOT NULL,
        PRIMARY KEY (size, file)
    ) WITHOUT ROWID;
    """,
    # 7: smaller index rows. An index's entries end with the rowid, so
    # journal(file, seq) held seq twice and files(id) held the id twice:
    # journal(file) keeps each file's entries in seq order all the same,
    # and the unhashed files are found by id range on the rowid after a
    # NULL hash (3.8 and 2.9 bytes less a file, of 15.6 and 11.8).
    """
    DROP INDEX IF EXISTS journal_file;
    CREATE INDEX journal_file ON journal(file);
    DROP INDEX files_unhashed;
    CREATE INDEX files_unhashed ON files(hash) WHERE hash IS NULL AND state = 'present';
    """,
    # 8: media fingerprints (see fingerprint.py), read with the hash and
    # valid while it is: a trigger drops a file's row when its hash goes.
    # A row without a fingerprint is a file of a media format that did not
    # parse. Rule 4 looks missing files up by fingerprint.
    """
    CREATE TABLE media (
        file INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        fingerprint BLOB,
        duration REAL,
        width INTEGER,
        height INTEGER,
        title TEXT,
        artist TEXT,
        album TEXT
    );
    CREATE INDEX media_fingerprint ON media(fingerprint) WHERE fingerprint IS NOT NULL;
    CREATE TRIGGER media_follows_hash AFTER UPDATE OF hash ON files WHEN NEW.hash IS NULL
    BEGIN
        DELETE FROM media WHERE file = NEW.id;
    END;
    """,
    # 9: the catalog's instance, a random UUID made with it (or when this
    # migration first ran): a client's cursor (a journal seq) means
    # something only in the instance it was read from.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta(key, value) SELECT 'instance',
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + abs(random() % 4), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6)));
    """,
    # 10: the web page's access tokens, kept as their SHA-256 (a token is 256
    # random bits: a slow hash would guard nothing more), revoked, not deleted;
    # and the missing files by reason, for its list (filtered, counted, and the
    # reasons there are, without reading every missing file's row).
    """
    CREATE INDEX files_missing_reason ON files(missing_reason, missing_since)
        WHERE state = 'missing';
    CREATE TABLE web_tokens (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('reader', 'admin')),
        label TEXT NOT NULL,
        created REAL NOT NULL,
        revoked REAL
    );
    """,
    # 11: the host's identity in a fleet (see ship.py), a random UUID made
    # once: where the catalog is made anew, its instance changes and the
    # host keeps its name only if [ship] host says so.
    """
    INSERT INTO meta(key, value) SELECT 'host',
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + abs(random() % 4), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6)));
    """,
)


SCHEMA_VERSION = len(MIGRATIONS)


# The index a bulk load builds after its rows (see :func:`begin_bulk`). Of
# the five a new file enters, it was the one that cost: inodes come in no
# order, so each insert lands on a random page (measured on 200k files:
# 2.55 s to insert with it, 1.09 s without, 0.2-0.4 s to build it after).
# Leaving out the journal's and the unhashed files' indexes as well saved
# nothing measurable (their keys come in id order, onto the last page).
DEFERRED_INDEXES = {
    "files_inode": "CREATE INDEX IF NOT EXISTS files_inode ON files(device, inode)",
}


BULK_SORT_KIB = 4_000


def begin_bulk(conn: apsw.Connection) -> bool:
    """Start a bulk load if the catalog has no file yet: drop the deferred indexes.

    Until :func:`end_bulk` (or the next opening, after a crash) a lookup by
    inode finds nothing (see ``files_with_inode``). Returns whether the
    indexes were dropped.
    """
    if _rows(conn, "SELECT 1 FROM files LIMIT 1"):
        return False
    for name in DEFERRED_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    return True


def end_bulk(conn: apsw.Connection) -> None:
    """Build the deferred indexes (a no-op when they are there).

    With a small page cache meanwhile: SQLite sorts an index's keys in up to
    the cache's size of memory before it spills to a temporary file, and
    with the writer's cache that added 30 MB to the daemon's peak RSS at 1M
    files.
    """
    cache = int(_rows(conn, "PRAGMA cache_size")[0][0])
    conn.execute(f"PRAGMA cache_size = -{BULK_SORT_KIB}")
    try:
        for sql in DEFERRED_INDEXES.values():
            conn.execute(sql)
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")


WRITER_CACHE_KIB = 32_000


READER_CACHE_KIB = 4_000


# All of SQLite's memory in the daemon, every connection's page cache
# included. The caps above add up to far more (up to 68 server workers
# each hold a read connection), and each cache keeps every page it touches
# up to its cap: the writer's held a page of every journal entry written,
# about 2 MB a minute under a steady stream of changes.
MEMORY_BUDGET_KIB = 16_000


def limit_memory(kib: int = MEMORY_BUDGET_KIB) -> None:
    """Bound SQLite's memory in this process to ``kib``, for every connection together.

    A soft limit: near it, each page cache recycles its own least recently
    used pages instead of growing, and nothing fails; a cache with no pages
    of its own may still take a few.
    """
    apsw.soft_heap_limit(kib * 1024)


def memory_kib() -> tuple[int, int]:
    """SQLite's memory in this process now, and its bound (0: none), in KiB."""
    return apsw.memory_used() // 1024, apsw.soft_heap_limit(-1) // 1024


def connect(path: Path, *, readonly: bool = False, cache_kib: int | None = None) -> apsw.Connection:
    """Open the catalog; the writer's connection also creates and migrates it.

    ``cache_kib`` bounds the connection's own page cache (memory the process
    keeps, up to this much per connection); pages beyond it are read again
    from the OS page cache. The writer's default is large, as every write
    walks the indexes; a reader's is small, as most read a few pages at a
    time (a sweep, which reads whole directories, asks for more).
    """
    if cache_kib is None:
        cache_kib = READER_CACHE_KIB if readonly else WRITER_CACHE_KIB
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    else:
        prepare_dir(path.parent, 0o700)
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    try:
        conn = apsw.Connection(str(path), flags=flags)
        # Readers wait for a checkpoint or a migration rather than fail; the
        # writer waits longer for another process holding the write lock (an
        # admin's sqlite3 session), which the service watchdog notices.
        conn.set_busy_timeout(10_000 if readonly else 120_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never
        # corrupt; a sweep finds again what was lost.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        if not readonly:
            migrate(conn)
            end_bulk(conn)  # a bulk load cut short by a crash
        else:
            version = user_version(conn)
            if version != SCHEMA_VERSION:
                raise CatalogError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
    except apsw.Error as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return conn


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    """The catalog file of one daemon: a part that only reads is handed this, not a path.

    The one write connection is the writer thread's (see :mod:`filewarden.writer`);
    anyone else reads through connections of their own, which WAL lets run
    beside the writer.
    """

    path: Path

    def reader(self, *, cache_kib: int | None = None) -> apsw.Connection:
        """A new read-only connection, the caller's to close; ``cache_kib`` as for :func:`connect`.

        Raises :class:`~filewarden.errors.CatalogError` if the catalog is
        missing or not at this schema version.
        """
        return connect(self.path, readonly=True, cache_kib=cache_kib)


def user_version(conn: apsw.Connection) -> int:
    return int(_rows(conn, "PRAGMA user_version")[0][0])


def migrate(conn: apsw.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one migration per transaction."""
    version = user_version(conn)
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog schema {version} is newer than this filewarden knows ({SCHEMA_VERSION})"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with conn:
            conn.execute(MIGRATIONS[number - 1])
            conn.execute(f"PRAGMA user_version = {number}")
