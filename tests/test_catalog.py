"""Catalog functions on their own: what the sweep relies on them to do."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from filewarden import catalog
from filewarden.errors import CatalogError
from filewarden.writer import Writer


def test_insert_files_chunks_every_entry(tmp_path: Path) -> None:
    """Inserts split into multi-row statements add each entry once and skip existing names."""
    conn = catalog.connect(tmp_path / "catalog.db")
    root = catalog.ensure_root(conn, b"/r")
    for count in (0, 1, 2, 63, 64, 65, 127, 200):
        dir = b"d%d" % count
        entries = [(b"f%04d" % i, (i, i + 1, i + 2, 7, 1000 + i)) for i in range(count)]
        with conn:
            after, added = catalog.insert_files(conn, root, dir, entries[::2], 1.0)
            assert added == len(entries[::2])
            after, added = catalog.insert_files(conn, root, dir, entries, 2.0)
        assert added == count - len(entries[::2])
        rows = sorted(catalog.dir_rows(conn, root, dir))
        assert [(r[0], tuple(r[1:6])) for r in rows] == entries
        assert {name for _, name in catalog.added_since(conn, after)} == {
            name for name, _ in entries[1::2]
        }
    assert catalog.get_root(conn, root).present == catalog.recount(conn, root)[0]  # type: ignore[union-attr]
    conn.close()


def _digest(conn: apsw.Connection, root: int, dir: bytes) -> bytes | None:
    return catalog.dir_memory(conn, root, dir)[1]


def test_every_file_write_forgets_the_directory_digest(tmp_path: Path) -> None:
    """Adding, re-signing, restoring or losing a file clears its directory's digest
    in the same transaction; a stored digest always describes the rows as they are."""
    conn = catalog.connect(tmp_path / "catalog.db")
    root = catalog.ensure_root(conn, b"/r")
    sig = (1, 2, 3, 4, 5)

    def remember(dir: bytes) -> None:
        catalog.put_dir(conn, root, dir, (1, 1, 1))
        catalog.set_dir_digest(conn, root, dir, catalog.present_digest(conn, root, dir))
        catalog.set_dir_digest(conn, root, b"other", b"untouched")

    catalog.put_dir(conn, root, b"other", (1, 1, 1))
    remember(b"d")
    with conn:
        catalog.insert_files(conn, root, b"d", [(b"a", sig), (b"b", sig)], 1.0)
        assert _digest(conn, root, b"d") is None
    remember(b"d")
    a = catalog.file_at(conn, root, b"d/a")
    assert a is not None
    with conn:
        catalog.update_signature(conn, a.id, (9, 2, 3, 4, 5), 2.0, keep_hash=False)
        assert _digest(conn, root, b"d") is None
    remember(b"d")
    with conn:
        catalog.mark_missing(conn, [a.id], "not_found", 3.0, None)
        assert _digest(conn, root, b"d") is None
    remember(b"d")
    a = catalog.get_file(conn, a.id)
    assert a is not None
    with conn:
        catalog.set_present(conn, a, 4.0)
        assert _digest(conn, root, b"d") is None
    assert _digest(conn, root, b"other") == b"untouched"
    conn.close()


def test_present_digest_matches_a_listing_digest(tmp_path: Path) -> None:
    """The digest read back from the rows equals the one of the same files as listed."""
    conn = catalog.connect(tmp_path / "catalog.db")
    root = catalog.ensure_root(conn, b"/r")
    entries = [(b"z\xff", (1, -5, 3, 2**40, 7)), (b"a", (0, 0, 0, 0, 0)), (b"m", (2, 2, 2, 2, 2))]
    with conn:
        catalog.insert_files(conn, root, b"", sorted(entries), 1.0)
    assert catalog.present_digest(conn, root, b"") == catalog.files_digest(sorted(entries))
    assert catalog.present_digest(conn, root, b"") != catalog.files_digest(sorted(entries)[1:])
    conn.close()


def test_the_writer_checkpoints_outside_its_commits(tmp_path: Path) -> None:
    """SQLite's inline auto-checkpoint is replaced by one after the commit; the WAL stays bounded."""
    db = tmp_path / "catalog.db"
    writer = Writer(db)
    writer.start()
    try:
        assert writer.call(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchall()) == [(0,)]
        detail = os.urandom(3000).hex()
        wal_sizes = []
        for _ in range(12):
            # About 1,300 pages per commit: every commit crosses the threshold.
            writer.call(
                lambda c: c.executemany(
                    "INSERT INTO journal(time, kind, detail) VALUES (0, 'test', ?)",
                    [(detail,)] * 800,
                )
            )
            wal_sizes.append(os.path.getsize(f"{db}-wal"))
        # Every commit is checkpointed before the next begins, so the WAL
        # restarts from its beginning: one commit's worth, not twelve (60 MB).
        assert writer.checkpoints >= 11  # the last one may still be running
        assert max(wal_sizes) < 2 * 1300 * 4096, wal_sizes
    finally:
        writer.stop(time.monotonic() + 10)
    check = catalog.connect(db, readonly=True)
    try:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check.execute("SELECT count(*) FROM journal WHERE kind = 'test'").fetchall() == [
            (12 * 800,)
        ]
    finally:
        check.close()


