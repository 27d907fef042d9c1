"""The shipper: this host's journal into a fleet's PostgreSQL (``filewarden ship``).

It is a client of the daemon's socket in a process of its own (and a
systemd unit of its own, the one allowed a network): the daemon never
waits for PostgreSQL, and a server that is down costs it nothing.

The loop: ``changes`` from the cursor, then the records of the ids those
entries name (``lookup`` by ids: a record as it is now, so an entry's
file may already be further on; the entries after it say so and are
shipped next), and one PostgreSQL transaction with the entries, the
records, and the host's cursor. A cursor moves only with what it covers:
a shipper killed at any point, or a server lost mid-batch, leaves the
transaction rolled back, and the next run carries on from the cursor in
PostgreSQL. Nothing is shipped twice (the journal's key is the host and
seq), nothing is left out.

When the daemon cannot serve the cursor (compacted away, or another
instance of the catalog), and on the first run, the host is loaded again
whole: ``list`` page by page, into ``COPY``, in one transaction with the
cursor at the seq read before the first page. Entries after that seq are
shipped as usual; a record shipped twice is the same upsert twice.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import psycopg
from psycopg import sql

from filewarden import __version__, logs
from filewarden.client import Client, Unreachable
from filewarden.config import Config
from filewarden.errors import FilewardenError
from filewarden.protocol import PERMISSION_DENIED, RpcError

log = logs.get("filewarden.ship")

SCHEMA = "filewarden"
WAIT = 10.0  # seconds a changes call is held while there is nothing to ship
BACKOFF = (0.5, 30.0)  # the first wait after a failure, doubling up to the second
LOOKUP_MANY = 10_000  # ids a lookup call
IDS_A_BATCH = 20_000  # files whose records one transaction writes, at most
ROOT_KINDS = ("offline", "online")  # entries of a whole root (id null)
FILE_COLUMNS = (
    "host",
    "id",
    "root",
    "path",
    "raw_path",
    "state",
    "size",
    "mtime_ns",
    "hash",
    "first_seen",
    "missing_since",
    "missing_reason",
    "fingerprint_kind",
    "fingerprint",
)
NOTE_COLUMNS = ("host", "file", "key", "value")
JOURNAL_COLUMNS = ("host", "seq", "time", "kind", "id", "path", "old_path", "detail")
# An entry's own fields; whatever else it carries goes to journal.detail.
ENTRY_FIELDS = frozenset(
    {"seq", "time", "kind", "id", "path", "old_path", "path_b64", "old_path_b64"}
)

# One migration per schema version, each run in its own transaction under an
# advisory lock (shippers of many hosts may start at once).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE filewarden.hosts (
        host uuid PRIMARY KEY,
        name text NOT NULL,
        instance uuid NOT NULL,
        cursor bigint NOT NULL,
        daemon_seq bigint NOT NULL,
        lag_entries bigint NOT NULL DEFAULT 0,
        lag_seconds double precision NOT NULL DEFAULT 0,
        heard timestamptz NOT NULL,
        shipped timestamptz,
        resynced timestamptz,
        resync_reason text,
        resync_seq bigint,
        version text NOT NULL
    );
    CREATE TABLE filewarden.roots (
        id serial PRIMARY KEY,
        host uuid NOT NULL REFERENCES filewarden.hosts ON DELETE CASCADE,
        path text NOT NULL,
        state text NOT NULL,
        reason text,
        since timestamptz,
        present bigint NOT NULL DEFAULT 0,
        missing bigint NOT NULL DEFAULT 0,
        offline bigint NOT NULL DEFAULT 0,
        UNIQUE (host, path)
    );
    CREATE TABLE filewarden.files (
        host uuid NOT NULL,
        id bigint NOT NULL,
        root integer NOT NULL REFERENCES filewarden.roots,
        path text NOT NULL,
        raw_path bytea,
        state text NOT NULL,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        hash bytea,
        first_seen timestamptz NOT NULL,
        missing_since timestamptz,
        missing_reason text,
        fingerprint_kind text,
        fingerprint text,
        PRIMARY KEY (host, id)
    );
    CREATE INDEX files_path ON filewarden.files (path);
    CREATE INDEX files_hash ON filewarden.files (hash) WHERE hash IS NOT NULL;
    CREATE INDEX files_missing ON filewarden.files (missing_since) WHERE state = 'missing';
    CREATE TABLE filewarden.annotations (
        host uuid NOT NULL,
        file bigint NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (host, file, key),
        FOREIGN KEY (host, file) REFERENCES filewarden.files ON DELETE CASCADE
    );
    -- Each root's files by state, kept by the statements that change them (one
    -- aggregate over the rows a statement touched): `fleet status` reads a row a
    -- root, not every file.
    CREATE FUNCTION filewarden.count_files() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE filewarden.roots r SET present = r.present - d.present,
                missing = r.missing - d.missing, offline = r.offline - d.offline
            FROM (SELECT root, count(*) FILTER (WHERE state = 'present') AS present,
                         count(*) FILTER (WHERE state = 'missing') AS missing,
                         count(*) FILTER (WHERE state = 'offline') AS offline
                  FROM old_files GROUP BY root) d
            WHERE r.id = d.root;
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            UPDATE filewarden.roots r SET present = r.present + d.present,
                missing = r.missing + d.missing, offline = r.offline + d.offline
            FROM (SELECT root, count(*) FILTER (WHERE state = 'present') AS present,
                         count(*) FILTER (WHERE state = 'missing') AS missing,
                         count(*) FILTER (WHERE state = 'offline') AS offline
                  FROM new_files GROUP BY root) d
            WHERE r.id = d.root;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER files_counted_insert AFTER INSERT ON filewarden.files
        REFERENCING NEW TABLE AS new_files
        FOR EACH STATEMENT EXECUTE FUNCTION filewarden.count_files();
    CREATE TRIGGER files_counted_update AFTER UPDATE ON filewarden.files
        REFERENCING OLD TABLE AS old_files NEW TABLE AS new_files
        FOR EACH STATEMENT EXECUTE FUNCTION filewarden.count_files();
    CREATE TRIGGER files_counted_delete AFTER DELETE ON filewarden.files
        REFERENCING OLD TABLE AS old_files
        FOR EACH STATEMENT EXECUTE FUNCTION filewarden.count_files();
    CREATE TABLE filewarden.journal (
        host uuid NOT NULL,
        seq bigint NOT NULL,
        time timestamptz NOT NULL,
        kind text NOT NULL,
        id bigint,
        path text,
        old_path text,
        detail jsonb,
        PRIMARY KEY (host, seq)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
LOCK_KEY = 0x66776172  # the advisory lock the migrations take ("fwar")


class ShipError(FilewardenError):
    """The fleet's database cannot be used (no dsn, a schema newer than this shipper)."""


