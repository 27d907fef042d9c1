"""Catalog functions on their own: what the sweep relies on them to do."""

from __future__ import annotations

from pathlib import Path

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
