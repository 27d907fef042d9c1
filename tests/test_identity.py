"""The identity rules in-process: a real catalog, real files, real sweeps; each rule and its refusals."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden import catalog, identity
from filewarden.hasher import hash_file
from filewarden.identity import Relinker, Saves, looks_like_backup
from tests.conftest import Harness, logged

T0 = 1_600_000_000 * 10**9


def write(path: Path, content: bytes, mtime_ns: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def hash_all(h: Harness) -> None:
    """Store every present file's hash, as the background hasher would."""
    for row in h.files("present"):
        got = hash_file(h.root.abs(row.path), row.signature)
        assert got is not None
        h.writer.call(lambda c, r=row, g=got: catalog.set_hash(c, r.id, r.signature, g[0]))


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
    assert [(e["event"], e["rule"], e["candidates"]) for e in events] == [
        ("file.ambiguous", "inode", [known.id])
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
    harness.sweep()
    hash_all(harness)
    relinker.catch_up(harness.reader)
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
        # The original last seen 3 h ago, the copy arrived 2 h ago: after it, but
        # outside a 1 h window before the delete.
        relinker.window = 3600
        harness.writer.call(
            lambda c: (
                c.execute(
                    "UPDATE files SET first_seen = first_seen - 10800,"
                    " last_seen = last_seen - 10800 WHERE id = ?",
                    (old.id,),
                ),
                c.execute(
                    "UPDATE files SET first_seen = first_seen - 7200,"
                    " last_seen = last_seen - 7200 WHERE id = ?",
                    (interim.id,),
                ),
            )
        )
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
    harness.sweep()
    hash_all(harness)
    relinker.catch_up(harness.reader)
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
    harness.sweep()
    hash_all(harness)
    relinker.catch_up(harness.reader)
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
    harness.sweep()
    hash_all(harness)
    relinker.catch_up(harness.reader)
    ids = [harness.at(p).id for p in paths]  # type: ignore[union-attr]
    for n, p in enumerate(paths):
        p.unlink()
        harness.sweep()
        # Distinct times of going missing, in this order.
        harness.writer.call(
            lambda c, i=ids[n], t=1000.0 * (n + 1): c.execute(
                "UPDATE files SET missing_since = ? WHERE id = ?", (t, i)
            )
        )
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
