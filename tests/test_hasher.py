"""Hashing: the right digest, and never a digest of a file that changed while it was read."""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path

import xxhash

from filewarden import catalog
from filewarden.hasher import Hasher, hash_file, store
from tests.conftest import Harness, logged, wait_for


def test_hash_is_xxh3_128_of_the_content(tmp_path: Path) -> None:
    """hash_file returns xxh3-128 of the bytes and the signature it hashed."""
    p = tmp_path / "f.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # crosses the read chunk size
    p.write_bytes(data)
    got = hash_file(os.fsencode(p))
    assert got is not None
    assert got[0] == xxhash.xxh3_128_digest(data)
    assert got[1] == catalog.signature(p.stat())


def test_file_written_while_hashed_gives_no_hash(tmp_path: Path) -> None:
    """A file appended to while it is read is not given a hash (fstat before and after differ)."""
    p = tmp_path / "growing.bin"
    p.write_bytes(os.urandom(1 << 20) * 256)  # 256 MiB: reading takes long enough to overlap
    stop = threading.Event()
    started = threading.Event()

    def keep_writing() -> None:
        with open(p, "ab") as f:
            while not stop.is_set():
                f.write(b"x" * 4096)
                f.flush()
                started.set()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert started.wait(10)
        assert hash_file(os.fsencode(p)) is None
    finally:
        stop.set()
        writer.join()
    assert hash_file(os.fsencode(p)) is not None  # once it is still, it hashes


def test_stale_expected_signature_gives_no_hash(tmp_path: Path) -> None:
    """A file that is not what the catalog says any more is not hashed for that row."""
    p = tmp_path / "f"
    p.write_bytes(b"one")
    sig = catalog.signature(p.stat())
    p.write_bytes(b"two, longer")
    assert hash_file(os.fsencode(p), sig) is None


def test_fifo_and_symlink_are_not_hashed(tmp_path: Path) -> None:
    """A FIFO (never waited on) or a symlink (never followed) under a file's name gives no hash."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "target").write_bytes(b"t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert hash_file(os.fsencode(tmp_path / "fifo")) is None
    assert hash_file(os.fsencode(tmp_path / "link")) is None


def test_catalog_refuses_hash_for_changed_row(harness: Harness, tree: Path) -> None:
    """set_hash stores a digest only while the row still has the signature that was hashed."""
    p = tree / "a.txt"
    p.write_text("a")
    harness.sweep()
    row = harness.at(p)
    assert row is not None
    got = hash_file(os.fsencode(p), row.signature)
    assert got is not None
    p.write_text("changed")
    harness.sweep()  # the catalog now has the new signature
    stored = harness.writer.call(lambda c: catalog.set_hash(c, row.id, row.signature, got[0]))
    assert stored == "stale"
    assert harness.at(p).hash is None  # type: ignore[union-attr]
    fresh = harness.at(p)
    assert fresh is not None
    got2 = hash_file(os.fsencode(p), fresh.signature)
    assert got2 is not None
    assert (
        harness.writer.call(lambda c: catalog.set_hash(c, fresh.id, fresh.signature, got2[0]))
        == "stored"
    )


def test_a_stored_hash_that_disagrees_with_its_unchanged_file_is_dropped_and_redone(
    harness: Harness, tree: Path
) -> None:
    """A hash found wrong for a file whose signature did not change is dropped, logged, and hashed again."""
    p = tree / "a.txt"
    p.write_bytes(b"the real content")
    harness.sweep()
    row = harness.at(p)
    assert row is not None
    wrong = xxhash.xxh3_128_digest(b"another file's content")
    harness.writer.call(
        lambda c: c.execute("UPDATE files SET hash = ? WHERE id = ?", (wrong, row.id))
    )
    stop = threading.Event()
    hasher = Hasher(harness.writer, lambda: {harness.root.id: harness.root}, stop=stop)
    got = hash_file(os.fsencode(p), row.signature)
    assert got is not None
    with logged() as events:
        # The hasher walks unhashed rows only: hand it the row as if it had raced a relink.
        results = [(row.id, row.signature, got[0])]
        assert harness.writer.call(partial(store, results=results)) == 0
    assert [e["event"] for e in events] == ["hash.mismatch"]
    assert events[0]["log_level"] == "error" and events[0]["id"] == row.id
    assert harness.at(p).hash is None  # type: ignore[union-attr]
    hasher.start()
    try:
        wait_for(lambda: (r := harness.at(p)) is not None and r.hash is not None)
    finally:
        stop.set()
        hasher.poke()
        hasher.join(5)
    assert harness.at(p).hash == xxhash.xxh3_128_digest(b"the real content")  # type: ignore[union-attr]


def test_a_batch_of_hashes_stores_each_that_still_fits_and_drops_a_wrong_one(
    harness: Harness, tree: Path
) -> None:
    """set_hashes in one go: stored, stale (changed since) and mismatched rows each end right."""
    paths = [tree / f"{n}.txt" for n in range(4)]
    for n, p in enumerate(paths):
        p.write_bytes(b"x" * (n + 1))
    harness.sweep()
    rows, digests = [], []
    for p in paths:
        row = harness.at(p)
        assert row is not None
        got = hash_file(os.fsencode(p), row.signature)
        assert got is not None
        rows.append(row)
        digests.append(got[0])
    wrong, again = rows[2], rows[3]
    harness.writer.call(lambda c: catalog.set_hash(c, wrong.id, wrong.signature, b"w" * 16))
    harness.writer.call(lambda c: catalog.set_hash(c, again.id, again.signature, digests[3]))
    paths[1].write_bytes(b"changed since it was hashed")
    harness.sweep()
    results = [(r.id, r.signature, d) for r, d in zip(rows, digests, strict=True)]
    # Stored: 0, and 3 (it already held this very hash); 1 stale; 2 wrong: dropped, to redo.
    assert harness.writer.call(lambda c: catalog.set_hashes(c, results)) == (2, [wrong.id])
    assert [catalog.get_file(harness.reader, r.id).hash for r in rows] == [  # type: ignore[union-attr]
        digests[0],
        None,
        None,
        digests[3],
    ]
