"""The identity rules in-process: a real catalog, real files, real sweeps; each rule and its refusals."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash

from filewarden import catalog, identity
from filewarden.hasher import hash_file
from filewarden.identity import Relinker, Saves, looks_like_backup
from tests.conftest import Harness, logged

T0 = 1_600_000_000 * 10**9


def write(path: Path, content: bytes, mtime_ns: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def store_hash(h: Harness, row: catalog.FileRow, digest: bytes) -> None:
    """Store a file's hash through the writer, as the background hasher does."""
    h.writer.call(lambda c: catalog.set_hash(c, row.id, row.signature, digest))


def set_missing_since(h: Harness, file_id: int, since: float) -> None:
    h.writer.call(
        lambda c: c.execute("UPDATE files SET missing_since = ? WHERE id = ?", (since, file_id))
    )


def hash_all(h: Harness) -> None:
    """Store every present file's hash, as the background hasher would."""
    for row in h.files("present"):
        got = hash_file(h.root.abs(row.path), row.signature)
        assert got is not None
        store_hash(h, row, got[0])


def index(h: Harness, relinker: Relinker) -> None:
    """Sweep, hash what is present (as the background hasher would), and let the relinker look."""
    h.sweep()
    hash_all(h)
    relinker.catch_up(h.reader)


def indexed_then_gone(
    h: Harness, relinker: Relinker, paths: list[Path], contents: list[bytes]
) -> list[int]:
    """Files indexed and hashed, then deleted and swept (missing, looked at); their ids."""
    for p, data in zip(paths, contents, strict=True):
        write(p, data)
    index(h, relinker)
    ids = [row.id for row in (h.at(p) for p in paths) if row is not None]
    assert len(ids) == len(paths)
    for p in paths:
        p.unlink()
    h.sweep()
    relinker.catch_up(h.reader)
    return ids


@pytest.fixture
def relinker(harness: Harness) -> Iterator[Relinker]:
    r = Relinker(harness.writer, lambda: {harness.root.id: harness.root})
    r.start_at(catalog.last_seq(harness.reader))
    yield r


def annotate(h: Harness, file_id: int, value: str) -> None:
    h.writer.call(lambda c: catalog.set_annotation(c, file_id, "label", value))


def test_an_inode_match_is_confirmed_by_content(harness: Harness, tree: Path) -> None:
    """Same inode, size and mtime but other content (a reused inode number): no id moves, and that is logged."""
    a = tree / "a.jpg"
    write(a, b"A" * 100)
    harness.sweep()
    hash_all(harness)
    known = harness.at(a)
    assert known is not None and known.hash is not None
    # What the catalog knows of ``a`` now matches another file's stat exactly.
    b = tree / "elsewhere" / "b.jpg"
    write(b, b"B" * 100)
    sig = catalog.signature(b.stat())
    with logged() as events:
        got = identity.by_inode(
            harness.reader,
            sig,
            {harness.root.id: harness.root},
            os.fsencode(b),
            over_path=False,
        )
    assert got is None or got[0].id != known.id
    harness.writer.call(
        lambda c: c.execute(
            "UPDATE files SET device = ?, inode = ? WHERE id = ?", (sig[3], sig[4], known.id)
        )
    )
    a.unlink()
    with logged() as events:
        got = identity.by_inode(
            harness.reader, sig, {harness.root.id: harness.root}, os.fsencode(b)
        )
    assert got is None
    assert [(e["event"], e["path"], e["rule"], e["candidates"], e["reason"]) for e in events] == [
        ("file.ambiguous", os.fsencode(b), "inode", [known.id], "the content differs")
    ]
    # The same content confirms it: the file moved.
    write(b, b"A" * 100)
    sig = catalog.signature(b.stat())
    harness.writer.call(
        lambda c: c.execute(
            "UPDATE files SET inode = ?, mtime_ns = ? WHERE id = ?", (sig[4], sig[1], known.id)
        )
    )
    got = identity.by_inode(harness.reader, sig, {harness.root.id: harness.root}, os.fsencode(b))
    assert got is not None and got[0].id == known.id
    # Over a missing file's path too: inode and content together outweigh the path.
    got = identity.by_inode(
        harness.reader, sig, {harness.root.id: harness.root}, os.fsencode(b), over_path=True
    )
    assert got is not None and got[0].id == known.id
    # In the writer, which reads no file, a hashed candidate is left to the content rule.
    assert (
        identity.by_inode(
            harness.reader, sig, {harness.root.id: harness.root}, os.fsencode(b), can_hash=False
        )
        is None
    )


