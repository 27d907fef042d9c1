"""Catalog functions on their own: what the sweep relies on them to do."""

from __future__ import annotations

from pathlib import Path

import apsw

from filewarden import catalog


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