def test_migration_7_rebuilds_two_indexes_without_their_repeated_rowid(tmp_path: Path) -> None:
    """A catalog of schema 6 opens at 7 with the same answers from the smaller indexes."""
    db = tmp_path / "catalog.db"
    conn = apsw.Connection(str(db))
    for number, sql in enumerate(catalog.MIGRATIONS[:6], 1):
        with conn:
            conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {number}")
    root = catalog.ensure_root(conn, b"/r")
    with conn:
        catalog.insert_files(
            conn, root, b"", [(b"a", (1, 2, 3, 4, 5)), (b"b", (1, 2, 3, 4, 6))], 1.0
        )
        ids = [r.id for r in catalog.unhashed(conn, 0, 10)]
        catalog.set_hashes(conn, [(ids[0], (1, 2, 3, 4, 5), b"h" * 16)])
    conn.close()
    conn = catalog.connect(db)
    try:
        assert catalog.user_version(conn) == catalog.SCHEMA_VERSION
        made: dict[str, str] = dict(
            conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        )
        assert made["journal_file"].endswith("ON journal(file)")
        assert "ON files(hash) WHERE" in made["files_unhashed"]
        assert [r.id for r in catalog.unhashed(conn, 0, 10)] == ids[1:]
        assert catalog.count_unhashed(conn) == 1
        assert [(e.kind, e.file) for e in catalog.history(conn, ids[1])] == [("new", ids[1])]
    finally:
        conn.close()


def test_live_jobs_overtake_queued_background_jobs_at_the_next_job(tmp_path: Path) -> None:
    """Background work gives way between two of its jobs; what ran is committed first."""
    writer = Writer(tmp_path / "catalog.db")
    writer.start()
    entered, gate = threading.Event(), threading.Event()
    ran: list[tuple[str, int]] = []

    def job(name: str, block: bool = False) -> Callable[[apsw.Connection], str]:
        def run(conn: apsw.Connection) -> str:
            ran.append((name, writer.commits))
            conn.execute("INSERT INTO journal(time, kind) VALUES (0, ?)", (name,))
            if block:
                entered.set()
                assert gate.wait(30)
            return name

        return run

    try:
        futures = [writer.submit(job("b0", block=True), background=True)]
        assert entered.wait(30)
        futures += [writer.submit(job(n), background=True) for n in ("b1", "b2")]
        futures += [writer.submit(job(n)) for n in ("l1", "l2")]
        assert writer.waiting() == (2, 2)
        gate.set()
        assert [f.result(30) for f in futures] == ["b0", "b1", "b2", "l1", "l2"]
    finally:
        writer.stop(time.monotonic() + 10)
    first = ran[0][1]
    # b0 committed alone; the live jobs in the next transaction; then the
    # rest of the background work, in the order it was queued.
    assert ran == [
        ("b0", first),
        ("l1", first + 1),
        ("l2", first + 1),
        ("b1", first + 2),
        ("b2", first + 2),
    ]
    check = catalog.connect(tmp_path / "catalog.db", readonly=True)
    try:
        kinds = check.execute("SELECT kind FROM journal ORDER BY seq").fetchall()
        assert [k for (k,) in kinds] == ["b0", "l1", "l2", "b1", "b2"]
    finally:
        check.close()


def test_memory_budget_bounds_every_connection_together(tmp_path: Path) -> None:
    """Four connections that may each cache 32 MB hold, together, no more than the budget."""
    db = tmp_path / "catalog.db"
    conn = catalog.connect(db)  # creates the schema
    conn.execute("CREATE TABLE filler(x BLOB)")
    with conn:
        for _ in range(2_000):
            conn.execute("INSERT INTO filler VALUES (randomblob(4000))")  # about 8 MB
    conn.close()

    def cached_growth() -> int:
        """SQLite's memory taken by four connections that each read the whole table."""
        before = apsw.memory_used()
        conns = [catalog.connect(db, readonly=True, cache_kib=32_000) for _ in range(4)]
        try:
            for c in conns:
                c.execute("SELECT sum(length(x)) FROM filler").fetchall()
            return apsw.memory_used() - before
        finally:
            for c in conns:
                c.close()

    # No limit to begin with, whatever an in-process daemon set before.
    previous = apsw.soft_heap_limit(0)
    try:
        unbounded = cached_growth()
        assert unbounded > 30 << 20  # each holds the whole table
        budget_kib = (
            apsw.memory_used() // 1024 + 4_000
        )  # what this process holds already, plus 4 MB
        catalog.limit_memory(budget_kib)
        assert catalog.memory_kib()[1] == budget_kib
        bounded = cached_growth()
    finally:
        apsw.soft_heap_limit(previous)
    assert bounded < 6 << 20, (unbounded, bounded)


def test_catalog_handle_reads_what_the_writer_committed(tmp_path: Path) -> None:
    """A Catalog's readers are read-only, see each commit, and take the cache size asked for."""
    db = tmp_path / "catalog.db"
    handle = catalog.Catalog(db)
    with pytest.raises(CatalogError):
        handle.reader()  # nothing to read before the writer creates it
    writer = catalog.connect(db)
    reader = handle.reader()
    big = handle.reader(cache_kib=catalog.WRITER_CACHE_KIB)
    try:
        assert reader.execute("PRAGMA cache_size").fetchall() == [(-catalog.READER_CACHE_KIB,)]
        assert big.execute("PRAGMA cache_size").fetchall() == [(-catalog.WRITER_CACHE_KIB,)]
        with writer:
            root = catalog.ensure_root(writer, b"/r")
            catalog.insert_files(writer, root, b"", [(b"a", (1, 2, 3, 4, 5))], 1.0)
        row = catalog.file_at(reader, root, b"a")
        assert row is not None and row.state == catalog.PRESENT
        with pytest.raises(apsw.ReadOnlyError):
            catalog.ensure_root(reader, b"/other")
    finally:
        for conn in (big, reader, writer):
            conn.close()