def test_a_file_seen_deleted_is_never_an_inode_candidate(harness: Harness, tree: Path) -> None:
    """Its inode number was freed: a new file with that number, size and mtime is another file."""
    a = tree / "a.jpg"
    write(a, b"A" * 100)
    harness.sweep()
    row = harness.at(a)
    assert row is not None
    harness.writer.call(lambda c: catalog.mark_missing(c, [row.id], "deleted", time.time(), None))
    roots = {harness.root.id: harness.root}
    assert identity.inode_candidates(harness.reader, row.signature, roots) == []
    harness.writer.call(
        lambda c: c.execute("UPDATE files SET missing_reason = 'not_found' WHERE id = ?", (row.id,))
    )
    assert [r.id for r, _ in identity.inode_candidates(harness.reader, row.signature, roots)] == [
        row.id
    ]
    # A row seen deleted, then a file still at its path with the inode, then one whose path
    # no longer holds it: only that one.
    later = tree / "later.jpg"
    write(later, b"A" * 100)
    link = tree / "link.jpg"
    os.link(later, link)
    a.unlink()
    harness.sweep()
    ids = [row.id, _row(harness, later).id, _row(harness, link).id]
    sig = catalog.signature(later.stat())
    harness.writer.call(
        lambda c: (
            c.execute(
                "UPDATE files SET device = ?, inode = ?, missing_reason = 'deleted' WHERE id = ?",
                (sig[3], sig[4], ids[0]),
            ),
            c.execute("UPDATE files SET dir = x'6e6f6e65' WHERE id = ?", (ids[2],)),
        )
    )
    found = [r.id for r, _ in identity.inode_candidates(harness.reader, sig, roots)]
    assert found == [ids[2]]  # later.jpg is still at its path with the inode: a hard link


def test_same_path_wins_over_an_unconfirmed_inode(harness: Harness, tree: Path) -> None:
    """Two files deleted and restored crosswise onto each other's inode numbers get their own ids back."""
    a, b = tree / "a.jpg", tree / "b.jpg"
    write(a, b"A" * 100)
    write(b, b"B" * 100)
    harness.sweep()
    ida, idb = harness.at(a).id, harness.at(b).id  # type: ignore[union-attr]
    sa, sb = catalog.signature(a.stat()), catalog.signature(b.stat())
    a.unlink()
    b.unlink()
    harness.sweep()
    assert {r.id for r in harness.files("missing")} == {ida, idb}
    write(a, b"A" * 100)
    write(b, b"B" * 100)
    # Make the catalog's records say each new file has the other's old inode (what ext4 does).
    na, nb = catalog.signature(a.stat()), catalog.signature(b.stat())
    harness.writer.call(
        lambda c: (
            c.execute("UPDATE files SET inode = ?, ctime_ns = ? WHERE id = ?", (nb[4], sa[2], ida)),
            c.execute("UPDATE files SET inode = ?, ctime_ns = ? WHERE id = ?", (na[4], sb[2], idb)),
            c.execute(
                "UPDATE files SET missing_reason = 'not_found' WHERE id IN (?, ?)", (ida, idb)
            ),
        )
    )
    harness.sweep()
    assert harness.at(a).id == ida and harness.at(b).id == idb  # type: ignore[union-attr]
    assert harness.files("missing") == []