class CursorMoved(Exception):
    """Another shipper moved this host's cursor: the batch is dropped, the cursor read again."""


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or bring the fleet schema to SCHEMA_VERSION; the version it was at."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise ShipError(
                f"the fleet schema is version {version}; this filewarden knows {SCHEMA_VERSION}"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[number - 1])
        conn.execute(
            f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('schema', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(SCHEMA_VERSION),),
        )
    return version


def text(path: str, b64: str | None = None) -> tuple[str, bytes | None]:
    """A path as PostgreSQL text, and its raw bytes where they are not UTF-8 (shown with
    U+FFFD in the text)."""
    if b64 is None:
        return path, None
    raw = base64.b64decode(b64)
    return raw.decode("utf-8", "replace"), raw


def _clean(value: str | None) -> str | None:
    """Text without lone surrogates (a name that is not UTF-8, as the socket escapes it)."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def target_of(dsn: str) -> str:
    """Where a dsn points, without its password (for logs and status)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "?"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{info.get('user') or ''}@{host}:{port}/{info.get('dbname') or ''}"


def named(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The first entries whose files are at most IDS_A_BATCH (at least one entry), and
    those files' ids: an entry names its ``id``, a ``hash`` entry the ``ids`` of a batch
    of the hasher."""
    ids: set[int] = set()
    for n, e in enumerate(entries):
        more = [e["id"]] if e.get("id") is not None else e.get("ids", [])
        if n and len(ids) + len(more) > IDS_A_BATCH:
            return entries[:n], sorted(ids)
        ids.update(int(i) for i in more)
    return entries, sorted(ids)


@dataclasses.dataclass
class Batch:
    """What the daemon said after ``since``: entries (or a reset), and the records of the
    ids they name, as they were when read; ``status`` where roots changed."""

    since: int
    answer: dict[str, Any]
    records: dict[int, dict[str, Any]]  # id -> record; an id named and not here is gone
    ids: list[int]
    status: dict[str, Any] | None


class Reader(threading.Thread):
    """Reads the next batch from the daemon, on a connection of its own, while the last
    one is written to PostgreSQL: the two sides work at once. It never runs more
    than one batch ahead, and stops at a reset."""

    def __init__(self, socket_path: str, since: int, instance: str, batch: int) -> None:
        super().__init__(name="filewarden-ship-read", daemon=True)
        self.client = Client(socket_path, timeout=120.0)
        self.since, self.instance, self.batch = since, instance, batch
        self.out: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=1)
        self.halt = threading.Event()

    def run(self) -> None:
        since, full = self.since, False
        try:
            while not self.halt.is_set():
                # Behind (the last batch was full): ask at once; else wait for a commit.
                answer = cast(
                    dict[str, Any],
                    self.client.changes(
                        since, limit=self.batch, wait=0.0 if full else WAIT, instance=self.instance
                    ),
                )
                entries, ids = named(answer["changes"])
                full = len(entries) < len(answer["changes"]) or len(entries) >= self.batch
                answer["changes"] = entries
                records: dict[int, dict[str, Any]] = {}
                for at in range(0, len(ids), LOOKUP_MANY):
                    found = self.client.lookup_many(ids=ids[at : at + LOOKUP_MANY])
                    records.update((int(r["id"]), dict(r)) for r in found if r is not None)
                roots = any(e["kind"] in ROOT_KINDS for e in entries)
                status = self.client.status() if roots else None
                self._put(Batch(since, answer, records, ids, status))
                if answer["reset_required"]:
                    return
                if entries:
                    since = int(entries[-1]["seq"])
        except BaseException as exc:  # handed to the writer, which reconnects
            if not self.halt.is_set():
                self._put(exc)

    def _put(self, item: Batch | BaseException) -> None:
        while not self.halt.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        self.halt.set()
        self.client.close()


class Shipper:
    """Follows one daemon's journal into the fleet database (see the module's doc)."""

    def __init__(self, config: Config, *, socket_path: str | None = None) -> None:
        if not config.ship.dsn:
            raise ShipError("no [ship] dsn: say which PostgreSQL to ship to")
        self.config = config
        self.socket_path = socket_path or str(config.daemon.socket)
        self.dsn = config.ship.dsn
        self.target = target_of(self.dsn)
        self.batch = config.ship.batch
        self.name = config.ship.name or socket.gethostname()
        self.host = config.ship.host  # set from the daemon when empty
        self.instance = ""
        self.cursor = 0
        self.daemon: Client | None = None
        self.pg: psycopg.Connection[Any] | None = None
        self.roots: dict[str, int] = {}  # root path -> roots.id
        self.lag: dict[str, Any] = {"lag_entries": 0, "lag_seconds": 0.0}
        self.reader: Reader | None = None
        self.reports = True  # false once the daemon refused a report (not an admin)
        self._down: dict[str, float] = {}  # side -> when its outage began

    # -- connections ----------------------------------------------------------------

    def connect(self) -> None:
        """Open both ends, make the schema, and place the cursor (a resync if it must)."""
        self.close()
        self.daemon = Client(self.socket_path, timeout=120.0)
        status = self.daemon.status()
        self.host = self.config.ship.host or status["host"]
        pg = psycopg.connect(self.dsn, autocommit=True, application_name="filewarden ship")
        self.pg = pg
        migrate(pg)
        pg.execute(f"CREATE TEMP TABLE stage (LIKE {SCHEMA}.files) ON COMMIT DELETE ROWS")
        row = pg.execute(
            f"SELECT instance::text, cursor FROM {SCHEMA}.hosts WHERE host = %s", (self.host,)
        ).fetchone()
        if row is None:
            self.resync("initial", status)
        elif row[0] != status["instance"]:
            self.resync("another instance", status)
        elif row[1] > status["seq"]:
            self.resync("ahead of the journal", status)
        else:
            self.instance, self.cursor = row[0], int(row[1])
            self.roots = self._known_roots()
            pg.execute(
                f"UPDATE {SCHEMA}.hosts SET name = %s, version = %s WHERE host = %s",
                (self.name, __version__, self.host),
            )
        self._read_from(self.cursor)
        log.info(
            "ship.start",
            host=self.host,
            name=self.name,
            instance=self.instance,
            cursor=self.cursor,
            target=self.target,
        )

    def _read_from(self, cursor: int) -> None:
        if self.reader is not None:
            self.reader.stop()
        self.reader = Reader(self.socket_path, cursor, self.instance, self.batch)
        self.reader.start()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        for end in (self.daemon, self.pg):
            if end is not None:
                try:
                    end.close()
                except Exception:  # closing what already broke
                    pass
        self.daemon, self.pg = None, None

    # -- the loop -------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Ship until ``stop`` is set (or for ever), through outages of either end."""
        stop = stop or threading.Event()
        delay = BACKOFF[0]
        while not stop.is_set():
            try:
                if self.daemon is None or self.pg is None:
                    self.connect()
                self._resumed()
                delay = BACKOFF[0]
                while not stop.is_set():
                    self.step()
                return
            except CursorMoved:
                self.close()  # read it again, at once
                continue
            except (psycopg.Error, ShipError) as exc:
                self._failed("postgres", exc, delay)
            except (Unreachable, OSError, RpcError) as exc:
                self._failed("daemon", exc, delay)
            self.close()
            stop.wait(delay)
            delay = min(delay * 2, BACKOFF[1])

    def step(self) -> None:
        """Write the next batch the reader has (it waits up to WAIT for one), and tell the
        daemon."""
        assert self.daemon is not None and self.pg is not None and self.reader is not None
        item = self.reader.out.get()
        if isinstance(item, BaseException):
            raise item
        if item.since != self.cursor:  # not read from here: read again from the cursor
            self._read_from(self.cursor)
            return
        answer = item.answer
        if answer["reset_required"]:
            self.resync(str(answer["reset_required"]), self.daemon.status())
            self._read_from(self.cursor)
        elif answer["changes"]:
            self.ship(item)
        else:
            self._heard(int(answer["seq"]))
        self._report(None)

    def ship(self, item: Batch) -> None:
        """One batch of entries, the records they name, and the cursor: one transaction."""
        assert self.daemon is not None and self.pg is not None
        entries = item.answer["changes"]
        present = item.records
        gone = [i for i in item.ids if i not in present]
        for_roots = [e for e in entries if e["kind"] in ROOT_KINDS]
        if item.status is not None:
            self._roots(item.status)
        if any(_clean(r["root"]) not in self.roots for r in present.values()):
            self._roots(self.daemon.status())
        seq = int(item.answer["seq"])
        last = int(entries[-1]["seq"])
        with self.pg.transaction(), self.pg.cursor() as cur:
            with cur.copy(_copy_sql("journal", JOURNAL_COLUMNS)) as copy:
                for e in entries:
                    copy.write_row(self._journal_row(e))
            for e in for_roots:
                root = self.roots.get(_clean(e.get("root")) or "")
                if root is None:
                    continue
                was, now = (
                    ("present", "offline") if e["kind"] == "offline" else ("offline", "present")
                )
                cur.execute(
                    f"UPDATE {SCHEMA}.files SET state = %s WHERE host = %s AND root = %s"
                    " AND state = %s",
                    (now, self.host, root, was),
                )
            if gone:
                cur.execute(
                    f"DELETE FROM {SCHEMA}.files WHERE host = %s AND id = ANY(%s)",
                    (self.host, gone),
                )
            if present:
                self._upsert(cur, present.values())
            cur.execute(
                f"UPDATE {SCHEMA}.hosts SET cursor = %s, daemon_seq = greatest(%s, daemon_seq),"
                " lag_entries = %s, lag_seconds = %s, heard = now(), shipped = now()"
                " WHERE host = %s AND cursor = %s AND instance = %s",
                (
                    last,
                    seq,
                    self.lag["lag_entries"],
                    self.lag["lag_seconds"],
                    self.host,
                    self.cursor,
                    self.instance,
                ),
            )
            if cur.rowcount != 1:
                raise CursorMoved()
        self.cursor = last

    def _upsert(self, cur: psycopg.Cursor[Any], records: Iterable[Mapping[str, Any]]) -> None:
        """Files as they are now, through the staging table, and their annotations anew."""
        notes: list[tuple[Any, ...]] = []
        ids = []
        with cur.copy(_copy_sql("stage", FILE_COLUMNS)) as copy:
            for r in records:
                copy.write_row(self._file_row(r))
                ids.append(r["id"])
                notes.extend(self._notes(r))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in FILE_COLUMNS[2:]
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO {schema}.files SELECT * FROM stage"
                " ON CONFLICT (host, id) DO UPDATE SET {updates}"
            ).format(schema=sql.Identifier(SCHEMA), updates=updates)
        )
        cur.execute(
            f"DELETE FROM {SCHEMA}.annotations WHERE host = %s AND file = ANY(%s)",
            (self.host, ids),
        )
        _copy_rows(cur, "annotations", NOTE_COLUMNS, notes)

    # -- resynchronising ------------------------------------------------------------

    def resync(self, reason: str, status: Mapping[str, Any]) -> None:
        """Load the host whole from ``list``, in one transaction with the cursor at the seq
        read before the first page."""
        assert self.daemon is not None and self.pg is not None
        t0 = time.monotonic()
        seq, instance = int(status["seq"]), str(status["instance"])
        pages = _pages(self.socket_path)
        notes: list[tuple[Any, ...]] = []
        count = 0
        with self.pg.transaction(), self.pg.cursor() as cur:
            cur.execute(
                f"INSERT INTO {SCHEMA}.hosts (host, name, instance, cursor, daemon_seq, heard,"
                " resynced, resync_reason, resync_seq, version)"
                " VALUES (%s, %s, %s, %s, %s, now(), now(), %s, %s, %s)"
                " ON CONFLICT (host) DO UPDATE SET name = EXCLUDED.name,"
                " instance = EXCLUDED.instance, cursor = EXCLUDED.cursor,"
                " daemon_seq = EXCLUDED.daemon_seq, heard = now(), resynced = now(),"
                " resync_reason = EXCLUDED.resync_reason, resync_seq = EXCLUDED.resync_seq,"
                " version = EXCLUDED.version",
                (self.host, self.name, instance, seq, seq, reason, seq, __version__),
            )
            cur.execute(f"DELETE FROM {SCHEMA}.files WHERE host = %s", (self.host,))
            if reason in ("another instance", "ahead of the journal"):
                # Seqs of the old catalog mean other entries in this one.
                cur.execute(f"DELETE FROM {SCHEMA}.journal WHERE host = %s", (self.host,))
            self._roots(status, cur)
            later: list[Mapping[str, Any]] = []  # of a root status did not show
            with cur.copy(_copy_sql("files", FILE_COLUMNS)) as copy:
                for page in pages:
                    for r in page:
                        if (_clean(r["root"]) or "") not in self.roots:
                            later.append(r)  # no other statement while the COPY runs
                            continue
                        copy.write_row(self._file_row(r))
                        notes.extend(self._notes(r))
                    count += len(page)
            for root in {_clean(record["root"]) or "" for record in later}:
                self._roots(self.daemon.status(), cur, also=root)
            _copy_rows(cur, "files", FILE_COLUMNS, map(self._file_row, later))
            notes.extend(note for record in later for note in self._notes(record))
            _copy_rows(cur, "annotations", NOTE_COLUMNS, notes)
        self.instance, self.cursor = instance, seq
        (log.info if reason == "initial" else log.warning)(
            "ship.resync",
            host=self.host,
            reason=reason,
            seq=seq,
            files=count,
            duration_s=round(time.monotonic() - t0, 3),
        )

    # -- rows -----------------------------------------------------------------------

    def _file_row(self, r: Mapping[str, Any]) -> tuple[Any, ...]:
        path, raw = text(r["path"], r.get("path_b64"))
        fingerprint = r.get("fingerprint") or {}
        return (
            self.host,
            r["id"],
            self.roots[_clean(r["root"]) or ""],
            path,
            raw,
            r["state"],
            r["size"],
            r["mtime_ns"],
            bytes.fromhex(r["hash"]) if r["hash"] else None,
            r["first_seen"],
            r["missing_since"],
            r["missing_reason"],
            fingerprint.get("kind"),
            fingerprint.get("value"),
        )

    def _notes(self, r: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        return ((self.host, r["id"], k, v) for k, v in r["annotations"].items())

    def _journal_row(self, e: Mapping[str, Any]) -> tuple[Any, ...]:
        detail = {k: v for k, v in e.items() if k not in ENTRY_FIELDS}
        return (
            self.host,
            e["seq"],
            e["time"],
            e["kind"],
            e.get("id"),
            text(e["path"], e.get("path_b64"))[0] if e.get("path") is not None else None,
            text(e["old_path"], e.get("old_path_b64"))[0]
            if e.get("old_path") is not None
            else None,
            json.dumps(detail, ensure_ascii=True) if detail else None,
        )

    def _roots(
        self, status: Mapping[str, Any], cur: psycopg.Cursor[Any] | None = None, also: str = ""
    ) -> None:
        """The host's roots as ``status`` shows them (``retired`` for those no longer
        configured), and ``also`` (a root a record names that status does not)."""
        assert self.pg is not None
        rows = [
            (self.host, _clean(r["path"]), r["state"], r.get("reason"), r.get("since"))
            for r in status["roots"]
        ]
        rows += [
            (self.host, _clean(r["path"]), "retired", None, None) for r in status["retired_roots"]
        ]
        if also and all(row[1] != also for row in rows):
            rows.append((self.host, also, "retired", None, None))
        execute = cur.execute if cur is not None else self.pg.execute
        for row in rows:
            execute(
                f"INSERT INTO {SCHEMA}.roots (host, path, state, reason, since)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (host, path) DO UPDATE SET"
                " state = EXCLUDED.state, reason = EXCLUDED.reason, since = EXCLUDED.since",
                row,
            )
        self.roots = self._known_roots(cur)

    def _known_roots(self, cur: psycopg.Cursor[Any] | None = None) -> dict[str, int]:
        assert self.pg is not None
        query = f"SELECT path, id FROM {SCHEMA}.roots WHERE host = %s"
        rows = (cur or self.pg.cursor()).execute(query, (self.host,)).fetchall()
        return {str(path): int(i) for path, i in rows}

    # -- lag, reports, outages ------------------------------------------------------

    def _heard(self, seq: int) -> None:
        """Nothing to ship: say when the daemon was last heard, and its seq."""
        assert self.pg is not None
        self.pg.execute(
            f"UPDATE {SCHEMA}.hosts SET daemon_seq = greatest(%s, daemon_seq), lag_entries = %s,"
            " lag_seconds = %s, heard = now() WHERE host = %s",
            (seq, self.lag["lag_entries"], self.lag["lag_seconds"], self.host),
        )

    def _report(self, error: str | None) -> None:
        """Tell the daemon where the cursor is (its status and metrics show the lag)."""
        if not self.reports or self.daemon is None:
            return
        try:
            answer = self.daemon.call(
                "ship_report",
                {
                    "host": self.host,
                    "instance": self.instance,
                    "cursor": self.cursor,
                    "target": self.target,
                    **({"error": error} if error else {}),
                },
            )
        except RpcError as exc:
            if exc.code != PERMISSION_DENIED:
                raise
            self.reports = False  # not an admin of the socket: the lag shows in PostgreSQL only
            return
        self.lag = {"lag_entries": answer["lag_entries"], "lag_seconds": answer["lag_seconds"]}

    def _failed(self, side: str, exc: BaseException, retry: float) -> None:
        if side not in self._down:
            self._down[side] = time.monotonic()
            log.error(
                "ship.error",
                host=self.host or None,
                side=side,
                error=str(exc).strip() or type(exc).__name__,
                retry_s=retry,
            )
        if side == "postgres" and self.daemon is not None:
            try:
                self._report(f"postgres: {str(exc).strip()[:300]}")
            except (Unreachable, OSError, RpcError):
                pass

    def _resumed(self) -> None:
        for side, since in list(self._down.items()):
            del self._down[side]
            log.info(
                "ship.resumed",
                host=self.host,
                side=side,
                outage_s=round(time.monotonic() - since, 3),
                cursor=self.cursor,
            )


def _copy_rows(
    cur: psycopg.Cursor[Any], table: str, columns: Iterable[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """``COPY`` these rows into a table of the schema (none: no statement)."""
    rows = list(rows)
    if rows:
        with cur.copy(_copy_sql(table, columns)) as copy:
            for row in rows:
                copy.write_row(row)


def _copy_sql(table: str, columns: Iterable[str]) -> sql.Composed:
    name = sql.Identifier(table) if table == "stage" else sql.Identifier(SCHEMA, table)
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        name, sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _pages(socket_path: str) -> Iterator[list[dict[str, Any]]]:
    """Every record, a ``list`` page at a time, read on a connection and a thread of their own
    while the caller writes the pages before (the daemon encodes and PostgreSQL
    copies at once)."""
    pages: queue.Queue[list[dict[str, Any]] | BaseException | None] = queue.Queue(maxsize=4)

    def read() -> None:
        try:
            with Client(socket_path, timeout=120.0) as client:
                for page in client.iter_pages():
                    pages.put(page)  # type: ignore[arg-type]
            pages.put(None)
        except BaseException as exc:  # handed to the consumer
            pages.put(exc)

    threading.Thread(target=read, name="filewarden-ship-list", daemon=True).start()
    while True:
        item = pages.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def main(config: Config, socket_path: str | None = None) -> int:
    """``filewarden ship``: ship until SIGTERM or SIGINT."""
    shipper = Shipper(config, socket_path=socket_path)
    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopping)
    reason = "signal"
    try:
        shipper.run(stop)
    except SystemExit:
        pass
    except KeyboardInterrupt:
        reason = "interrupt"
    finally:
        shipper.close()
        log.info("ship.stop", host=shipper.host or None, cursor=shipper.cursor, reason=reason)
    return 0
