"""Sweeps over real trees: what the catalog must say afterwards."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import apsw
import pytest

from filewarden import catalog, log_events, reconcile
from filewarden.identity import Relinker
from filewarden.sweep import Sweep
from filewarden.walk import SweepAborted, WalkProcess, _stamp
from tests.conftest import Harness, in_child, logged, make_files, wait_for
from tests.test_identity import hash_all


@pytest.fixture(params=["here", "away"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, tree: Path) -> Iterator[Harness]:
    """Every sweep test twice: walked in the test's thread, and a full sweep's walk in
    the walker process from its first directory on (a quick sweep walks here)."""
    away = WalkProcess(hand_over_files=0) if request.param == "away" else None
    h = Harness(tmp_path / "state", tree, away=away)
    yield h
    h.close()


def test_first_index_counts(harness: Harness, tree: Path) -> None:
    """The first sweep catalogues every regular file once, present, with its stat signature."""
    paths = make_files(tree, 250, per_dir=25)
    tally = harness.sweep()
    assert tally.new == 250 and tally.files == 250 and tally.dirs_listed == 11
    assert harness.counts() == (250, 0, 0)
    rows = harness.files()
    assert len({r.id for r in rows}) == 250
    for p in paths[:5]:
        row = harness.at(p)
        st = p.stat()
        assert row is not None and row.state == "present"
        assert (row.size, row.mtime_ns, row.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)
    # Every new file is in the journal, with strictly increasing seq.
    entries = list(catalog.journal_since(harness.reader, 0, 1000))
    assert [e.kind for e in entries] == ["new"] * 250
    assert [e.seq for e in entries] == sorted({e.seq for e in entries})


def test_unchanged_resweep_changes_nothing(harness: Harness, tree: Path) -> None:
    """A second full sweep of an unchanged tree writes nothing and journals nothing."""
    make_files(tree, 100)
    harness.sweep()
    seq = catalog.last_seq(harness.reader)
    tally = harness.sweep()
    assert (tally.new, tally.changed, tally.missing, tally.restored) == (0, 0, 0, 0)
    assert catalog.last_seq(harness.reader) == seq


def test_deleted_file_becomes_missing_not_found(harness: Harness, tree: Path) -> None:
    """A deleted file stays in the catalog as missing, with missing_since and reason not_found."""
    paths = make_files(tree, 20)
    harness.sweep()
    before = harness.at(paths[3])
    assert before is not None
    paths[3].unlink()
    tally = harness.sweep()
    assert tally.missing == 1
    row = harness.at(paths[3])
    assert row is not None and row.id == before.id
    assert row.state == "missing" and row.missing_reason == "not_found"
    assert row.missing_since is not None and row.missing_since >= before.first_seen
    assert harness.counts() == (19, 1, 0)


def test_recreated_file_is_restored_with_same_id(harness: Harness, tree: Path) -> None:
    """A file that comes back at its path gets its old id back, journaled as restore."""
    paths = make_files(tree, 5)
    harness.sweep()
    old = harness.at(paths[0])
    assert old is not None
    paths[0].unlink()
    harness.sweep()
    paths[0].write_bytes(b"back again, other content\n")
    tally = harness.sweep()
    assert tally.restored == 1 and tally.new == 0
    row = harness.at(paths[0])
    assert row is not None and row.id == old.id and row.state == "present"
    assert row.missing_since is None and row.missing_reason is None
    assert row.size == len(b"back again, other content\n")
    assert [e.kind for e in catalog.history(harness.reader, old.id)] == [
        "new",
        "missing",
        "restore",
    ]
    assert harness.counts() == (5, 0, 0)


def test_edit_in_place_is_a_change(harness: Harness, tree: Path) -> None:
    """Writing into an existing file is a change of the same id; the hash is dropped."""
    paths = make_files(tree, 3)
    harness.sweep()
    old = harness.at(paths[1])
    assert old is not None
    with open(paths[1], "ab") as f:
        f.write(b"more bytes")
    tally = harness.sweep()
    assert tally.changed == 1 and tally.new == 0
    row = harness.at(paths[1])
    assert row is not None and row.id == old.id and row.size == old.size + 10
    assert catalog.history(harness.reader, old.id)[-1].detail == {"reason": "size"}


HOSTILE_NAMES = [
    b"caf\xe9 latin-1.jpg",  # not UTF-8
    b"\xff\xfe\xfd",
    b"line\nbreak.txt",
    b"tab\tand \\ backslash",
    b"x" * 255,  # the longest name ext4 and tmpfs allow
    "ünïcødé ✓.png".encode(),
    b" leading space",
    b"-dash",
]


def test_hostile_names_round_trip_byte_exact(harness: Harness, tree: Path) -> None:
    """Non-UTF-8 names, newlines and 255-byte names are stored and read back byte-exact."""
    base = os.fsencode(tree)
    for i, name in enumerate(HOSTILE_NAMES):
        with open(base + b"/" + name, "wb") as f:
            f.write(b"%d" % i)
    os.mkdir(base + b"/dir\xe9\n")
    with open(base + b"/dir\xe9\n/inner\xff", "wb") as f:
        f.write(b"inner")
    harness.sweep()
    stored = {r.path for r in harness.files()}
    assert stored == set(HOSTILE_NAMES) | {b"dir\xe9\n/inner\xff"}
    for row in harness.files():
        with open(base + b"/" + row.path, "rb") as f:
            assert len(f.read()) == row.size


def test_fifo_socket_symlink_are_skipped_without_hanging(
    harness: Harness, tree: Path, tmp_path: Path
) -> None:
    """FIFOs, sockets and symlinks are never catalogued and never opened; a FIFO cannot hang the sweep."""
    (tree / "real.txt").write_text("real")
    os.mkfifo(tree / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "sock"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not under the root")
    (tree / "link-to-dir").symlink_to(outside)
    (tree / "link-to-file").symlink_to(tree / "real.txt")
    (tree / "loop").symlink_to(tree / "loop")
    done = threading.Event()
    result = {}

    def run() -> None:
        result["tally"] = harness.sweep()
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert done.wait(20), "the sweep hung"
    sock.close()
    assert {r.path for r in harness.files()} == {b"real.txt"}


def test_excluded_globs_are_not_catalogued(tmp_path: Path, tree: Path) -> None:
    """Names matching a name glob anywhere, and paths matching a path glob, are left out."""
    h = Harness(tmp_path / "state", tree, exclude=("*.tmp", ".cache", "private/*"))
    try:
        for rel in [
            "a.jpg",
            "a.tmp",
            "sub/b.tmp",
            "sub/b.jpg",
            ".cache/x.jpg",
            "sub/.cache/y",
            "private/p.jpg",
            "private/deep/q.jpg",
            "public/private/r.jpg",
        ]:
            p = tree / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(rel)
        h.sweep()
        assert {r.path for r in h.files()} == {b"a.jpg", b"sub/b.jpg", b"public/private/r.jpg"}
    finally:
        h.close()


def test_newly_excluded_files_go_missing(tmp_path: Path, tree: Path) -> None:
    """Files a new exclude pattern hides are no longer present (they are missing, not deleted)."""
    (tree / "keep.jpg").write_text("k")
    (tree / "drop.tmp").write_text("d")
    h = Harness(tmp_path / "state", tree)
    h.sweep()
    h.close()
    h = Harness(tmp_path / "state", tree, exclude=("*.tmp",))
    try:
        h.sweep()
        row = h.at(tree / "drop.tmp")
        assert row is not None and row.state == "missing"
        assert h.at(tree / "keep.jpg").state == "present"  # type: ignore[union-attr]
    finally:
        h.close()


def next_tick(tree: Path) -> None:
    """Wait until the filesystem clock has moved past every timestamp in ``tree``.

    Directory stamps are compared for equality; a change within the same
    coarse clock tick as a listing would keep the stamp. (The daemon guards
    against that with its racy window; these tests turn the window off and
    wait for the tick instead.)
    """
    latest = max(p.lstat().st_ctime_ns for p in [tree, *tree.rglob("*")])
    probe = tree.parent / "tick-probe"
    wait_for(
        lambda: (probe.write_bytes(b"x"), probe.stat().st_ctime_ns > latest)[1],
        timeout=5,
        interval=0.001,
    )
    probe.unlink()


def test_quick_sweep_sees_creations_deletions_renames_not_edits(
    harness: Harness, tree: Path
) -> None:
    """A quick sweep lists only changed directories: creations, deletions, renames; not edits in place."""
    paths = make_files(tree, 100, per_dir=10)
    harness.sweep(racy_ns=0)
    ids = {p: harness.at(p).id for p in paths}  # type: ignore[union-attr]
    next_tick(tree)
    paths[0].unlink()  # deletion in d0000
    (paths[1].parent / "new.txt").write_text("new")  # creation in d0000
    paths[20].rename(paths[30].parent / "renamed.txt")  # rename from d0002 to d0003
    with open(paths[50], "ab") as f:  # edit in place in d0005
        f.write(b"edited")
    tally = harness.sweep(full=False, racy_ns=0)
    assert (tally.dirs_listed, tally.dirs_skipped) == (3, 8)
    assert (tally.new, tally.moved, tally.missing, tally.changed) == (1, 1, 1, 0)
    assert harness.at(paths[30].parent / "renamed.txt").id == ids[paths[20]]  # type: ignore[union-attr]
    assert harness.at(paths[0]).state == "missing"  # type: ignore[union-attr]
    assert harness.at(paths[50]).size == paths[50].stat().st_size - 6  # type: ignore[union-attr]
    # The full sweep sees the edit, on the same id.
    assert harness.sweep(racy_ns=0).changed == 1
    assert harness.at(paths[50]).id == ids[paths[50]]  # type: ignore[union-attr]


def test_racy_listing_is_listed_again(harness: Harness, tree: Path) -> None:
    """A directory listed right after it changed is stored dirty, so the next quick sweep lists it again."""
    make_files(tree, 10)
    harness.sweep()  # default 2 s window: everything here is younger
    tally = harness.sweep(full=False)
    assert tally.dirs_listed == 2 and tally.dirs_skipped == 0


def test_quick_sweep_finds_new_and_removed_directories(harness: Harness, tree: Path) -> None:
    """A directory created or removed between quick sweeps is listed or forgotten whole."""
    make_files(tree / "a", 10)
    make_files(tree / "b", 10)
    harness.sweep(racy_ns=0)
    next_tick(tree)
    make_files(tree / "c", 7)
    for p in sorted((tree / "b").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (tree / "b").rmdir()
    tally = harness.sweep(full=False, racy_ns=0)
    assert tally.new == 7 and tally.missing == 10
    assert harness.counts() == (17, 10, 0)


def test_rename_seen_by_sweep_keeps_id_by_inode(harness: Harness, tree: Path) -> None:
    """A rename seen only by a sweep is a move (same inode, size, mtime), not missing + new."""
    (tree / "a.txt").write_text("a")
    harness.sweep(racy_ns=0)
    old = harness.at(tree / "a.txt")
    next_tick(tree)
    (tree / "sub").mkdir()
    (tree / "a.txt").rename(tree / "sub" / "b.txt")
    tally = harness.sweep(full=False, racy_ns=0)
    assert (tally.new, tally.moved, tally.missing) == (0, 1, 0)
    row = harness.at(tree / "sub" / "b.txt")
    assert row is not None and old is not None and row.id == old.id and row.state == "present"
    assert [e.kind for e in catalog.history(harness.reader, old.id)] == ["new", "move"]


def test_hard_link_is_a_new_file(harness: Harness, tree: Path) -> None:
    """A second name for the same inode (a hard link) is a new file; the first keeps its id."""
    (tree / "a.txt").write_text("a")
    harness.sweep()
    os.link(tree / "a.txt", tree / "b.txt")
    tally = harness.sweep()
    assert (tally.new, tally.moved) == (1, 0)
    assert harness.at(tree / "a.txt").state == "present"  # type: ignore[union-attr]


def test_directory_replaced_by_symlink_loses_its_files(
    harness: Harness, tree: Path, tmp_path: Path
) -> None:
    """A directory swapped for a symlink to the same content is not followed: its files go missing."""
    make_files(tree / "photos", 5)
    harness.sweep()
    moved = tmp_path / "elsewhere"
    (tree / "photos").rename(moved)
    (tree / "photos").symlink_to(moved)
    tally = harness.sweep()
    assert tally.missing == 5
    assert harness.counts() == (0, 5, 0)


def test_sweep_aborts_without_missing_when_root_goes_away(harness: Harness, tree: Path) -> None:
    """If the root check fails before committing, the sweep aborts and marks nothing missing."""
    paths = make_files(tree, 30)
    harness.sweep()
    for p in paths[:10]:
        p.unlink()
    with pytest.raises(SweepAborted, match="disk gone"):
        harness.sweep(root_ok=lambda r: "disk gone")
    assert harness.counts() == (30, 0, 0)
    calls = []

    def vanishes_before_commit(root: object) -> str | None:
        calls.append(1)
        return None if len(calls) == 1 else "disk gone mid-sweep"

    with pytest.raises(SweepAborted, match=r"^disk gone mid-sweep$"):
        harness.sweep(root_ok=vanishes_before_commit)
    assert harness.counts() == (30, 0, 0)
    calls.clear()

    def vanishes_at_the_end(root: object) -> str | None:
        calls.append(1)
        return None if len(calls) < 3 else "disk gone at the end"  # start, batch, end

    with pytest.raises(SweepAborted, match=r"^disk gone at the end$"):
        harness.sweep(root_ok=vanishes_at_the_end)
    assert harness.counts() == (30, 0, 0)


def test_stop_flag_aborts_a_sweep(harness: Harness, tree: Path) -> None:
    """A sweep asked to stop ends quickly with SweepAborted and commits no missing files."""
    make_files(tree, 50)
    harness.sweep()
    for p in list(tree.rglob("*.txt"))[:5]:
        p.unlink()
    harness.stop.set()
    with pytest.raises(SweepAborted, match=r"^daemon stopping$"):
        harness.sweep()
    assert harness.counts() == (50, 0, 0)
    harness.stop.clear()

    calls: list[int] = []

    def stop_after_the_walk(root: object) -> str | None:
        calls.append(1)
        if len(calls) == 2:  # the walk's batch: asked to stop before the end
            harness.stop.set()
        return None

    with logged() as events, pytest.raises(SweepAborted, match=r"^daemon stopping$"):
        harness.sweep(root_ok=stop_after_the_walk)
    assert _fields(events, "sweep.abort")[0]["reason"] == "daemon stopping"
    assert harness.counts() == (50, 0, 0)


def test_counters_equal_recount_after_mixed_changes(harness: Harness, tree: Path) -> None:
    """The per-root counters kept in code equal a full recount after many changes."""
    paths = make_files(tree, 200)
    harness.sweep()
    for p in paths[::3]:
        p.unlink()
    harness.sweep()
    for p in paths[::6]:
        p.write_text("back")
    make_files(tree / "more", 40)
    harness.sweep()
    assert harness.counts() == catalog.recount(harness.reader, harness.root.id)


def count_row_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the directories whose catalog rows a sweep reads back."""
    read: list[bytes] = []
    real = catalog.dir_rows

    def dir_rows(conn, root, dir):  # type: ignore[no-untyped-def]
        read.append(dir)
        return real(conn, root, dir)

    monkeypatch.setattr(catalog, "dir_rows", dir_rows)
    return read