def test_copy_then_delete_moves_the_id_to_the_copy(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """A hashed file deleted after an identical copy arrived: the copy takes the old id; its interim id is retired."""
    a = tree / "album" / "a.jpg"
    write(a, os.urandom(300))
    harness.sweep()
    hash_all(harness)
    old = harness.at(a)
    assert old is not None
    annotate(harness, old.id, "mine")
    relinker.catch_up(harness.reader)
    copy = tree / "new" / "a.jpg"
    write(copy, a.read_bytes())
    harness.sweep()
    interim = harness.at(copy)
    assert interim is not None and interim.id != old.id
    relinker.catch_up(harness.reader)  # an arrival: nothing is missing yet
    assert harness.at(copy).id == interim.id  # type: ignore[union-attr]
    a.unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 1
    now = harness.at(copy)
    assert now is not None and now.id == old.id and now.state == "present"
    assert now.hash == old.hash and now.first_seen == old.first_seen
    assert catalog.get_annotations(harness.reader, old.id) == {"label": "mine"}
    assert catalog.get_file(harness.reader, interim.id) is None
    retire = [e for e in catalog.history(harness.reader, interim.id) if e.kind == "retire"]
    assert len(retire) == 1 and retire[0].detail == {"into": old.id}
    assert catalog.history(harness.reader, old.id)[-1].kind == "relink"


@pytest.mark.parametrize("why", ["known together", "annotated", "outside the window"])
def test_copy_then_delete_refusals(
    harness: Harness, tree: Path, relinker: Relinker, why: str
) -> None:
    """No relink when the copy lived beside the original, has its own annotations, or arrived too long before."""
    a = tree / "a.jpg"
    write(a, os.urandom(300))
    copy = tree / "copy.jpg"
    if why == "known together":
        write(copy, a.read_bytes())
    index(harness, relinker)
    old = harness.at(a)
    assert old is not None
    if why != "known together":
        write(copy, a.read_bytes())
        harness.sweep()
    interim = harness.at(copy)
    assert interim is not None
    if why == "annotated":
        annotate(harness, interim.id, "its own")
    if why == "outside the window":
        # The copy arrived after the original was last seen (the sweep before it),
        # but longer ago than the window when the original goes.
        relinker.window = 1e-6
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 0
    assert harness.at(copy).id == interim.id  # type: ignore[union-attr]
    assert catalog.get_file(harness.reader, old.id).state == "missing"  # type: ignore[union-attr]


def test_several_copies_are_ambiguous_unless_one_has_the_name(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Two identical copies arrived: the one with the original's name takes the id; two others: none, logged."""
    a = tree / "a.jpg"
    write(a, os.urandom(300))
    index(harness, relinker)
    old = harness.at(a)
    assert old is not None
    write(tree / "x" / "copy1.jpg", a.read_bytes())
    write(tree / "y" / "copy2.jpg", a.read_bytes())
    harness.sweep()
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    with logged() as events:
        assert relinker.catch_up(harness.reader) == 0
    assert [e["event"] for e in events] == ["file.ambiguous"]
    assert events[0]["rule"] == "hash" and len(events[0]["candidates"]) == 2
    # Another file, copied twice after it was last seen, once under its own name.
    b = tree / "b.jpg"
    write(b, os.urandom(300))
    index(harness, relinker)
    idb = harness.at(b).id  # type: ignore[union-attr]
    write(tree / "y" / "other.jpg", b.read_bytes())
    write(tree / "z" / "b.jpg", b.read_bytes())
    harness.sweep()
    relinker.catch_up(harness.reader)
    b.unlink()
    harness.sweep()
    with logged() as events:
        assert relinker.catch_up(harness.reader) == 1
    relink = next(e for e in events if e["event"] == "file.relink")
    assert (relink["chose"], relink["candidates"]) == ("same name", 2)
    assert harness.at(tree / "z" / "b.jpg").id == idb  # type: ignore[union-attr]


def test_a_returning_file_picks_the_missing_one_with_its_name_then_the_latest(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Several missing files with the content: the same name wins, then the most recently missing."""
    content = os.urandom(300)
    paths = [tree / "p" / "one.jpg", tree / "q" / "two.jpg", tree / "r" / "three.jpg"]
    for p in paths:
        write(p, content)
    index(harness, relinker)
    ids = [harness.at(p).id for p in paths]  # type: ignore[union-attr]
    for n, p in enumerate(paths):
        p.unlink()
        harness.sweep()
        # Distinct times of going missing, in this order.
        set_missing_since(harness, ids[n], 1000.0 * (n + 1))
    relinker.catch_up(harness.reader)
    # Another mtime: a freed inode number handed out again must not make this rule 2's.
    write(tree / "back" / "two.jpg", content, T0 + 1)  # the name of the second
    harness.sweep()
    with logged() as events:
        relinker.catch_up(harness.reader)
    assert harness.at(tree / "back" / "two.jpg").id == ids[1]  # type: ignore[union-attr]
    relink = next(e for e in events if e["event"] == "file.relink")
    assert (relink["chose"], relink["candidates"]) == ("same name", 3)
    write(
        tree / "back" / "other.jpg", content, T0 + 1
    )  # no name matches: the most recently missing
    harness.sweep()
    with logged() as events:
        relinker.catch_up(harness.reader)
    assert harness.at(tree / "back" / "other.jpg").id == ids[2]  # type: ignore[union-attr]
    relink = next(e for e in events if e["event"] == "file.relink")
    assert (relink["chose"], relink["candidates"]) == ("most recently missing", 2)


def test_editor_backup_names() -> None:
    """What an editor's backup looks like: a name that starts with the file's, in its directory."""
    assert looks_like_backup(b"/r/d/f.txt", b"/r/d/f.txt~")
    assert looks_like_backup(b"/r/d/f.txt", b"/r/d/f.txt.~1~")
    assert looks_like_backup(b"/r/d/f.txt", b"/r/d/.f.txt.swp")
    assert not looks_like_backup(b"/r/d/f.txt", b"/r/e/f.txt~")  # another directory
    assert not looks_like_backup(b"/r/d/IMG_1.jpg", b"/r/d/IMG_1_old.jpg")
    assert not looks_like_backup(b"/r/d/f.txt", b"/r/d/f.txt")


def test_saves_are_remembered_for_the_window_only() -> None:
    """A move aside is remembered both ways for SAVE_WINDOW seconds, then forgotten."""
    saves = Saves(window=5.0)
    saves.moved(b"/r/f", b"/r/f~", now=100.0)
    saves.moved(b"/r/a.jpg", b"/r/b.jpg", now=100.0)  # a rename, not a backup
    assert saves.backup_of(b"/r/f", now=101.0) == (b"/r/f~", 100.0)
    assert saves.home_of(b"/r/f~", now=101.0) == (b"/r/f", 100.0)
    assert saves.backup_of(b"/r/a.jpg", now=101.0) is None
    assert saves.backup_of(b"/r/f", now=106.0) is None
    assert saves.home_of(b"/r/f~", now=106.0) is None


def _row(h: Harness, path: Path) -> catalog.FileRow:
    row = h.at(path)
    assert row is not None
    return row


def test_the_relink_log_says_everything_about_the_decision(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """file.relink by hash names the id, both absolute paths, the rule, the candidates, the choice and the retired id."""
    a = tree / "a.jpg"
    write(a, os.urandom(300))
    index(harness, relinker)
    old = _row(harness, a)
    copy = tree / "b" / "a.jpg"
    write(copy, a.read_bytes(), T0 + 1)
    harness.sweep()
    interim = _row(harness, copy)
    hashed_before = relinker.hashed
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    with logged() as events:
        assert relinker.catch_up(harness.reader) == 1
    assert relinker.hashed == hashed_before + 1  # the copy, once; the original's hash was stored
    [event] = [e for e in events if e["event"] == "file.relink"]
    assert {k: v for k, v in event.items() if k not in ("log_level", "event")} == {
        "id": old.id,
        "by": "hash",
        "candidates": 1,
        "chose": "only one",
        "path": os.fsencode(copy),
        "old_path": os.fsencode(a),
        "replaces_id": interim.id,
    }
    assert relinker.relinked == 1


def test_two_known_files_with_one_inode_are_ambiguous(harness: Harness, tree: Path) -> None:
    """Two present files whose paths no longer hold the inode that a new file has: no id moves, and that is logged."""
    a, b = tree / "a.jpg", tree / "b.jpg"
    write(a, b"A" * 50)
    write(b, b"B" * 50)
    harness.sweep()
    c = tree / "c.jpg"
    write(c, b"C" * 50)
    sig = catalog.signature(c.stat())
    ids = [_row(harness, a).id, _row(harness, b).id]
    harness.writer.call(
        lambda conn: conn.execute(
            "UPDATE files SET device = ?, inode = ? WHERE id IN (?, ?)", (sig[3], sig[4], *ids)
        )
    )
    roots = {harness.root.id: harness.root}
    with logged() as events:
        assert identity.by_inode(harness.reader, sig, roots, os.fsencode(c)) is None
    assert [
        (e["event"], e["path"], e["rule"], sorted(e["candidates"]), e["reason"]) for e in events
    ] == [("file.ambiguous", os.fsencode(c), "inode", sorted(ids), "several files moved here")]


def test_an_inode_match_prefers_the_moved_file_then_the_latest_missing(
    harness: Harness, tree: Path
) -> None:
    """Several inode candidates: a present file moved away first; else the most recently missing one."""
    paths = [tree / f"{n}.jpg" for n in range(3)]
    for p in paths:
        write(p, b"X" * 50)
    harness.sweep()
    new = tree / "new.jpg"
    write(new, b"X" * 50)
    sig = catalog.signature(new.stat())
    ids = [_row(harness, p).id for p in paths]
    now = time.time()

    def set_rows(conn: Any) -> None:
        conn.execute(
            "UPDATE files SET device = ?, inode = ? WHERE id IN (?, ?, ?)", (sig[3], sig[4], *ids)
        )

    harness.writer.call(set_rows)
    harness.writer.call(lambda c: catalog.mark_missing(c, ids[:2], "not_found", now - 100, None))
    harness.writer.call(
        lambda c: c.execute("UPDATE files SET missing_since = ? WHERE id = ?", (now - 50, ids[1]))
    )
    roots = {harness.root.id: harness.root}
    got = identity.by_inode(harness.reader, sig, roots, os.fsencode(new))
    assert got is not None and got[0].id == ids[2]  # present, its path no longer holds the inode
    harness.writer.call(lambda c: catalog.mark_missing(c, [ids[2]], "not_found", now - 200, None))
    got = identity.by_inode(harness.reader, sig, roots, os.fsencode(new))
    assert got is not None and got[0].id == ids[1]  # the most recently missing
    # Over a path where a missing file is recorded, only a hashed candidate counts.
    assert identity.by_inode(harness.reader, sig, roots, os.fsencode(new), over_path=True) is None


def test_still_candidate_follows_what_happened_since_the_match(
    harness: Harness, tree: Path
) -> None:
    """The writer's second look: still a candidate when only its state changed; not when it moved back onto its inode, went, or its hash changed."""
    a = tree / "a.jpg"
    write(a, b"A" * 50)
    harness.sweep()
    seen = _row(harness, a)
    b = tree / "b.jpg"
    a.rename(b)
    sig = catalog.signature(b.stat())
    roots = {harness.root.id: harness.root}
    now = identity.still_candidate(harness.reader, seen, sig, roots)
    assert now is not None and now.id == seen.id
    harness.writer.call(lambda c: catalog.mark_missing(c, [seen.id], "moved_out", 1.0, None))
    now = identity.still_candidate(harness.reader, seen, sig, roots)
    assert now is not None and now.state == "missing"  # moved out, and back: still it
    harness.writer.call(
        lambda c: c.execute("UPDATE files SET hash = x'00' WHERE id = ?", (seen.id,))
    )
    assert identity.still_candidate(harness.reader, seen, sig, roots) is None
    harness.writer.call(
        lambda c: c.execute("UPDATE files SET hash = NULL WHERE id = ?", (seen.id,))
    )
    b.rename(a)  # back where the catalog has it: at its own path, no longer a candidate
    harness.writer.call(lambda c: catalog.set_present(c, _row(harness, a), 2.0))
    assert identity.still_candidate(harness.reader, seen, sig, roots) is None
    a.unlink()
    harness.sweep()
    harness.writer.call(lambda c: catalog.purge(c, seen.id, 3.0, {"by": "test"}))
    assert identity.still_candidate(harness.reader, seen, sig, roots) is None


def test_the_relinker_cursor_starts_once_and_only_moves_forward(harness: Harness) -> None:
    """start_at sets the cursor only the first time; skip_to never goes back; a first catch_up only takes the journal's end."""
    harness.writer.call(lambda c: catalog.journal(c, 1.0, "online", None, None, None))
    r = Relinker(harness.writer, lambda: {})
    assert r.catch_up(harness.reader) == 0  # no cursor yet: starts at the end
    assert r._seq == catalog.last_seq(harness.reader) > 0
    r2 = Relinker(harness.writer, lambda: {})
    r2.start_at(5)
    r2.start_at(9)
    r2.skip_to(3)
    assert r2._seq == 5
    r2.skip_to(7)
    assert r2._seq == 7
    r3 = Relinker(harness.writer, lambda: {})
    r3.skip_to(4)
    assert r3._seq == 4


def test_a_digest_is_read_only_when_not_stored(harness: Harness, tree: Path) -> None:
    """The content rule uses a stored hash as is, hashes an unhashed file once, and gives up on a file of no known root."""
    a = tree / "a.jpg"
    write(a, b"content")
    harness.sweep()
    row = _row(harness, a)
    r = Relinker(harness.writer, lambda: {harness.root.id: harness.root})
    assert r._digest(row, {harness.root.id: harness.root}) == hash_file(os.fsencode(a))[0]  # type: ignore[index]
    assert r.hashed == 1
    hash_all(harness)
    assert r._digest(_row(harness, a), {harness.root.id: harness.root}) is not None
    assert r.hashed == 1
    assert r._digest(row, {}) is None
    a.unlink()
    assert r._digest(row, {harness.root.id: harness.root}) is None  # gone: no digest, no error
    assert identity._abs(row, {}) == row.path
    assert identity._abs(row, {harness.root.id: harness.root}) == os.fsencode(a)


def test_inode_candidates_need_the_same_size_mtime_and_a_known_root(
    harness: Harness, tree: Path
) -> None:
    """A row of another size, another mtime or an unknown root is no candidate; the others still are."""
    paths = [tree / f"{n}.jpg" for n in range(4)]
    for p in paths:
        write(p, b"Y" * 60)
    harness.sweep()
    new = tree / "new.jpg"
    write(new, b"Y" * 60)
    sig = catalog.signature(new.stat())
    ids = [_row(harness, p).id for p in paths]

    def edit(c: Any) -> None:
        c.execute(
            "UPDATE files SET device = ?, inode = ? WHERE id IN (?, ?, ?, ?)",
            (sig[3], sig[4], *ids),
        )
        c.execute("UPDATE files SET size = size + 1 WHERE id = ?", (ids[0],))
        c.execute("UPDATE files SET mtime_ns = mtime_ns + 1 WHERE id = ?", (ids[1],))

    harness.writer.call(edit)
    for p in paths:
        p.unlink()
    roots = {harness.root.id: harness.root}
    found = [r.id for r, _ in identity.inode_candidates(harness.reader, sig, roots)]
    assert sorted(found) == sorted(ids[2:])
    assert identity.inode_candidates(harness.reader, sig, {}) == []


def test_one_catch_up_relinks_every_arrival_and_departure_it_sees(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Returns how many were relinked; a file without a hash or a match does not stop the rest."""
    # Going first (lower ids), three departures that relink nothing: one never hashed, one
    # whose same-size arrival has other content, one with two identical copies.
    plain = tree / "o" / "0plain.jpg"
    write(plain, os.urandom(90))
    harness.sweep()
    nomatch, ambig = tree / "o" / "1nomatch.jpg", tree / "o" / "2ambig.jpg"
    write(nomatch, os.urandom(91))
    write(ambig, os.urandom(92))
    contents = [os.urandom(100 + n) for n in range(5)]
    originals = [tree / "o" / f"{n}.jpg" for n in range(5)]
    for p, data in zip(originals, contents, strict=True):
        write(p, data)
    harness.sweep()
    for p in [nomatch, ambig]:
        row = _row(harness, p)
        got = hash_file(os.fsencode(p), row.signature)
        assert got is not None
        store_hash(harness, row, got[0])
    for p in originals:
        row = _row(harness, p)
        got = hash_file(os.fsencode(p), row.signature)
        assert got is not None
        store_hash(harness, row, got[0])
    relinker.catch_up(harness.reader)
    ids = [_row(harness, p).id for p in originals]
    # 0 and 1 go first and come back later (arrivals); 2 and 4 are copied, then go
    # (departures), with plain.jpg, unhashed, going just before them.
    originals[0].unlink()
    originals[1].unlink()
    copies = {n: tree / "c" / f"{n}.jpg" for n in (2, 4)}
    for n, p in copies.items():
        write(p, contents[n], T0 + 1)
    write(tree / "c" / "other.jpg", os.urandom(91), T0 + 1)  # nomatch's size, not its content
    write(tree / "c" / "ambig1.jpg", ambig.read_bytes(), T0 + 1)
    write(tree / "c" / "ambig2.jpg", ambig.read_bytes(), T0 + 1)
    harness.sweep()
    relinker.catch_up(harness.reader)
    back = [tree / "back" / "0.jpg", tree / "back" / "1.jpg"]
    write(back[0], contents[0], T0 + 1)
    # The size and content of 3, which is present: no missing file of its size, never hashed.
    write(tree / "back" / "junk.jpg", contents[3], T0 + 1)
    write(back[1], contents[1], T0 + 1)
    for p in [plain, nomatch, ambig, originals[2], originals[4]]:
        p.unlink()
    harness.sweep()
    before = relinker.hashed
    with logged() as events:
        assert relinker.catch_up(harness.reader) == 4
    assert [_row(harness, p).id for p in back] == ids[:2]
    assert _row(harness, copies[2]).id == ids[2] and _row(harness, copies[4]).id == ids[4]
    assert _row(harness, originals[3]).id == ids[3]
    assert relinker.relinked == 4
    # Hashed: 0.jpg and 1.jpg (a hashed missing file has their size), the copies of 2 and 4,
    # other.jpg and the two copies of ambig.
    assert relinker.hashed - before == 7
    assert _row(harness, back[0]).hash == xxhash.xxh3_128_digest(contents[0])
    relinks = {e["id"]: e for e in events if e["event"] == "file.relink"}
    assert relinks[ids[0]]["chose"] == "only one" and relinks[ids[0]]["candidates"] == 1
    assert catalog.history(harness.reader, ids[0])[-1].detail == {"by": "hash"}


@pytest.mark.parametrize("hashed", [False, True])
def test_a_copy_first_seen_when_the_original_was_last_seen_lived_beside_it(
    harness: Harness, tree: Path, relinker: Relinker, hashed: bool
) -> None:
    """The boundary of "known before the original was last seen": the same instant counts as
    known, whether the copy's hash is stored already or read when the original goes."""
    a = tree / "a.jpg"
    write(a, os.urandom(200))
    index(harness, relinker)
    copy = tree / "x" / "a.jpg"
    write(copy, a.read_bytes(), T0 + 1)
    harness.sweep()
    if hashed:
        hash_all(harness)
    old, interim = _row(harness, a), _row(harness, copy)
    harness.writer.call(
        lambda c: c.execute(
            "UPDATE files SET last_seen = ? WHERE id = ?", (interim.first_seen, old.id)
        )
    )
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 0
    assert _row(harness, copy).id == interim.id


def test_several_copies_log_the_missing_file_and_every_candidate(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """file.ambiguous for the content rule: the path that went, rule hash, the copies, and why."""
    a = tree / "a.jpg"
    write(a, os.urandom(200))
    index(harness, relinker)
    copies = [tree / "x" / "one.jpg", tree / "y" / "two.jpg"]
    for p in copies:
        write(p, a.read_bytes(), T0 + 1)
    harness.sweep()
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    with logged() as events:
        assert relinker.catch_up(harness.reader) == 0
    assert [
        (e["event"], e["path"], e["rule"], sorted(e["candidates"]), e["reason"]) for e in events
    ] == [
        (
            "file.ambiguous",
            os.fsencode(a),
            "hash",
            sorted(_row(harness, p).id for p in copies),
            "several copies arrived",
        )
    ]


def test_a_missing_file_without_a_hash_has_no_copy_half(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Relinking by content needs the missing file's hash: an unhashed file that goes takes no copy."""
    a = tree / "a.jpg"
    write(a, os.urandom(200))
    harness.sweep()
    relinker.catch_up(harness.reader)
    copy = tree / "x" / "a.jpg"
    write(copy, a.read_bytes(), T0 + 1)
    harness.sweep()
    relinker.catch_up(harness.reader)
    interim = _row(harness, copy)
    a.unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 0
    assert _row(harness, copy).id == interim.id and relinker.hashed == 0


def test_a_file_back_before_its_departure_is_looked_at_takes_no_copy(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """A hashed file that went missing and came back before the relinker looked: present, it takes nothing."""
    a = tree / "a.jpg"
    write(a, os.urandom(200))
    index(harness, relinker)
    old = _row(harness, a)
    copy = tree / "x" / "a.jpg"
    write(copy, a.read_bytes(), T0 + 1)
    harness.sweep()
    relinker.catch_up(harness.reader)
    interim = _row(harness, copy)
    content = a.read_bytes()
    a.unlink()
    harness.sweep()
    write(a, content)
    harness.sweep()  # back at its path: restored
    assert _row(harness, a).id == old.id
    assert relinker.catch_up(harness.reader) == 0
    assert _row(harness, copy).id == interim.id and _row(harness, a).id == old.id


@pytest.mark.parametrize("swept", [False, True])
def test_an_arrival_gone_before_it_is_looked_at_does_not_stop_the_next(
    harness: Harness, tree: Path, relinker: Relinker, swept: bool
) -> None:
    """Two files come back; the first is deleted again before the relinker looks: the second is still relinked."""
    contents = [os.urandom(150), os.urandom(151)]
    ids = indexed_then_gone(harness, relinker, [tree / "a.jpg", tree / "b.jpg"], contents)
    back = [tree / "r" / "a.jpg", tree / "r" / "b.jpg"]
    for p, data in zip(back, contents, strict=True):
        write(p, data, T0 + 1)
    harness.sweep()
    back[0].unlink()  # before the relinker looks: its row is still present
    if swept:
        harness.sweep()  # now its row is missing too
    assert relinker.catch_up(harness.reader) == 1
    assert _row(harness, back[1]).id == ids[1]


def test_many_files_of_one_size_gone_at_once_each_find_their_own_copy(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Copy-then-delete of many files of one size in one go: each id goes to its own copy,
    whether the copy was hashed already or is read now, and each copy is read once; the
    first to go, one without a copy and one with two, do not stop the others."""
    contents = [os.urandom(256) for _ in range(12)]
    originals = [tree / "o" / f"{n:02d}.jpg" for n in range(12)]
    for p, data in zip(originals, contents, strict=True):
        write(p, data)
    index(harness, relinker)
    ids = [_row(harness, p).id for p in originals]
    # 0 has no copy; 1 is copied twice under other names (ambiguous); 2..11 once each.
    copies = {n: tree / "c" / f"{n:02d}.jpg" for n in range(2, 12)}
    for n, p in copies.items():
        write(p, contents[n], T0 + 1)
    write(tree / "c" / "x.jpg", contents[1], T0 + 1)
    write(tree / "c" / "y.jpg", contents[1], T0 + 1)
    harness.sweep()
    for n in range(2, 12, 2):  # half of them hashed by the background hasher already
        row = _row(harness, copies[n])
        store_hash(harness, row, xxhash.xxh3_128_digest(contents[n]))
    relinker.catch_up(harness.reader)
    for p in originals:
        p.unlink()
    harness.sweep()
    before = relinker.hashed
    assert relinker.catch_up(harness.reader) == 10
    assert [_row(harness, copies[n]).id for n in range(2, 12)] == ids[2:]
    assert catalog.get_file(harness.reader, ids[0]).state == "missing"  # type: ignore[union-attr]
    assert catalog.get_file(harness.reader, ids[1]).state == "missing"  # type: ignore[union-attr]
    # Read now: the five unhashed copies and x, y; each once, though weighed for every departure.
    assert relinker.hashed - before == 7


def test_two_identical_files_copied_then_deleted_take_one_copy_each(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Two originals with one content, each copied once: the copy with the first's name goes
    to it, and the other copy, the only one left, to the second."""
    data = os.urandom(300)
    ids = []
    for p in [tree / "a.jpg", tree / "b.jpg"]:
        write(p, data)
    index(harness, relinker)
    ids = [_row(harness, tree / n).id for n in ("a.jpg", "b.jpg")]
    named, other = tree / "c" / "a.jpg", tree / "c" / "x.jpg"
    for p in (named, other):
        write(p, data, T0 + 1)
    index(harness, relinker)
    (tree / "a.jpg").unlink()
    (tree / "b.jpg").unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 2
    assert [_row(harness, named).id, _row(harness, other).id] == ids


def test_the_copy_with_the_name_wins_among_many_hashed_copies(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """More identical copies than are read for one departure, all hashed already: every one is
    weighed, so the one with the original's name, the last to be listed, takes the id."""
    a = tree / "a.jpg"
    write(a, os.urandom(300))
    index(harness, relinker)
    old = _row(harness, a)
    named = tree / "z" / "a.jpg"  # listed after the other copies: the newest id
    for p in [named] + [tree / "c" / f"copy{n:03d}.jpg" for n in range(64)]:
        write(p, a.read_bytes(), T0 + 1)
    index(harness, relinker)
    assert identity.MAX_CONTENT_CANDIDATES < 65
    a.unlink()
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 1
    assert _row(harness, named).id == old.id


def test_a_copy_first_seen_at_the_edge_of_the_window_is_within_it(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """The copy window's boundary: a copy first seen exactly match_window before the original
    went missing is still its copy half."""
    a = tree / "a.jpg"
    write(a, os.urandom(200))
    index(harness, relinker)
    old = _row(harness, a)
    copy = tree / "x" / "a.jpg"
    write(copy, a.read_bytes(), T0 + 1)
    harness.sweep()
    relinker.catch_up(harness.reader)
    a.unlink()
    harness.sweep()
    gone = catalog.get_file(harness.reader, old.id)
    assert gone is not None and gone.missing_since is not None
    relinker.window = gone.missing_since - _row(harness, copy).first_seen
    assert relinker.catch_up(harness.reader) == 1
    assert _row(harness, copy).id == old.id


def test_many_files_of_one_size_back_at_once_each_get_their_own_id(
    harness: Harness, tree: Path, relinker: Relinker
) -> None:
    """Missing files of one size coming back in one go: each takes the id its content had."""
    contents = [os.urandom(128) for _ in range(8)]
    ids = indexed_then_gone(
        harness, relinker, [tree / "o" / f"{n}.jpg" for n in range(8)], contents
    )
    back = [tree / "back" / f"r{n}.jpg" for n in reversed(range(8))]
    for p, data in zip(back, reversed(contents), strict=True):
        write(p, data, T0 + 1)
    harness.sweep()
    assert relinker.catch_up(harness.reader) == 8
    assert [_row(harness, p).id for p in back] == list(reversed(ids))


def test_deleting_many_identical_files_weighs_the_newest_few_arrivals_for_each(
    harness: Harness, tree: Path, relinker: Relinker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 identical files arrive, then 3 more copies of them; the 400 go, a part at a time.
    The first part is ambiguous (3 copies came after it, none with its name); each is weighed against
    the newest few arrivals, not against every one still there: the square of their number
    was minutes at 50k files."""
    index(harness, relinker)
    many = [tree / "many" / f"f{n:04d}.txt" for n in range(400)]
    for p in many:
        write(p, b"same\n")
    harness.sweep()
    later = [tree / "later" / f"x{n}.txt" for n in range(3)]
    for p in later:
        write(p, b"same\n")
    harness.sweep()
    hash_all(harness)
    relinker.catch_up(harness.reader)
    ids = {p: _row(harness, p).id for p in many + later}
    weighed = [0]
    copy_half = identity._copy_half

    def counted(*args: Any) -> bool:
        weighed[0] += 1
        return copy_half(*args)

    monkeypatch.setattr(identity, "_copy_half", counted)
    with logged() as events:
        for chunk in range(0, len(many), 100):  # as an rm -r is seen: a part at a time
            for p in many[chunk : chunk + 100]:
                p.unlink()
            harness.sweep()
            assert relinker.catch_up(harness.reader) == 0
    assert weighed[0] <= 10 * len(many), weighed
    # The first 100 went with the copies arrived since they were last seen; the sweep that
    # saw those go saw the others still there, beside the copies: two files each, not a move.
    ambiguous = [e for e in events if e["event"] == "file.ambiguous"]
    assert sorted(e["path"] for e in ambiguous) == [os.fsencode(p) for p in many[:100]]
    assert all(sorted(e["candidates"]) == sorted(ids[p] for p in later) for e in ambiguous)
    assert all(_row(harness, p).id == ids[p] for p in later)
    assert harness.counts() == (3, 400, 0)