def test_unchanged_directories_are_not_read_back(
    tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a first index, a full sweep compares digests and reads the rows of changed directories only.

    Walked in this process (the reads are counted by patching it)."""
    harness = Harness(tmp_path / "state", tree)
    try:
        paths = make_files(tree, 50)
        harness.sweep()
        read = count_row_reads(monkeypatch)
        assert harness.sweep().files == 50
        assert read == []
        with open(paths[12], "ab") as f:
            f.write(b"edited")
        paths[33].unlink()
        tally = harness.sweep()
        assert (tally.changed, tally.missing) == (1, 1)
        assert sorted(read) == [b"d0001", b"d0003"]
        # d0003 lost a file after its rows were compared: one more read stores its digest.
        read.clear()
        harness.sweep()
        assert read == [b"d0003"]
        read.clear()
        assert harness.sweep().changed == 0
        assert read == []
    finally:
        harness.close()


def test_a_diff_from_a_stale_read_stores_no_digest(
    harness: Harness, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file added to the catalog between the sweep's read and the writer's apply
    keeps the directory's digest unknown, so the next sweep still compares rows."""
    make_files(tree, 5)
    sig = (1, 2, 3, 4, 5)
    real_apply = reconcile.apply_diff

    def apply_after_a_live_change(conn, root, diff, now, **kw):  # type: ignore[no-untyped-def]
        if diff.dir == b"d0000":
            catalog.insert_files(conn, root.id, b"d0000", [(b"live.txt", sig)], now)
        return real_apply(conn, root, diff, now, **kw)

    monkeypatch.setattr(reconcile, "apply_diff", apply_after_a_live_change)
    harness.sweep()
    monkeypatch.setattr(reconcile, "apply_diff", real_apply)
    assert catalog.dir_memory(harness.reader, harness.root.id, b"d0000")[1] is None
    # live.txt is not on disk: the next sweep must see that, not trust a digest.
    assert harness.sweep().missing == 1
    assert harness.at(tree / "d0000" / "live.txt").state == "missing"  # type: ignore[union-attr]


def test_a_listing_applied_after_its_directory_moved_records_nothing_there(
    harness: Harness, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory renamed after the sweep listed it, its live move applied first, gets no files
    back at its old paths; the next sweep finds everything at the new place, once."""
    old, new = tree / "a" / "old", tree / "b" / "moved"
    kept = make_files(old, 2, per_dir=2)
    new.parent.mkdir()
    harness.sweep()
    ids = {p.name: harness.at(p).id for p in kept}  # type: ignore[union-attr]
    (kept[0].parent / "arrived.txt").write_bytes(b"made while nobody watched\n")
    real_apply = reconcile.apply_diff

    def apply_after_a_live_dir_move(conn, root, diff, now, **kw):  # type: ignore[no-untyped-def]
        if diff.dir == b"a/old/d0000":
            # The rename happens after the listing; its event is applied before the listing.
            os.rename(old, new)
            reconcile.apply_move_dir(conn, root, b"a/old", root, b"b/moved", now)
        return real_apply(conn, root, diff, now, **kw)

    monkeypatch.setattr(reconcile, "apply_diff", apply_after_a_live_dir_move)
    harness.sweep()
    monkeypatch.setattr(reconcile, "apply_diff", real_apply)
    stale = [f for f in harness.files("present") if f.dir.startswith(b"a/old")]
    assert stale == []
    harness.sweep()
    present = sorted(f.path for f in harness.files("present"))
    moved = sorted(b"b/moved/d0000/" + os.fsencode(n) for n in ids)
    assert present == [b"b/moved/d0000/arrived.txt", *moved]
    assert {f.name.decode(): f.id for f in harness.files("present")} == {
        **ids,
        "arrived.txt": harness.at(new / "d0000" / "arrived.txt").id,  # type: ignore[union-attr]
    }
    assert harness.files("missing") == []


def test_a_file_matched_by_inode_then_moved_live_stays_where_the_live_move_put_it(
    harness: Harness, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep finds a file by inode at a new path; a live move takes it further before the
    sweep's batch is applied: the batch does not move it back to the path it has left."""
    for d in ("a", "b", "c"):
        (tree / d).mkdir()
    (tree / "a" / "x.txt").write_bytes(b"moved twice\n")
    harness.sweep()
    file_id = harness.at(tree / "a" / "x.txt").id  # type: ignore[union-attr]
    os.rename(tree / "a" / "x.txt", tree / "b" / "x.txt")  # while nobody watched
    real_apply = reconcile.apply_diff

    def apply_after_a_live_move(conn, root, diff, now, **kw):  # type: ignore[no-untyped-def]
        if diff.dir == b"b":
            assert [f[0] for f in diff.found] == [b"x.txt"]  # matched by inode
            os.rename(tree / "b" / "x.txt", tree / "c" / "x.txt")
            sig = catalog.signature(os.lstat(tree / "c" / "x.txt"))
            # The watcher's event, applied first: its source path is unknown
            # to the catalog, the inode is not.
            reconcile.apply_move(
                conn, root, b"b/x.txt", root, b"c/x.txt", sig, now, roots={root.id: root}
            )
        return real_apply(conn, root, diff, now, **kw)

    monkeypatch.setattr(reconcile, "apply_diff", apply_after_a_live_move)
    harness.sweep()
    monkeypatch.setattr(reconcile, "apply_diff", real_apply)
    assert [(f.id, f.path, f.state) for f in harness.files()] == [(file_id, b"c/x.txt", "present")]


def test_a_file_found_moved_by_inode_leaves_a_new_file_at_its_old_path_recorded(
    harness: Harness, tree: Path
) -> None:
    """Moved while nobody watched, and a copy put back where it was (a restore): the move keeps the id, the copy at the old path is a new file, in the same sweep."""
    old = tree / "sub" / "a.jpg"
    old.parent.mkdir()
    old.write_bytes(b"the photo")
    os.utime(old, ns=(1_600_000_000 * 10**9,) * 2)
    harness.sweep()
    file_id = harness.at(old).id  # type: ignore[union-attr]
    old.rename(tree / "a.jpg")
    shutil.copy2(tree / "a.jpg", old)  # same content and mtime, another inode
    tally = harness.sweep()
    assert harness.at(tree / "a.jpg").id == file_id  # type: ignore[union-attr]
    back = harness.at(old)
    assert back is not None and back.state == "present" and back.id != file_id
    assert back.inode == old.stat().st_ino
    assert (tally.moved, tally.new) == (1, 1)
    assert harness.counts() == (2, 0, 0)


def test_a_file_a_sweep_finds_gone_was_last_seen_at_the_sweep_before(
    harness: Harness, tree: Path
) -> None:
    """missing_since is this sweep's start; last_seen is the start of the sweep before, when it was there."""
    a = tree / "a.txt"
    a.write_text("a")
    harness.sweep()
    harness.sweep()  # the last sweep that saw it
    seen_at = catalog.get_root(harness.reader, harness.root.id).last_sweep  # type: ignore[union-attr]
    a.unlink()
    harness.sweep()
    row = harness.at(a)
    assert row is not None and row.state == "missing"
    assert row.last_seen == seen_at and row.missing_since is not None
    assert row.missing_since > seen_at


def test_a_vanished_directory_is_forgotten_once_its_files_are_missing(
    harness: Harness, tree: Path
) -> None:
    """The quick sweep's memory of a directory tree that is gone goes with it, below it too."""
    make_files(tree / "gone" / "deep", 3)
    make_files(tree / "kept", 2)
    harness.sweep()
    assert catalog.dir_stamp(harness.reader, harness.root.id, b"gone/deep/d0000") is not None
    shutil.rmtree(tree / "gone")
    tally = harness.sweep()
    assert tally.missing == 3
    for rel in (b"gone", b"gone/deep", b"gone/deep/d0000"):
        assert catalog.dir_stamp(harness.reader, harness.root.id, rel) is None, rel
    assert catalog.dir_stamp(harness.reader, harness.root.id, b"kept/d0000") is not None


def _fields(events: list, name: str) -> list[dict]:  # type: ignore[type-arg]
    return [dict(e) for e in events if e["event"] == name]


def test_a_sweep_logs_its_start_and_finish_with_the_tally_and_reports_progress(
    harness: Harness, tree: Path
) -> None:
    """sweep.start and sweep.finish carry root, kind, first_index, the tally and a duration; progress counts the files listed."""
    from filewarden.sweep import _Progress

    make_files(tree, 30, per_dir=10)
    first = _Progress()
    with logged() as events:
        harness.sweep(progress=first)
    assert (first.kind, first.total, first.done) == ("full", None, 30)
    (start,) = _fields(events, "sweep.start")
    assert start == {
        "event": "sweep.start",
        "log_level": "info",
        "root": harness.root.display,
        "kind": "full",
        "first_index": True,
    }
    (tree / "d0000" / "f00000.txt").unlink()
    (tree / "d0001" / "extra.txt").write_text("extra")
    again = _Progress()
    with logged() as events:
        tally = harness.sweep(full=False, progress=again)
    # A quick sweep expects the files the catalog holds present or offline.
    assert (again.kind, again.total) == ("quick", 30)
    assert again.done == 30  # the listed directories' files: 9 + 11 + 10 (all younger than 2 s)
    (start,) = _fields(events, "sweep.start")
    assert (start["kind"], start["first_index"]) == ("quick", False)
    (finish,) = _fields(events, "sweep.finish")
    duration = finish.pop("duration_s")
    assert isinstance(duration, float) and 0 <= duration < 60 and round(duration, 3) == duration
    assert finish == {
        "event": "sweep.finish",
        "log_level": "info",
        "root": harness.root.display,
        "kind": "quick",
        "first_index": False,
        **dataclasses.asdict(tally),
    }
    assert (tally.new, tally.missing, tally.files, tally.dirs_listed) == (1, 1, 30, 4)


def test_an_aborted_sweep_logs_why_and_counts_what_it_committed(
    harness: Harness, tree: Path
) -> None:
    """sweep.abort names root, kind and the reason, and its tally counts every batch already handed over."""
    make_files(tree, 12, per_dir=3)  # four directories: four batches of one listing each
    calls: list[int] = []

    def unplugged_at_third_batch(root: object) -> str | None:
        calls.append(1)
        return None if len(calls) < 4 else "disk unplugged"  # start, the root, d0000

    with logged() as events, pytest.raises(SweepAborted, match="disk unplugged"):
        harness.sweep(root_ok=unplugged_at_third_batch, batch_files=1)
    (abort,) = _fields(events, "sweep.abort")
    assert (abort["root"], abort["kind"], abort["reason"]) == (
        harness.root.display,
        "full",
        "disk unplugged",
    )
    # Batches handed over before the root went are committed, and counted.
    present = harness.counts()[0]
    assert present == 3 and abort["new"] == present
    assert set(log_events.TALLY) <= set(abort)


def test_a_sweep_whose_root_goes_after_the_last_commit_does_not_count_as_a_sweep(
    harness: Harness, tree: Path
) -> None:
    """A walk that lost its disk at the very end is not recorded as a sweep of the root."""
    make_files(tree, 4)
    harness.sweep()
    swept = catalog.get_root(harness.reader, harness.root.id)
    calls: list[int] = []

    def gone_at_the_end(root: object) -> str | None:
        calls.append(1)
        return "gone at the end" if len(calls) == 3 else None  # start, confirm, end

    (tree / "new.txt").write_text("new")
    with pytest.raises(SweepAborted, match="gone at the end"):
        harness.sweep(root_ok=gone_at_the_end)
    after = catalog.get_root(harness.reader, harness.root.id)
    assert after is not None and swept is not None
    assert (after.last_sweep, after.last_full_sweep) == (swept.last_sweep, swept.last_full_sweep)


def test_without_a_root_check_a_sweep_still_refuses_a_root_that_is_not_a_directory(
    harness: Harness, tree: Path
) -> None:
    """The default root check: a root path that is gone aborts the sweep, and nothing is missing."""
    make_files(tree, 3)
    harness.sweep()
    shutil.rmtree(tree)
    with pytest.raises(SweepAborted, match=r"^root is not a directory$"):
        Sweep(harness.root, harness.writer, full=True, stop=harness.stop).run()
    assert harness.counts() == (3, 0, 0)


def test_a_first_index_remembers_no_arrivals_and_logs_files_at_debug(
    harness: Harness, tree: Path
) -> None:
    """What a root held when first indexed is not an arrival (a copy half of a move); later files are."""
    make_files(tree, 5, per_dir=2)
    with logged() as events:
        harness.sweep(batch_files=3)  # batches handed over during the walk, and at its end
    assert {e["log_level"] for e in _fields(events, "file.new")} == {"debug"}
    assert _arrivals(harness) == 0
    (tree / "later.txt").write_text("later")
    with logged() as events:
        harness.sweep()
    assert [e["log_level"] for e in _fields(events, "file.new")] == ["info"]
    assert _arrivals(harness) == 1


def _arrivals(h: Harness) -> int:
    return int(next(iter(h.reader.execute("SELECT count(*) FROM arrivals")))[0])


# -- the racy window ----------------------------------------------------------------


def test_a_listing_is_racy_when_either_time_is_within_the_window(tmp_path: Path) -> None:
    """A directory changed (mtime or ctime) less than the window before its listing is stored dirty; at the window, clean."""
    d = tmp_path / "d"
    d.mkdir()
    os.utime(d, ns=(0, 1_000_000_000))  # mtime long ago; ctime is now
    st = d.stat()
    clean = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    window = 2_000
    assert _stamp(st, st.st_ctime_ns + window - 1, window) == catalog.DIRTY
    assert _stamp(st, st.st_ctime_ns + window, window) == clean
    # The mtime alone in the window (a stat result can say what a disk cannot set).
    now = st.st_ctime_ns + 5 * window
    later = os.stat_result(tuple(st[:10]), {"st_mtime_ns": now, "st_ctime_ns": st.st_ctime_ns})
    assert _stamp(later, now + window - 1, window) == catalog.DIRTY
    assert _stamp(later, now + window, window) == (now, st.st_ctime_ns, st.st_ino)


# -- listings: what is skipped does not stop the listing -------------------------------


def test_entries_that_are_not_files_are_skipped_and_the_listing_goes_on(
    harness: Harness, tree: Path
) -> None:
    """Sync cookies, symlinks and FIFOs among the files are skipped one by one; dotfiles are files."""
    names = []
    for i in range(20):
        if i == 7:
            (tree / ".filewarden-sync-123").write_text("cookie")
        if i == 9:
            (tree / f"link{i}").symlink_to(tree / "f0.txt")
        if i == 11:
            os.mkfifo(tree / f"fifo{i}")
        name = f".hidden{i}" if i % 5 == 0 else f"f{i}.txt"
        (tree / name).write_text(str(i))
        names.append(os.fsencode(name))
    harness.sweep()
    assert sorted(f.path for f in harness.files()) == sorted(names)


# -- what the sweep finds at the end: gone for real, or not ------------------------


def test_a_file_replaced_by_a_directory_or_a_symlink_is_missing(
    harness: Harness, tree: Path
) -> None:
    """A name that is now a directory or a symlink is not the file that was there: it is missing."""
    for name in ("a.txt", "b.txt", "c.txt"):
        (tree / name).write_text(name)
    harness.sweep()
    (tree / "a.txt").unlink()
    (tree / "a.txt").mkdir()
    (tree / "b.txt").unlink()
    (tree / "b.txt").symlink_to(tree / "c.txt")
    assert harness.sweep().missing == 2
    assert {f.path: f.state for f in harness.files()} == {
        b"a.txt": "missing",
        b"b.txt": "missing",
        b"c.txt": "present",
    }


def test_what_changes_between_the_listing_and_the_end_is_decided_at_the_end(
    harness: Harness, tree: Path
) -> None:
    """Gone files are checked again at the end: one back on disk stays present (top level too),
    one a live event already marked or purged is skipped, and the rest are missing."""
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (tree / name).write_text(name)
    (tree / "sub").mkdir()
    (tree / "sub" / "e.txt").write_text("e")
    harness.sweep()
    ids = {f.path: f.id for f in harness.files()}
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "sub/e.txt"):
        (tree / name).unlink()
    root = harness.root

    def meanwhile(conn: apsw.Connection) -> None:
        # A live event saw a.txt and b.txt go; an admin purged a.txt already.
        reconcile.confirm_missing(
            conn, root, [(ids[b"a.txt"], b"a.txt"), (ids[b"b.txt"], b"b.txt")], "deleted", 1.0, None
        )
        catalog.purge(conn, ids[b"a.txt"], 2.0, {"by": "retention"})

    calls: list[int] = []

    def root_ok(r: object) -> str | None:
        calls.append(1)
        if len(calls) == 2:  # after the walk, before the end
            harness.writer.call(meanwhile)
            (tree / "d.txt").write_text("d again")
            (tree / "sub" / "e.txt").write_text("e again")
        return None

    tally = harness.sweep(root_ok=root_ok)
    assert tally.missing == 1
    assert harness.at(tree / "a.txt") is None
    assert {f.path: f.state for f in harness.files()} == {
        b"b.txt": "missing",
        b"c.txt": "missing",
        b"d.txt": "present",
        b"sub/e.txt": "present",
    }
    assert harness.at(tree / "b.txt").missing_reason == "deleted"  # type: ignore[union-attr]


# -- finding moved files in a listing ----------------------------------------------------


def test_moved_new_and_returned_files_in_one_listing_each_get_their_due(
    harness: Harness, tree: Path
) -> None:
    """One directory with a file moved in by inode, a new file and a missing file back at its path:
    the moved one keeps its id, the returned one gets its id back, the new one gets a new id."""
    (tree / "from").mkdir()
    (tree / "to").mkdir()
    (tree / "from" / "moved.txt").write_text("moved")
    (tree / "to" / "back.txt").write_text("back")
    harness.sweep()
    moved_id = harness.at(tree / "from" / "moved.txt").id  # type: ignore[union-attr]
    back_id = harness.at(tree / "to" / "back.txt").id  # type: ignore[union-attr]
    hash_all(harness)  # an inode match is then confirmed by reading the file at its new path
    (tree / "to" / "back.txt").unlink()
    harness.sweep()
    (tree / "to" / "back.txt").write_text("back")  # restored at its path
    (tree / "from" / "moved.txt").rename(tree / "to" / "moved.txt")
    (tree / "to" / "brand-new.txt").write_text("new")
    tally = harness.sweep()
    assert (tally.moved, tally.restored, tally.new) == (1, 1, 1)
    to = {f.path: f for f in harness.files() if f.path.startswith(b"to/")}
    assert to[b"to/moved.txt"].id == moved_id and to[b"to/back.txt"].id == back_id
    assert to[b"to/brand-new.txt"].id not in (moved_id, back_id)
    assert all(f.state == "present" for f in to.values())


def test_a_file_moved_into_a_new_root_while_nobody_watched_keeps_its_id(
    harness: Harness, tree: Path, tmp_path: Path
) -> None:
    """A root's first index looks for known files of the other roots by inode: a move between roots keeps the id."""
    make_files(tree, 3)
    harness.sweep()
    first = tree / "d0000" / "f00001.txt"
    file_id = harness.at(first).id  # type: ignore[union-attr]
    other = tmp_path / "other"
    other.mkdir()
    second = harness.add_root(other)
    first.rename(other / "came.txt")
    roots = {harness.root.id: harness.root, second.id: second}
    tally = harness.sweep(root=second, roots=roots)
    assert tally.moved == 1 and tally.new == 0
    row = catalog.file_at(harness.reader, second.id, b"came.txt")
    assert row is not None and row.id == file_id and row.state == "present"


def test_many_batches_count_every_file(harness: Harness, tree: Path) -> None:
    """Small batches: every file, move and change is counted once, whatever batch it was in."""
    paths = make_files(tree, 40, per_dir=4)
    assert harness.sweep(batch_files=3).new == 40
    for p in paths[::4]:
        p.write_text("changed, longer")
    for p in paths[1::8]:
        p.rename(p.with_name("renamed-" + p.name))
    make_files(tree / "more", 9, per_dir=3)
    for p in paths[2::8]:
        p.unlink()
    tally = harness.sweep(batch_files=3)
    assert (tally.new, tally.changed, tally.moved, tally.missing) == (9, 10, 5, 5)
    for p in paths[2::8]:
        p.write_text("back")
    assert harness.sweep(batch_files=3).restored == 5


def test_a_sweep_with_the_relinker_skips_the_first_index_and_counts_relinks(
    harness: Harness, tree: Path
) -> None:
    """A first index moves the content rule's cursor past itself; a later sweep's relinks are in its tally."""
    r = Relinker(harness.writer, lambda: {harness.root.id: harness.root})
    (tree / "photo.jpg").write_bytes(b"P" * 500)
    harness.sweep(relinker=r)
    assert r._seq == catalog.last_seq(harness.reader)
    hash_all(harness)
    row = harness.at(tree / "photo.jpg")
    assert row is not None and row.hash is not None
    old_id = row.id
    (tree / "photo.jpg").unlink()
    harness.sweep(relinker=r)
    (tree / "elsewhere").mkdir()
    (tree / "elsewhere" / "photo copy.jpg").write_bytes(b"P" * 500)
    tally = harness.sweep(relinker=r)
    assert tally.relinked == 1
    back = harness.at(tree / "elsewhere" / "photo copy.jpg")
    assert back is not None and back.id == old_id


# -- permission denied, for real --------------------------------------------------------


def _without_dac_override() -> None:
    """Drop the capabilities that let root read anything: permissions apply to this process,
    and to the processes it starts (the bounding set: a walker process)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl")
    data[0].effective &= keep
    data[0].permitted &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop root's capabilities")
@pytest.mark.parametrize("away", [False, True], ids=["here", "away"])
def test_what_cannot_be_read_is_logged_and_kept_as_it_was(
    tmp_path: Path, tree: Path, away: bool
) -> None:
    """A directory that cannot be opened, and files that cannot be stat'ed (a directory readable
    but not searchable): each is logged with its path, counted, and nothing the catalog knew of
    them goes missing, in full and in quick sweeps. Walked in the walker process, the daemon
    logs what the process met."""
    make_files(tree / "open", 3)
    make_files(tree / "locked", 2)
    (tree / "zz-listonly" / "inner").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "inner/c.txt"):
        (tree / "zz-listonly" / name).write_text(name)
    h = Harness(tmp_path / "state", tree)
    try:
        h.sweep()
        assert h.counts() == (8, 0, 0)
    finally:
        h.close()
    (tree / "locked").chmod(0o000)
    (tree / "zz-listonly").chmod(0o644)

    def sweep(full: bool) -> tuple[dict, tuple, list]:  # type: ignore[type-arg]
        child = Harness(
            tmp_path / "state", tree, away=WalkProcess(hand_over_files=0) if away else None
        )
        try:
            with logged() as events:
                tally = child.sweep(full=full, racy_ns=0)
            lines = [dict(e) for e in events if e["event"].startswith("sweep.")]
            return dataclasses.asdict(tally), child.counts(), lines
        finally:
            child.close()

    try:
        for full in (True, False):
            tally, counts, lines = in_child(partial(sweep, full), _without_dac_override)
            assert counts == (8, 0, 0), (full, lines)
            assert (tally["unreadable"], tally["errors"], tally["missing"]) == (2, 2, 0), full
            base = os.fsdecode(os.fsencode(tree))
            unreadable = sorted(
                (e["root"], os.fsdecode(e["path"]), e["error"])
                for e in lines
                if e["event"] == "sweep.unreadable"
            )
            assert unreadable == [
                (str(tree), f"{base}/locked", "Permission denied"),
                (str(tree), f"{base}/zz-listonly/inner", "Permission denied"),
            ]
            errors = sorted(
                (e["log_level"], e["root"], os.fsdecode(e["path"]), e["error"])
                for e in lines
                if e["event"] == "sweep.error"
            )
            assert errors == [
                ("warning", str(tree), f"{base}/zz-listonly/{name}", "Permission denied")
                for name in ("a.txt", "b.txt")
            ]
    finally:
        (tree / "locked").chmod(0o755)
        (tree / "zz-listonly").chmod(0o755)


def test_a_known_file_moved_onto_a_missing_files_path_keeps_its_own_id(
    harness: Harness, tree: Path
) -> None:
    """Rule 1's exception in a sweep: a file renamed, while nobody watched, onto the path of a
    missing file is that file moved (inode and content say so), not the missing file back."""
    (tree / "sub").mkdir()
    (tree / "sub" / "keep.txt").write_text("keep")
    (tree / "sub" / "old.txt").write_text("old")
    (tree / "sub" / "other.txt").write_text("other")
    harness.sweep()
    hash_all(harness)
    ids = {f.path: f.id for f in harness.files()}
    (tree / "sub" / "old.txt").unlink()
    harness.sweep()
    (tree / "sub" / "other.txt").write_text("other, longer now")  # an edit in the same listing
    (tree / "sub" / "keep.txt").rename(tree / "sub" / "old.txt")
    tally = harness.sweep()
    assert (tally.moved, tally.restored, tally.changed) == (1, 0, 1)
    rows = {f.path: f for f in harness.files("present")}
    assert rows.keys() == {b"sub/old.txt", b"sub/other.txt"}
    assert rows[b"sub/old.txt"].id == ids[b"sub/keep.txt"]
    assert rows[b"sub/other.txt"].id == ids[b"sub/other.txt"]
    gone = catalog.get_file(harness.reader, ids[b"sub/old.txt"])
    assert gone is not None and gone.state == "missing"


def test_a_quick_sweep_skips_unchanged_directories_below_a_changed_one(
    harness: Harness, tree: Path
) -> None:
    """A directory listed again for its own change does not make its unchanged subdirectories listed."""
    make_files(tree / "top" / "a", 2)
    make_files(tree / "top" / "b", 2)
    harness.sweep(racy_ns=0)
    next_tick(tree)
    (tree / "top" / "new.txt").write_text("new")
    tally = harness.sweep(full=False, racy_ns=0)
    # Listed: top. Skipped: the root, top/a, top/b and their d0000.
    assert (tally.dirs_listed, tally.dirs_skipped, tally.new) == (1, 5, 1)


def test_gone_files_beyond_two_confirmation_chunks_are_all_checked(
    harness: Harness, tree: Path
) -> None:
    """Every gone file is checked at the end, however many chunks they take."""
    from filewarden.sweep import CONFIRM_CHUNK

    count = 2 * CONFIRM_CHUNK + 3
    make_files(tree / "many", count, per_dir=500)
    harness.sweep()
    shutil.rmtree(tree / "many")
    assert harness.sweep().missing == count
    assert harness.counts() == (0, count, 0)


def _fill(path: Path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_catalog_write_that_fails_ends_the_sweep_and_an_abort_keeps_its_reason(
    tmp_path: Path, tree: Path
) -> None:
    """A batch the catalog cannot write (a full disk) ends the sweep as such; a root lost while a
    failed batch is pending is still reported as the root lost; once there is room, all is caught up."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    try:
        h = Harness(state, tree)
        try:
            make_files(tree, 10)
            h.sweep()
            _fill(state / "filler")
            make_files(tree / "more", 3000, per_dir=100)
            with pytest.raises(SweepAborted, match=r"^catalog write failed: "):
                h.sweep(batch_files=100)
            calls: list[int] = []

            def unplugged_at_the_second_batch(root: object) -> str | None:
                calls.append(1)
                return "unplugged" if len(calls) == 3 else None

            with logged() as events, pytest.raises(SweepAborted, match=r"^unplugged$"):
                h.sweep(batch_files=100, root_ok=unplugged_at_the_second_batch)
            assert _fields(events, "sweep.abort")[0]["reason"] == "unplugged"
            (state / "filler").unlink()
            assert h.sweep().new == 3000
            assert h.counts() == (3010, 0, 0)
        finally:
            h.close()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_a_file_moved_away_and_back_while_nobody_watched_is_restored_not_moved(
    harness: Harness, tree: Path, tmp_path: Path
) -> None:
    """A missing file back at its own path with its own inode is the same file returning: restored, same id."""
    (tree / "sub").mkdir()
    f = tree / "sub" / "song.flac"
    f.write_bytes(b"S" * 300)
    harness.sweep()
    hash_all(harness)
    file_id = harness.at(f).id  # type: ignore[union-attr]
    away = tmp_path / "away.flac"
    f.rename(away)
    assert harness.sweep().missing == 1
    away.rename(f)
    tally = harness.sweep()
    assert (tally.restored, tally.moved, tally.new) == (1, 0, 0)
    row = harness.at(f)
    assert row is not None and row.id == file_id and row.state == "present"
