"""The reconciler in-process: each decision from a listing or a live hint, on a real catalog and real files, and what it records."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from filewarden import catalog, reconcile
from filewarden.catalog import DIRTY, FileRow, Signature
from filewarden.hasher import hash_file
from filewarden.listing import Listing, Tally, list_dir
from filewarden.reconcile import DirDiff
from filewarden.roots import Root
from tests.conftest import Harness, logged, wait_for

T0 = 1_600_000_000 * 10**9
STAMP = (1, 2, 3)  # a directory stamp no real listing has: "listed, and not stale"
R = TypeVar("R")

Events = list[MutableMapping[str, Any]]


# --- helpers ---------------------------------------------------------------------------


def write(path: Path, content: bytes, mtime_ns: int = T0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def sig_of(path: Path) -> Signature:
    return catalog.signature(os.lstat(path))


def rel(h: Harness, path: Path) -> bytes:
    return os.fsencode(os.path.relpath(path, h.root_dir))


def run(h: Harness, job: Callable[[Any], R]) -> R:
    """Run ``job`` in the writer, in its own transaction, as the daemon does."""
    return h.writer.call(job)


def row_at(h: Harness, path: Path) -> FileRow:
    row = h.at(path)
    assert row is not None, path
    return row


def get(h: Harness, file_id: int) -> FileRow:
    row = catalog.get_file(h.reader, file_id)
    assert row is not None, file_id
    return row


def history(h: Harness, file_id: int) -> list[tuple[str, bytes | None, bytes | None, Any]]:
    """``(kind, path, old_path, detail)`` of every journal entry of a file."""
    return [(e.kind, e.path, e.old_path, e.detail) for e in catalog.history(h.reader, file_id)]


def hash_it(h: Harness, path: Path) -> bytes:
    """Store the file's hash, as the background hasher would."""
    row = row_at(h, path)
    got = hash_file(os.fsencode(path), row.signature)
    assert got is not None
    run(h, lambda c: catalog.set_hash(c, row.id, row.signature, got[0]))
    return got[0]


def stamp(h: Harness, dir: bytes, root: Root | None = None) -> catalog.DirStamp | None:
    return catalog.dir_stamp(h.reader, (root or h.root).id, dir)


def remember(h: Harness, *dirs: bytes, root: Root | None = None) -> None:
    """Give directories a stored listing stamp, so that making one stale shows."""
    rid = (root or h.root).id

    def put(conn: Any) -> None:
        for d in dirs:
            catalog.put_dir(conn, rid, d, STAMP)

    run(h, put)


def ev(name: str, level: str = "info", **fields: Any) -> dict[str, Any]:
    return {"event": name, "log_level": level, **fields}


def only(events: Events, *names: str) -> list[dict[str, Any]]:
    return [dict(e) for e in events if e["event"] in names]


def logged_at_info() -> AbstractContextManager[Events]:
    """The log events emitted meanwhile by a daemon configured at level info (the default)."""
    return logged(logging.INFO)


def new_ctime(path: Path) -> None:
    """Change the file's ctime and nothing else (chmod until the clock has moved on)."""
    before = os.lstat(path).st_ctime_ns
    mode = os.lstat(path).st_mode & 0o777

    def moved() -> bool:
        os.chmod(path, mode ^ 0o001)
        os.chmod(path, mode)
        return os.lstat(path).st_ctime_ns != before

    wait_for(moved)


def listing(h: Harness, dir: bytes = b"", root: Root | None = None) -> Listing:
    """One directory as a sweep lists it (its stamp taken as stable)."""
    root = root or h.root
    st, files, subdirs = list_dir(root, dir, Tally())
    return Listing(
        dir,
        (st.st_mtime_ns, st.st_ctime_ns, st.st_ino),
        files,
        frozenset(subdirs),
        (st.st_dev, st.st_ino),
    )


def compare(h: Harness, lst: Listing, *, first_index: bool = False) -> DirDiff:
    """The listing's diff against the catalog as the reader sees it now (what a sweep does)."""
    digest: bytes | None = catalog.files_digest(sorted(lst.files.items()))
    if first_index:
        return reconcile.diff_listing(lst, [], [], None, digest)
    rid = h.root.id
    stored, stored_digest = catalog.dir_memory(h.reader, rid, lst.dir)
    rows = None if stored_digest == digest else catalog.dir_rows(h.reader, rid, lst.dir)
    if rows is None:
        digest = None
    known = list(catalog.child_dirs(h.reader, rid, lst.dir))
    return reconcile.diff_listing(lst, rows, known, stored, digest)


def apply(
    h: Harness,
    diff: DirDiff,
    *,
    first_index: bool = False,
    roots: dict[int, Root] | None = None,
    root: Root | None = None,
) -> tuple[Tally, list[int]]:
    r = root or h.root
    return run(
        h,
        lambda c: reconcile.apply_diff(
            c, r, diff, time.time(), first_index=first_index, roots=roots
        ),
    )


def digest_of(h: Harness, dir: bytes) -> bytes | None:
    return catalog.dir_memory(h.reader, h.root.id, dir)[1]


def tally(**counts: int) -> Tally:
    return Tally(**counts)


# --- diff_listing: pure -------------------------------------------------------------------

SIG_A: Signature = (10, 100, 100, 1, 11)
SIG_B: Signature = (20, 200, 200, 1, 12)
SIG_C: Signature = (30, 300, 300, 1, 13)
IDENT = (1, 99)


def row(name: bytes, sig: Signature, state: str, file_id: int) -> catalog.DirRow:
    return (name, *sig, state, file_id)


def test_an_unchanged_directory_differs_in_nothing() -> None:
    """Same stamp, no rows to compare (digest equal), subdirectories all there: an empty, false diff."""
    lst = Listing(b"d", (5, 6, 7), {b"a": SIG_A}, frozenset({b"keep"}), IDENT)
    diff = reconcile.diff_listing(lst, None, [b"d/keep"], (5, 6, 7))
    assert diff == DirDiff(b"d", None, [], [], [], [], ident=IDENT)
    assert not diff


def test_a_changed_stamp_and_a_vanished_subdirectory_are_reported_without_rows() -> None:
    """Known subdirectories not listed any more vanished (by name, at any depth); a new stamp is kept."""
    lst = Listing(b"d/e", (5, 6, 7), {b"a": SIG_A}, frozenset({b"keep", b"d"}), IDENT)
    diff = reconcile.diff_listing(lst, None, [b"d/e/keep", b"d/e/gone"], (5, 6, 8), b"digest")
    assert diff == DirDiff(b"d/e", (5, 6, 7), [], [], [], [b"d/e/gone"], ident=IDENT)
    assert diff


def test_each_kind_of_difference_is_found_once() -> None:
    """New names (sorted), changed ones, present ones gone, missing ones back; unchanged and already-missing ones are not differences."""
    lst = Listing(
        b"",
        (5, 6, 7),
        {b"same": SIG_A, b"edited": SIG_C, b"zeta": SIG_B, b"alpha": SIG_A, b"back": SIG_B},
        frozenset(),
        IDENT,
    )
    rows = [
        row(b"same", SIG_A, "present", 1),
        row(b"edited", SIG_B, "present", 2),
        row(b"gone", SIG_A, "present", 3),
        row(b"long gone", SIG_A, "missing", 4),
        row(b"back", SIG_B, "missing", 5),
    ]
    diff = reconcile.diff_listing(lst, rows, [], (5, 6, 7), b"digest")
    assert diff == DirDiff(
        b"",
        None,
        new=[(b"alpha", SIG_A), (b"zeta", SIG_B)],
        touched=[(b"edited", SIG_C)],
        gone=[3],
        vanished=[],
        returned=[(b"back", SIG_B)],
        digest=b"digest",
        listed=5,
        ident=IDENT,
    )


@pytest.mark.parametrize("field", range(5))
def test_any_signature_field_that_differs_is_a_change(field: int) -> None:
    """Size, mtime, ctime, device or inode: any one differing makes the name touched."""
    listed = list(SIG_A)
    listed[field] += 1
    lst = Listing(b"", (5, 6, 7), {b"a": tuple(listed)}, frozenset())  # type: ignore[dict-item]
    diff = reconcile.diff_listing(lst, [row(b"a", SIG_A, "present", 1)], [], None, b"x")
    assert diff.touched == [(b"a", tuple(listed))]
    assert diff.new == diff.returned == [] and diff.gone == []


def test_the_present_file_speaks_for_its_name() -> None:
    """Where a name has a present row and newer missing ones, the present one is compared."""
    lst = Listing(b"", (5, 6, 7), {b"here": SIG_A}, frozenset())
    rows = [
        row(b"here", SIG_A, "present", 1),
        row(b"here", SIG_B, "missing", 8),
        row(b"left", SIG_A, "present", 2),
        row(b"left", SIG_A, "missing", 9),
        row(b"left", SIG_A, "offline", 10),
    ]
    diff = reconcile.diff_listing(lst, rows, [], None, b"x")
    assert (diff.new, diff.touched, diff.gone, diff.returned) == ([], [], [2], [])
    # In the other order too.
    diff = reconcile.diff_listing(lst, rows[::-1], [], None, b"x")
    assert (diff.new, diff.touched, diff.gone, diff.returned) == ([], [], [2], [])


def test_a_present_file_outranks_an_offline_one() -> None:
    """An offline row never speaks for a name that has a present row, whatever their ids."""
    lst = Listing(b"", (5, 6, 7), {b"a": SIG_A}, frozenset())
    rows = [row(b"a", SIG_A, "present", 1), row(b"a", SIG_B, "offline", 5)]
    diff = reconcile.diff_listing(lst, rows, [], None, b"x")
    assert (diff.touched, diff.returned) == ([], [])


def test_a_missing_name_on_disk_again_is_returned_once() -> None:
    """Several missing files last at one name: the name is returned once, not once per file."""
    lst = Listing(b"", (5, 6, 7), {b"a": SIG_C}, frozenset())
    rows = [row(b"a", SIG_A, "missing", 3), row(b"a", SIG_B, "missing", 7)]
    diff = reconcile.diff_listing(lst, rows, [], None, b"x")
    assert (diff.new, diff.touched, diff.returned) == ([], [], [(b"a", SIG_C)])


def test_a_diff_is_true_when_anything_is_to_record() -> None:
    """Each field alone makes a diff worth recording; a digest to store too, even an empty one."""
    base = DirDiff(b"", None, [], [], [], [])
    assert not base
    one: list[DirDiff] = [
        DirDiff(b"", (1, 2, 3), [], [], [], []),
        DirDiff(b"", None, [(b"a", SIG_A)], [], [], []),
        DirDiff(b"", None, [], [(b"a", SIG_A)], [], []),
        DirDiff(b"", None, [], [], [1], []),
        DirDiff(b"", None, [], [], [], [b"d"]),
        DirDiff(b"", None, [], [], [], [], found=[(b"a", SIG_A, _file_row(), 1)]),
        DirDiff(b"", None, [], [], [], [], returned=[(b"a", SIG_A)]),
        DirDiff(b"", None, [], [], [], [], digest=b""),
    ]
    assert all(one)


def _file_row() -> FileRow:
    return FileRow(1, 1, b"", b"a", *SIG_A, None, "present", 0.0, 0.0, None, None)


def test_tallies_add_up_field_by_field() -> None:
    """A sweep's tally is the sum of its batches' tallies, every field."""
    total = Tally(files=1, new=2, moved=3, changed=4, restored=5, relinked=6, missing=7)
    total.add(Tally(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))
    assert total == Tally(2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 1)


# --- observe_file: change and restore ------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("append", "size"),
        ("utime", "mtime"),
        ("chmod", "ctime"),
        ("replace", "replaced"),
    ],
)
def test_a_change_is_recorded_with_its_reason(
    harness: Harness, tree: Path, edit: str, reason: str
) -> None:
    """A present file whose signature differs is a change of the same id, with the first reason that applies (replaced, size, mtime, ctime); its hash goes."""
    f = write(tree / "d" / "f.txt", b"one")
    harness.sweep()
    hash_it(harness, f)
    before = row_at(harness, f)
    if edit == "append":
        write(f, b"one and more")
    elif edit == "utime":
        os.utime(f, ns=(T0 + 10**9, T0 + 10**9))
    elif edit == "chmod":
        new_ctime(f)
    else:
        write(tree / "d" / "tmp", b"two")  # same size, same mtime, another inode
        os.replace(tree / "d" / "tmp", f)
    sig = sig_of(f)
    counts = Tally()
    now = time.time()
    with logged() as events:
        run(harness, lambda c: reconcile.observe_file(c, harness.root, before, sig, now, counts))
    after = row_at(harness, f)
    assert after.id == before.id and after.signature == sig and after.hash is None
    assert after.last_seen == now
    assert history(harness, before.id)[-1] == ("change", b"d/f.txt", None, {"reason": reason})
    assert catalog.history(harness.reader, before.id)[-1].root == harness.root.id
    assert only(events, "file.change", "file.restore") == [
        ev(
            "file.change",
            id=before.id,
            root=harness.root.display,
            path=os.fsencode(f),
            reason=reason,
        )
    ]
    assert counts == Tally(changed=1)


def test_an_unchanged_file_records_nothing(harness: Harness, tree: Path) -> None:
    """Seen again with the signature the catalog has: no journal entry, no log line, no count."""
    f = write(tree / "f.txt", b"one")
    harness.sweep()
    known = row_at(harness, f)
    seq = catalog.last_seq(harness.reader)
    counts = Tally()
    with logged() as events:
        run(
            harness,
            lambda c: reconcile.observe_file(
                c, harness.root, known, sig_of(f), time.time(), counts
            ),
        )
    assert catalog.last_seq(harness.reader) == seq
    assert events == [] and counts == Tally()
    assert row_at(harness, f) == known


@pytest.mark.parametrize("was", ["missing", "offline"])
def test_a_file_back_at_its_path_is_restored_keeping_its_hash(
    harness: Harness, tree: Path, was: str
) -> None:
    """A missing or offline file seen at its path unchanged is present again with its id and hash."""
    f = write(tree / "f.txt", b"one")
    harness.sweep()
    digest = hash_it(harness, f)
    known = row_at(harness, f)
    if was == "missing":
        run(harness, lambda c: catalog.mark_missing(c, [known.id], "not_found", time.time(), None))
    else:
        run(harness, lambda c: catalog.set_root_offline(c, harness.root.id, "gone", time.time()))
    away = get(harness, known.id)
    assert away.state == was
    counts = Tally()
    now = time.time()
    with logged() as events:
        run(
            harness, lambda c: reconcile.observe_file(c, harness.root, away, sig_of(f), now, counts)
        )
    back = get(harness, known.id)
    assert (back.state, back.hash, back.missing_since, back.missing_reason) == (
        "present",
        digest,
        None,
        None,
    )
    assert back.last_seen == now
    assert history(harness, known.id)[-1] == ("restore", b"f.txt", None, {"was": was})
    assert catalog.history(harness.reader, known.id)[-1].root == harness.root.id
    assert only(events, "file.restore", "file.change") == [
        ev("file.restore", id=known.id, root=harness.root.display, path=os.fsencode(f), was=was)
    ]
    assert counts == Tally(restored=1)
    assert harness.counts() == (1, 0, 0)


def test_a_file_back_with_other_content_is_restored_and_resigned(
    harness: Harness, tree: Path
) -> None:
    """Back at its path with another signature: the same id (same path first), the new signature, no hash; journaled as a restore only."""
    f = write(tree / "f.txt", b"one")
    harness.sweep()
    hash_it(harness, f)
    known = row_at(harness, f)
    run(harness, lambda c: catalog.mark_missing(c, [known.id], "deleted", time.time(), None))
    f.unlink()
    write(f, b"something else entirely")
    counts = Tally()
    away = get(harness, known.id)
    run(
        harness,
        lambda c: reconcile.observe_file(c, harness.root, away, sig_of(f), time.time(), counts),
    )
    back = get(harness, known.id)
    assert (back.state, back.signature, back.hash) == ("present", sig_of(f), None)
    assert [k for k, *_ in history(harness, known.id)] == ["new", "missing", "restore"]
    assert counts == Tally(restored=1)


# --- apply_diff: one directory's differences, in the writer ---------------------------------


@pytest.mark.parametrize("first_index", [True, False])
def test_new_files_are_recorded_with_their_listing(
    harness: Harness, tree: Path, first_index: bool
) -> None:
    """New names get ids with the listed signatures, logged (debug during a first index) and remembered as arrivals (not during a first index); the stamp and digest are the listing's."""
    write(tree / "d" / "b.txt", b"bee")
    write(tree / "d" / "a.txt", b"a")
    lst = listing(harness, b"d")
    diff = compare(harness, lst, first_index=first_index)
    with logged() as events:
        counts, gone = apply(harness, diff, first_index=first_index)
    assert (counts, gone) == (Tally(new=2), [])
    a, b = row_at(harness, tree / "d" / "a.txt"), row_at(harness, tree / "d" / "b.txt")
    assert (a.signature, b.signature) == (lst.files[b"a.txt"], lst.files[b"b.txt"])
    level = "debug" if first_index else "info"
    assert only(events, "file.new") == [
        ev(
            "file.new",
            level,
            id=a.id,
            root=harness.root.display,
            path=os.fsencode(tree / "d" / "a.txt"),
        ),
        ev(
            "file.new",
            level,
            id=b.id,
            root=harness.root.display,
            path=os.fsencode(tree / "d" / "b.txt"),
        ),
    ]
    arrivals = harness.reader.execute("SELECT count(*) FROM arrivals").fetchall()[0][0]
    assert arrivals == (0 if first_index else 2)
    assert stamp(harness, b"d") == lst.stamp
    assert digest_of(harness, b"d") == catalog.files_digest(sorted(lst.files.items()))


@pytest.mark.parametrize("first_index", [True, False])
def test_at_level_info_new_files_are_logged_except_during_a_first_index(
    harness: Harness, tree: Path, first_index: bool
) -> None:
    """At the default level each new file is one ``file.new`` line, but not those of a first index."""
    a = write(tree / "d" / "a.txt", b"a")
    diff = compare(harness, listing(harness, b"d"), first_index=first_index)
    with logged_at_info() as events:
        apply(harness, diff, first_index=first_index)
    expected = [] if first_index else [(row_at(harness, a).id, os.fsencode(a))]
    assert [(e["id"], e["path"]) for e in only(events, "file.new")] == expected


def test_a_file_a_live_event_recorded_meanwhile_is_compared_not_added_twice(
    harness: Harness, tree: Path
) -> None:
    """A name new when the rows were read, recorded by a live event before the listing is applied, keeps the live id and gets the listing's signature as a change."""
    a = write(tree / "d" / "a.txt", b"a")
    b = write(tree / "d" / "b.txt", b"bee")
    rows_read: list[catalog.DirRow] = []  # the directory as the sweep read it: unknown
    live = run(
        harness,
        lambda c: reconcile.observe_path(c, harness.root, b"d/b.txt", sig_of(b), time.time()),
    )
    write(b, b"bee, longer now")
    lst = listing(harness, b"d")
    digest = catalog.files_digest(sorted(lst.files.items()))
    diff = reconcile.diff_listing(lst, rows_read, [], None, digest)
    assert [n for n, _ in diff.new] == [b"a.txt", b"b.txt"]
    with logged() as events:
        counts, _ = apply(harness, diff)
    assert counts == Tally(new=1, changed=1)
    assert row_at(harness, b).id == live and row_at(harness, b).signature == sig_of(b)
    assert history(harness, live)[-1] == ("change", b"d/b.txt", None, {"reason": "size"})
    new_a = row_at(harness, a)
    assert only(events, "file.new") == [
        ev("file.new", id=new_a.id, root=harness.root.display, path=os.fsencode(a))
    ]
    assert digest_of(harness, b"d") == digest


def test_a_name_whose_file_moved_on_meanwhile_holds_a_new_file(
    harness: Harness, tree: Path
) -> None:
    """A changed name whose row a live move took elsewhere before the listing is applied: the id stays with the moved file, and what is at the name is a new file."""
    x = write(tree / "d" / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    moved = tree / "e" / "x.txt"
    moved.parent.mkdir()
    os.rename(x, moved)
    write(x, b"another x")
    diff = compare(harness, listing(harness, b"d"))
    assert [n for n, _ in diff.touched] == [b"x.txt"]
    run(
        harness,
        lambda c: reconcile.apply_move(
            c, harness.root, b"d/x.txt", harness.root, b"e/x.txt", sig_of(moved), time.time()
        ),
    )
    counts, _ = apply(harness, diff)
    assert counts == Tally(new=1)
    assert row_at(harness, moved).id == known.id
    here = row_at(harness, x)
    assert here.id != known.id and here.signature == sig_of(x)
    assert [k for k, *_ in history(harness, here.id)] == ["new"]


def test_changed_and_returned_names_in_one_listing(harness: Harness, tree: Path) -> None:
    """One listing with changed files and missing ones back: a change and a restore each, all counted, and the digest of the rows that now match the listing."""
    paths = [write(tree / "d" / n, n.encode()) for n in ("a", "b", "c", "e")]
    harness.sweep()
    ids = [row_at(harness, p).id for p in paths]
    run(harness, lambda c: catalog.mark_missing(c, ids[2:], "not_found", time.time(), None))
    for p in paths[:2]:
        write(p, b"edited")
    lst = listing(harness, b"d")
    diff = compare(harness, lst)
    counts, gone = apply(harness, diff)
    assert (counts, gone) == (Tally(changed=2, restored=2), [])
    assert [[k for k, *_ in history(harness, i)] for i in ids] == [["new", "change"]] * 2 + [
        ["new", "missing", "restore"]
    ] * 2
    assert digest_of(harness, b"d") == catalog.files_digest(sorted(lst.files.items()))


@pytest.mark.parametrize("what", ["gone and vanished", "vanished"])
def test_files_not_listed_are_handed_back_to_confirm(
    harness: Harness, tree: Path, what: str
) -> None:
    """Present files the listing does not show, and those under vanished subdirectories, are returned to be confirmed missing; nothing is marked yet, and the directory stays to list again."""
    x = write(tree / "d" / "x.txt", b"x")
    write(tree / "d" / "y.txt", b"y")
    z = write(tree / "d" / "s" / "z.txt", b"z")
    w = write(tree / "d" / "s" / "t" / "w.txt", b"w")
    write(tree / "d" / "s2" / "v.txt", b"v")
    harness.sweep()
    ids = {p: row_at(harness, p).id for p in (x, z, w)}
    if what == "gone and vanished":
        x.unlink()
    for p in (w, z):
        p.unlink()
    os.rmdir(tree / "d" / "s" / "t")
    os.rmdir(tree / "d" / "s")
    remember(harness, b"d")
    lst = listing(harness, b"d")
    diff = compare(harness, lst)
    assert diff.vanished == [b"d/s"]
    counts, gone = apply(harness, diff)
    expected = [ids[z], ids[w]]
    if what == "gone and vanished":
        expected.insert(0, ids[x])
    assert counts == Tally() and gone == expected
    assert harness.counts() == (5, 0, 0)
    assert stamp(harness, b"d") == DIRTY
    assert digest_of(harness, b"d") in (
        None,
        catalog.present_digest(harness.reader, harness.root.id, b"d"),
    )


@pytest.mark.parametrize("how", ["moved", "replaced by a directory", "replaced by a file"])
def test_a_listing_of_a_directory_that_is_not_there_any_more_records_nothing(
    harness: Harness, tree: Path, how: str
) -> None:
    """A directory moved or replaced after it was listed: its listing is dropped (logged at debug), nothing recorded at paths that no longer hold it."""
    write(tree / "d" / "a.txt", b"a")
    harness.sweep()
    write(tree / "d" / "b.txt", b"b")
    diff = compare(harness, listing(harness, b"d"))
    assert diff.new
    os.rename(tree / "d", tree / "d.old")
    if how == "replaced by a directory":
        write(tree / "d" / "b.txt", b"b")
    elif how == "replaced by a file":
        write(tree / "d", b"a file now")
    seq = catalog.last_seq(harness.reader)
    with logged() as events:
        counts, gone = apply(harness, diff)
    assert (counts, gone) == (Tally(), [])
    assert catalog.last_seq(harness.reader) == seq
    assert harness.at(tree / "d" / "b.txt") is None
    assert only(events, "sweep.stale_listing") == [
        ev("sweep.stale_listing", "debug", root=harness.root.display, path=os.fsencode(tree / "d"))
    ]


def test_a_digest_is_not_stored_when_a_live_event_changed_the_rows(
    harness: Harness, tree: Path
) -> None:
    """A file recorded live in the directory after its rows were read: the listing's digest no longer describes the rows and is not stored, even for a directory that held nothing."""
    harness.sweep()
    write(tree / "d" / "n.txt", b"n")
    lst = listing(harness, b"d")
    diff = compare(harness, lst, first_index=True)
    m = write(tree / "d" / "m.txt", b"m")
    run(
        harness,
        lambda c: reconcile.observe_path(c, harness.root, b"d/m.txt", sig_of(m), time.time()),
    )
    counts, _ = apply(harness, diff)
    assert counts == Tally(new=1)
    assert digest_of(harness, b"d") is None


def test_a_digest_is_not_stored_when_a_live_move_emptied_the_directory(
    harness: Harness, tree: Path
) -> None:
    """A known file moved out live after the listing showed it: the directory now holds fewer rows than the listing, and its digest is not the listing's."""
    write(tree / "d" / "f.txt", b"f")
    harness.sweep()
    write(tree / "d" / "n.txt", b"n")
    lst = listing(harness, b"d")
    diff = compare(harness, lst)
    assert [n for n, _ in diff.new] == [b"n.txt"] and diff.listed == 2
    (tree / "e").mkdir()
    os.rename(tree / "d" / "f.txt", tree / "e" / "f.txt")
    move(harness, b"d/f.txt", b"e/f.txt", sig_of(tree / "e" / "f.txt"))
    apply(harness, diff)
    assert digest_of(harness, b"d") in (
        None,
        catalog.present_digest(harness.reader, harness.root.id, b"d"),
    )
    assert digest_of(harness, b"d") != catalog.files_digest(sorted(lst.files.items()))


@pytest.mark.parametrize("roots", [True, False])
def test_a_file_found_by_inode_moves_with_its_id(harness: Harness, tree: Path, roots: bool) -> None:
    """New names the inode rule matched to known files (moved while nobody watched; confirmed by content where hashed): the ids move there, each journaled and logged as a move by inode."""
    xs = [write(tree / "a" / n, n.encode()) for n in ("x.txt", "z.txt")]
    harness.sweep()
    hash_it(harness, xs[0])
    known = [row_at(harness, x) for x in xs]
    ys = [tree / "b" / x.name for x in xs]
    ys[0].parent.mkdir()
    for x, y in zip(xs, ys, strict=True):
        os.rename(x, y)
    diff = compare(harness, listing(harness, b"b"))
    diff = DirDiff(
        diff.dir,
        diff.stamp,
        [],
        [],
        [],
        [],
        found=[
            (y.name.encode(), sig_of(y), k, harness.root.id) for y, k in zip(ys, known, strict=True)
        ],
        digest=diff.digest,
        listed=2,
        ident=diff.ident,
    )
    with logged() as events:
        counts, _ = apply(harness, diff, roots={harness.root.id: harness.root} if roots else None)
    assert counts == Tally(moved=2)
    assert [row_at(harness, y).id for y in ys] == [k.id for k in known]
    assert history(harness, known[0].id)[-1] == ("move", b"b/x.txt", b"a/x.txt", {"by": "inode"})
    assert only(events, "file.move") == [
        ev(
            "file.move",
            id=k.id,
            root=harness.root.display,
            path=os.fsencode(y),
            old_path=os.fsencode(x),
            by="inode",
        )
        for x, y, k in zip(xs, ys, known, strict=True)
    ]


def test_a_file_found_by_inode_in_another_root_moves_there(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """Moved to another root while nobody watched: the id follows, the counters of both roots too, and the old path is given in its own root."""
    other = harness.add_root(tmp_path / "other")
    (tmp_path / "other").mkdir()
    x = write(tree / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    y = tmp_path / "other" / "d" / "x.txt"
    y.parent.mkdir()
    os.rename(x, y)
    lst = listing(harness, b"d", root=other)
    digest = catalog.files_digest(sorted(lst.files.items()))
    diff = reconcile.diff_listing(lst, [], [], None, digest)
    diff = DirDiff(
        b"d",
        diff.stamp,
        [],
        [],
        [],
        [],
        found=[(b"x.txt", sig_of(y), known, harness.root.id)],
        digest=digest,
        listed=1,
        ident=diff.ident,
    )
    roots = {harness.root.id: harness.root, other.id: other}
    with logged() as events:
        counts, _ = apply(harness, diff, roots=roots, root=other)
    assert counts == Tally(moved=1)
    moved = get(harness, known.id)
    assert (moved.root, moved.path, moved.state) == (other.id, b"d/x.txt", "present")
    assert harness.counts() == (0, 0, 0)
    assert catalog.get_root(harness.reader, other.id).present == 1  # type: ignore[union-attr]
    assert only(events, "file.move") == [
        ev(
            "file.move",
            id=known.id,
            root=other.display,
            path=os.fsencode(y),
            old_path=os.fsencode(x),
            by="inode",
        )
    ]


# --- observe_path: one path, as a check on access or a live hint sees it ------------------


def observe(
    h: Harness, path: bytes, sig: Signature | None, now: float | None = None, **kw: Any
) -> int | None:
    when = time.time() if now is None else now
    return run(h, lambda c: reconcile.observe_path(c, h.root, path, sig, when, **kw))


@pytest.mark.parametrize("reason", [None, "deleted"])
def test_a_present_file_seen_absent_is_missing_with_the_reason(
    harness: Harness, tree: Path, reason: str | None
) -> None:
    """Absent at its path: missing since now, with the reason given (not_found by default), logged; its directory is listed again. Seen absent again: nothing more happens."""
    f = write(tree / "d" / "f.txt", b"f")
    harness.sweep()
    known = row_at(harness, f)
    f.unlink()
    remember(harness, b"d")
    now = time.time()
    kw = {} if reason is None else {"reason": reason}
    with logged() as events:
        assert observe(harness, b"d/f.txt", None, now, **kw) == known.id
    gone = get(harness, known.id)
    why = reason or "not_found"
    assert (gone.state, gone.missing_since, gone.missing_reason) == ("missing", now, why)
    assert history(harness, known.id)[-1] == ("missing", b"d/f.txt", None, {"reason": why})
    assert only(events, "file.missing") == [
        ev("file.missing", id=known.id, root=harness.root.display, path=os.fsencode(f), reason=why)
    ]
    assert stamp(harness, b"d") == DIRTY
    remember(harness, b"d")
    seq = catalog.last_seq(harness.reader)
    assert observe(harness, b"d/f.txt", None, now + 5, reason="deleted") == known.id
    assert get(harness, known.id) == gone
    assert catalog.last_seq(harness.reader) == seq and stamp(harness, b"d") == STAMP


def test_files_seen_together_in_one_directory_are_recorded_as_one_by_one(
    harness: Harness, tree: Path
) -> None:
    """observe_new: a known file changed, new files (one seen twice) and a missing one back,
    each recorded as observe_path would: journaled, logged, the directory listed again."""
    known = write(tree / "d" / "known.txt", b"k")
    back = write(tree / "d" / "back.txt", b"b")
    harness.sweep()
    known_row, back_row = row_at(harness, known), row_at(harness, back)
    back.unlink()
    harness.sweep()
    write(known, b"changed, longer")
    write(back, b"b")
    news = [write(tree / "d" / f"n{i}.txt", b"%d" % i) for i in range(3)]
    remember(harness, b"d")
    stale = (99, *sig_of(news[0])[1:])  # n0 as it was a moment before: seen again since
    seen = [(p.name.encode(), sig_of(p)) for p in [known, news[0], back, news[1]]]
    seen[1] = (b"n0.txt", stale)
    seen += [(b"n0.txt", sig_of(news[0])), (b"n2.txt", sig_of(news[2]))]
    with logged() as events:
        run(harness, lambda c: reconcile.observe_new(c, harness.root, b"d", seen, time.time()))
    assert history(harness, known_row.id)[-1][0] == "change"
    assert history(harness, back_row.id)[-1][0] == "restore"
    rows = [row_at(harness, p) for p in news]
    assert len({r.id for r in rows}) == 3 and all(
        r.signature == sig_of(p) for r, p in zip(rows, news, strict=True)
    )
    assert [history(harness, r.id) for r in rows] == [
        [("new", b"d/" + p.name.encode(), None, None)] for p in news
    ]
    assert sorted(e["path"] for e in only(events, "file.new")) == sorted(
        os.fsencode(p) for p in news
    )
    assert stamp(harness, b"d") == DIRTY
    # Only known files seen, unchanged: nothing new, the directory's listing still holds.
    remember(harness, b"d")
    again = [(p.name.encode(), sig_of(p)) for p in news]
    run(harness, lambda c: reconcile.observe_new(c, harness.root, b"d", again, time.time()))
    assert stamp(harness, b"d") == STAMP


def test_an_unknown_path_seen_absent_is_nothing(harness: Harness, tree: Path) -> None:
    """Absent and never known: no id, no journal entry."""
    harness.sweep()
    seq = catalog.last_seq(harness.reader)
    assert observe(harness, b"d/none.txt", None) is None
    assert catalog.last_seq(harness.reader) == seq


def test_a_known_path_seen_again_is_compared_as_a_sweep_would(harness: Harness, tree: Path) -> None:
    """A known file seen with another signature is a change of its id; a missing one there is back."""
    f = write(tree / "f.txt", b"f")
    harness.sweep()
    known = row_at(harness, f)
    write(f, b"f, longer")
    assert observe(harness, b"f.txt", sig_of(f)) == known.id
    assert history(harness, known.id)[-1] == ("change", b"f.txt", None, {"reason": "size"})
    run(harness, lambda c: catalog.mark_missing(c, [known.id], "deleted", time.time(), None))
    assert observe(harness, b"f.txt", sig_of(f)) == known.id
    assert get(harness, known.id).state == "present"
    assert history(harness, known.id)[-1] == ("restore", b"f.txt", None, {"was": "missing"})


def test_an_unknown_file_is_new(harness: Harness, tree: Path) -> None:
    """A file at a path the catalog does not know is a new id, journaled and logged; its directory is listed again."""
    harness.sweep()
    f = write(tree / "d" / "n.txt", b"n")
    remember(harness, b"d")
    now = time.time()
    with logged() as events:
        got = observe(harness, b"d/n.txt", sig_of(f), now)
    assert got is not None
    new = get(harness, got)
    assert (new.path, new.state, new.signature, new.first_seen) == (
        b"d/n.txt",
        "present",
        sig_of(f),
        now,
    )
    assert history(harness, got) == [("new", b"d/n.txt", None, None)]
    assert only(events, "file.new") == [
        ev("file.new", id=got, root=harness.root.display, path=os.fsencode(f))
    ]
    assert stamp(harness, b"d") == DIRTY and harness.counts() == (1, 0, 0)


def test_with_the_roots_a_file_moved_unwatched_keeps_its_id(harness: Harness, tree: Path) -> None:
    """Given the roots, a new path whose inode, size and mtime are a known unhashed file's (its own path empty now) is that file moved: the id follows, by inode. Without them it is new."""
    x = write(tree / "a" / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    roots = {harness.root.id: harness.root}
    assert observe(harness, b"b/y.txt", sig_of(y), roots=roots) == known.id
    assert row_at(harness, y).id == known.id
    assert history(harness, known.id)[-1] == ("move", b"b/y.txt", b"a/x.txt", {"by": "inode"})
    z = tree / "c" / "z.txt"
    z.parent.mkdir()
    os.rename(y, z)
    got = observe(harness, b"c/z.txt", sig_of(z))
    assert got is not None and got != known.id


def test_in_the_writer_a_hashed_inode_match_is_left_to_the_content_rule(
    harness: Harness, tree: Path
) -> None:
    """The writer reads no file: a known file with a hash that the inode names is not taken unconfirmed; the path is a new file (the content rule decides later)."""
    x = write(tree / "a" / "x.txt", b"x")
    harness.sweep()
    hash_it(harness, x)
    known = row_at(harness, x)
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    got = observe(harness, b"b/y.txt", sig_of(y), roots={harness.root.id: harness.root})
    assert got is not None and got != known.id
    assert get(harness, known.id).path == b"a/x.txt"


# --- apply_move: a live rename, or a file found by inode ------------------------------------


def move(
    h: Harness,
    src: bytes,
    dst: bytes,
    sig: Signature | None,
    *,
    src_root: Root | None = None,
    dst_root: Root | None = None,
    now: float | None = None,
    **kw: Any,
) -> int | None:
    when = time.time() if now is None else now
    s, d = src_root or h.root, dst_root or h.root
    return run(h, lambda c: reconcile.apply_move(c, s, src, d, dst, sig, when, **kw))


def test_a_live_rename_moves_the_id(harness: Harness, tree: Path) -> None:
    """A rename keeps the id, its hash (only the ctime changed) and its history; journaled and logged as a move by event; the new directory is listed again."""
    a = write(tree / "d" / "a.txt", b"a")
    harness.sweep()
    digest = hash_it(harness, a)
    known = row_at(harness, a)
    b = tree / "e" / "b.txt"
    b.parent.mkdir()
    os.rename(a, b)
    remember(harness, b"e")
    now = time.time()
    with logged() as events:
        assert move(harness, b"d/a.txt", b"e/b.txt", sig_of(b), now=now) == known.id
    moved = get(harness, known.id)
    assert (moved.path, moved.state, moved.hash, moved.signature) == (
        b"e/b.txt",
        "present",
        digest,
        sig_of(b),
    )
    assert moved.last_seen == now
    assert history(harness, known.id)[-1] == ("move", b"e/b.txt", b"d/a.txt", None)
    assert only(events, "file.move", "file.relink") == [
        ev(
            "file.move",
            id=known.id,
            root=harness.root.display,
            path=os.fsencode(b),
            old_path=os.fsencode(a),
            by="event",
        )
    ]
    assert stamp(harness, b"e") == DIRTY
    assert harness.at(a) is None


def test_a_rename_applied_after_the_file_went_keeps_its_signature(
    harness: Harness, tree: Path
) -> None:
    """The destination is already gone when the rename is applied: the id moves with the signature it had."""
    a = write(tree / "a.txt", b"a")
    harness.sweep()
    known = row_at(harness, a)
    assert move(harness, b"a.txt", b"b.txt", None) == known.id
    moved = get(harness, known.id)
    assert (moved.path, moved.signature) == (b"b.txt", known.signature)


def test_a_rename_from_an_unknown_path_observes_the_destination(
    harness: Harness, tree: Path
) -> None:
    """From a path the catalog does not know: the destination is a new file, or nothing if it is gone too."""
    harness.sweep()
    b = write(tree / "b.txt", b"b")
    seq = catalog.last_seq(harness.reader)
    assert move(harness, b"tmp", b"gone.txt", None) is None
    assert catalog.last_seq(harness.reader) == seq
    got = move(harness, b"tmp", b"b.txt", sig_of(b))
    assert got is not None and row_at(harness, b).id == got
    assert history(harness, got) == [("new", b"b.txt", None, None)]
    # Renamed over a known file and gone again already: nothing is decided here; what removed
    # it has its own event.
    seq = catalog.last_seq(harness.reader)
    assert move(harness, b"tmp", b"b.txt", None) is None
    assert catalog.last_seq(harness.reader) == seq and row_at(harness, b).state == "present"


def test_a_rename_from_an_unknown_path_finds_a_file_moved_unwatched(
    harness: Harness, tree: Path
) -> None:
    """With the roots, a rename whose source the catalog does not know (a directory above it moved unwatched) still finds the known file by its inode."""
    x = write(tree / "old" / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    os.rename(tree / "old", tree / "new")
    y = tree / "new" / "y.txt"
    os.rename(tree / "new" / "x.txt", y)
    roots = {harness.root.id: harness.root}
    assert move(harness, b"new/x.txt", b"new/y.txt", sig_of(y), roots=roots) == known.id
    assert get(harness, known.id).path == b"new/y.txt"


def test_a_rename_of_a_file_known_missing_is_a_relink_by_inode(
    harness: Harness, tree: Path
) -> None:
    """The source is recorded missing (a sweep missed it): with the roots, the destination is that file by its inode, relinked; journaled and logged as a relink."""
    x = write(tree / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    run(harness, lambda c: catalog.mark_missing(c, [known.id], "not_found", time.time(), None))
    y = tree / "y.txt"
    os.rename(x, y)
    with logged() as events:
        got = move(harness, b"x.txt", b"y.txt", sig_of(y), roots={harness.root.id: harness.root})
    assert got == known.id
    back = get(harness, known.id)
    assert (back.path, back.state, back.missing_reason) == (b"y.txt", "present", None)
    assert history(harness, known.id)[-1] == ("relink", b"y.txt", b"x.txt", {"by": "inode"})
    assert only(events, "file.relink", "file.move") == [
        ev(
            "file.relink",
            id=known.id,
            root=harness.root.display,
            path=os.fsencode(y),
            old_path=os.fsencode(x),
            by="inode",
            candidates=1,
            chose="only one",
        )
    ]
    assert harness.counts() == (1, 0, 0)
    # Without the roots, the rename of a file known missing is a new file at the destination.
    q = write(tree / "q.txt", b"q")
    harness.sweep()
    qid = row_at(harness, q).id
    run(harness, lambda c: catalog.mark_missing(c, [qid], "not_found", time.time(), None))
    r = tree / "r.txt"
    os.rename(q, r)
    got = move(harness, b"q.txt", b"r.txt", sig_of(r))
    assert got is not None and got != qid
    assert get(harness, qid).state == "missing"


@pytest.mark.parametrize("sig_known", [True, False])
def test_a_rename_over_a_present_file_keeps_the_destination_id(
    harness: Harness, tree: Path, sig_known: bool
) -> None:
    """An atomic save (a temporary file renamed over ``f``): ``f`` keeps its id with the new content as a change; the temporary file's id is missing, deleted."""
    f = write(tree / "f.txt", b"f")
    tmp = write(tree / "f.tmp", b"f, saved")
    harness.sweep()
    fid, tid = row_at(harness, f).id, row_at(harness, tmp).id
    os.replace(tmp, f)
    now = time.time()
    with logged() as events:
        got = move(harness, b"f.tmp", b"f.txt", sig_of(f) if sig_known else None, now=now)
    assert got == fid
    kept, gone = get(harness, fid), get(harness, tid)
    assert (kept.path, kept.state) == (b"f.txt", "present")
    assert (gone.path, gone.state, gone.missing_reason, gone.missing_since) == (
        b"f.tmp",
        "missing",
        "deleted",
        now,
    )
    if sig_known:
        assert kept.signature == sig_of(f)
        assert history(harness, fid)[-1] == ("change", b"f.txt", None, {"reason": "replaced"})
    else:
        assert [k for k, *_ in history(harness, fid)] == ["new"]
    assert [e["event"] for e in only(events, "file.change", "file.missing", "file.move")] == (
        ["file.change"] if sig_known else []
    ) + ["file.missing"]


def test_a_rename_onto_a_missing_file_s_path_keeps_both_ids(harness: Harness, tree: Path) -> None:
    """A file moved onto the path of a missing file keeps its own id; the missing one stays missing."""
    a = write(tree / "a.txt", b"a")
    c = write(tree / "c.txt", b"c")
    harness.sweep()
    aid, cid = row_at(harness, a).id, row_at(harness, c).id
    c.unlink()
    run(harness, lambda conn: catalog.mark_missing(conn, [cid], "deleted", time.time(), None))
    os.rename(a, c)
    assert move(harness, b"a.txt", b"c.txt", sig_of(c)) == aid
    assert row_at(harness, c).id == aid
    assert get(harness, cid).state == "missing" and get(harness, cid).path == b"c.txt"


def test_a_match_that_no_longer_holds_is_decided_afresh(harness: Harness, tree: Path) -> None:
    """A file matched by inode on a read connection whose record changed since (hashed meanwhile): the destination is looked at again, and is a new file; gone, it is nothing."""
    x = write(tree / "a" / "x.txt", b"x")
    harness.sweep()
    seen = row_at(harness, x)
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    run(harness, lambda c: catalog.set_hash(c, seen.id, seen.signature, b"0" * 16))
    roots = {harness.root.id: harness.root}
    got = move(harness, b"a/x.txt", b"b/y.txt", sig_of(y), matched=seen, by="inode", roots=roots)
    assert got is not None and got != seen.id
    assert row_at(harness, y).id == got
    assert get(harness, seen.id).path == b"a/x.txt"
    y.unlink()
    seq = catalog.last_seq(harness.reader)
    assert (
        move(harness, b"a/x.txt", b"b/gone.txt", sig_of(tree / "b"), matched=seen, roots=roots)
        is None
    )
    assert move(harness, b"a/x.txt", b"b/gone.txt", None, matched=seen, roots=roots) is None
    assert catalog.last_seq(harness.reader) == seq


def test_a_match_still_holding_moves_the_id(harness: Harness, tree: Path) -> None:
    """A file matched by inode that still matches in the writer moves there, by inode."""
    x = write(tree / "a" / "x.txt", b"x")
    harness.sweep()
    seen = row_at(harness, x)
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    roots = {harness.root.id: harness.root}
    # Gone again before the match is applied: nothing moves.
    os.rename(y, tree / "b" / "y.later")
    assert (
        move(harness, b"ignored", b"b/y.txt", None, matched=seen, by="inode", roots=roots) is None
    )
    assert get(harness, seen.id).path == b"a/x.txt"
    os.rename(tree / "b" / "y.later", y)
    got = move(harness, b"ignored", b"b/y.txt", sig_of(y), matched=seen, by="inode", roots=roots)
    assert got == seen.id
    assert history(harness, seen.id)[-1] == ("move", b"b/y.txt", b"a/x.txt", {"by": "inode"})


def test_a_move_from_a_root_no_longer_known_logs_its_recorded_path(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """Between roots: the id follows; where the old root is not among the roots given, the log's old path is the path recorded in it."""
    (tmp_path / "other").mkdir()
    other = harness.add_root(tmp_path / "other")
    a = write(tree / "a.txt", b"a")
    harness.sweep()
    known = row_at(harness, a)
    b = tmp_path / "other" / "b.txt"
    os.rename(a, b)
    with logged() as events:
        got = move(harness, b"a.txt", b"b.txt", sig_of(b), dst_root=other, roots={other.id: other})
    assert got == known.id
    assert (get(harness, known.id).root, get(harness, known.id).path) == (other.id, b"b.txt")
    assert [e["old_path"] for e in only(events, "file.move")] == [b"a.txt"]
    c = tmp_path / "other" / "c.txt"
    os.rename(b, c)
    with logged() as events:
        move(harness, b"b.txt", b"c.txt", sig_of(c), src_root=other, dst_root=other)
    assert [e["old_path"] for e in only(events, "file.move")] == [os.fsencode(b)]


# --- save_back: an editor moved the file aside and wrote a new one -------------------------


def aside(h: Harness, tree: Path) -> tuple[Path, Path, FileRow, float]:
    """``d/f.txt`` known, then moved aside to ``d/f.txt~`` (the move applied live) and written anew."""
    f = write(tree / "d" / "f.txt", b"version one")
    h.sweep()
    known = row_at(h, f)
    since = time.time()
    backup = tree / "d" / "f.txt~"
    os.rename(f, backup)
    assert move(h, b"d/f.txt", b"d/f.txt~", sig_of(backup), now=since) == known.id
    write(f, b"version two, longer")
    remember(h, b"d")
    return f, backup, known, since


def save(h: Harness, *, since: float, keep: bool, now: float | None = None) -> int | None:
    when = time.time() if now is None else now
    roots = {h.root.id: h.root}
    return run(
        h,
        lambda c: reconcile.save_back(
            c, h.root, b"d/f.txt~", b"d/f.txt", when, since=since, keep_backup=keep, roots=roots
        ),
    )


@pytest.mark.parametrize("keep", [False, True])
def test_an_editor_s_save_keeps_the_id_at_home(harness: Harness, tree: Path, keep: bool) -> None:
    """vim (backup deleted) or emacs (backup kept): the id is back at ``f`` with the new content as a change, journaled as a move by save; a kept backup is a new file, a deleted one leaves no record."""
    f, backup, known, since = aside(harness, tree)
    if not keep:
        backup.unlink()
    with logged() as events:
        assert save(harness, since=since, keep=keep) == known.id
    home = row_at(harness, f)
    assert (home.id, home.state, home.signature) == (known.id, "present", sig_of(f))
    assert history(harness, known.id) == [
        ("new", b"d/f.txt", None, None),
        ("move", b"d/f.txt~", b"d/f.txt", None),
        ("move", b"d/f.txt", b"d/f.txt~", {"by": "save"}),
        ("change", b"d/f.txt", None, {"reason": "replaced"}),
    ]
    assert only(events, "file.move") == [
        ev(
            "file.move",
            id=known.id,
            root=harness.root.display,
            path=os.fsencode(f),
            old_path=os.fsencode(backup),
            by="save",
        )
    ]
    assert stamp(harness, b"d") == DIRTY
    if keep:
        kept = row_at(harness, backup)
        assert kept.id != known.id and kept.signature == sig_of(backup)
        assert history(harness, kept.id) == [("new", b"d/f.txt~", None, None)]
        assert harness.counts() == (2, 0, 0)
    else:
        assert harness.at(backup) is None
        assert harness.counts() == (1, 0, 0)


@pytest.mark.parametrize("keep", [False, True])
def test_an_interim_id_of_the_new_file_is_retired_into_the_old_one(
    harness: Harness, tree: Path, keep: bool
) -> None:
    """The new ``f`` already recorded as a new file (at or after the move aside): that interim id goes into the old one, which takes its place and hash; the journal says so."""
    f, backup, known, since = aside(harness, tree)
    interim = observe(harness, b"d/f.txt", sig_of(f), since)
    assert interim is not None
    digest = hash_it(harness, f)
    if not keep:
        backup.unlink()
    assert save(harness, since=since, keep=keep) == known.id
    assert catalog.get_file(harness.reader, interim) is None
    assert history(harness, interim)[-1] == ("retire", b"d/f.txt", None, {"into": known.id})
    home = row_at(harness, f)
    assert (home.id, home.signature, home.hash) == (known.id, sig_of(f), digest)
    assert history(harness, known.id)[-1] == ("move", b"d/f.txt", b"d/f.txt~", {"by": "save"})
    assert harness.counts() == ((2, 0, 0) if keep else (1, 0, 0))


@pytest.mark.parametrize("why", ["known before", "annotated"])
def test_an_interim_id_with_a_life_of_its_own_is_kept(
    harness: Harness, tree: Path, why: str
) -> None:
    """The new ``f``'s id was known before the move aside, or has annotations: both ids stay; the moved-aside file, deleted, is missing (deleted)."""
    f, backup, known, since = aside(harness, tree)
    interim = observe(harness, b"d/f.txt", sig_of(f), since - 1 if why == "known before" else since)
    assert interim is not None
    if why == "annotated":
        run(harness, lambda c: catalog.set_annotation(c, interim, "label", "mine"))
    backup.unlink()
    now = time.time()
    assert save(harness, since=since, keep=False, now=now) == interim
    assert row_at(harness, f).id == interim
    gone = get(harness, known.id)
    assert (gone.path, gone.state, gone.missing_reason, gone.missing_since) == (
        b"d/f.txt~",
        "missing",
        "deleted",
        now,
    )


def test_a_kept_backup_next_to_an_interim_id_known_before_stays_present(
    harness: Harness, tree: Path
) -> None:
    """Both ids kept, and the backup still on disk: the old id stays present at the backup."""
    f, backup, known, since = aside(harness, tree)
    interim = observe(harness, b"d/f.txt", sig_of(f), since - 1)
    assert save(harness, since=since, keep=True) == interim
    assert row_at(harness, backup).id == known.id and get(harness, known.id).state == "present"


def test_a_missing_file_recorded_at_home_does_not_stop_the_save(
    harness: Harness, tree: Path
) -> None:
    """A missing file last at ``f`` (another file was moved there since) stays missing; the saved file's id comes home."""
    f = write(tree / "d" / "f.txt", b"the first f")
    g = write(tree / "d" / "g.txt", b"version one")
    harness.sweep()
    old_id, gid = row_at(harness, f).id, row_at(harness, g).id
    f.unlink()
    run(harness, lambda c: catalog.mark_missing(c, [old_id], "deleted", time.time(), None))
    os.rename(g, f)
    assert move(harness, b"d/g.txt", b"d/f.txt", sig_of(f)) == gid
    since = time.time()
    backup = tree / "d" / "f.txt~"
    os.rename(f, backup)
    assert move(harness, b"d/f.txt", b"d/f.txt~", sig_of(backup), now=since) == gid
    write(f, b"version two")
    backup.unlink()
    assert save(harness, since=since, keep=False) == gid
    assert row_at(harness, f).id == gid
    assert (get(harness, old_id).state, get(harness, old_id).path) == ("missing", b"d/f.txt")


def test_a_save_that_is_not_one_any_more_is_decided_as_usual(harness: Harness, tree: Path) -> None:
    """The backup to keep is gone too, or the new ``f`` is gone: the old id is missing (deleted), and a new ``f`` is a new file."""
    f, backup, known, since = aside(harness, tree)
    backup.unlink()
    got = save(harness, since=since, keep=True)
    assert got is not None and got != known.id and row_at(harness, f).id == got
    assert get(harness, known.id).missing_reason == "deleted"


def test_a_save_whose_new_file_went_records_the_backup_only(harness: Harness, tree: Path) -> None:
    """No new ``f`` on disk: nothing at home, and a deleted backup is missing (deleted)."""
    f, backup, known, since = aside(harness, tree)
    f.unlink()
    backup.unlink()
    assert save(harness, since=since, keep=False) is None
    assert harness.at(f) is None
    assert get(harness, known.id).missing_reason == "deleted"


def test_a_save_from_an_unknown_or_missing_backup_is_decided_as_usual(
    harness: Harness, tree: Path
) -> None:
    """The backup the catalog does not have as present: the new ``f`` is a new file."""
    f, _, known, since = aside(harness, tree)
    run(harness, lambda c: catalog.mark_missing(c, [known.id], "deleted", time.time(), None))
    got = save(harness, since=since, keep=True)
    assert got is not None and got != known.id and row_at(harness, f).id == got
    # The backup on disk is the missing file back at its path.
    assert (get(harness, known.id).path, get(harness, known.id).state) == (b"d/f.txt~", "present")
    roots = {harness.root.id: harness.root}
    g = write(tree / "d" / "g.txt", b"g")
    got = run(
        harness,
        lambda c: reconcile.save_back(
            c,
            harness.root,
            b"d/g.txt~",
            b"d/g.txt",
            time.time(),
            since=since,
            keep_backup=False,
            roots=roots,
        ),
    )
    assert got is not None and row_at(harness, g).id == got
    assert history(harness, got) == [("new", b"d/g.txt", None, None)]


# --- apply_move_dir, gone_under, confirm_missing ---------------------------------------------


def test_a_directory_move_takes_every_file_below_it(harness: Harness, tree: Path) -> None:
    """Every file below the directory keeps its id at its new path; a sibling sharing its name's prefix stays; the move is logged with the count."""
    a = write(tree / "d" / "a.txt", b"a")
    b = write(tree / "d" / "s" / "b.txt", b"b")
    c = write(tree / "d2" / "c.txt", b"c")
    harness.sweep()
    ids = [row_at(harness, p).id for p in (a, b, c)]
    (tree / "e").mkdir()
    os.rename(tree / "d", tree / "e" / "d")
    with logged() as events:
        count = run(
            harness,
            lambda conn: reconcile.apply_move_dir(
                conn, harness.root, b"d", harness.root, b"e/d", time.time()
            ),
        )
    assert count == 2
    assert [get(harness, i).path for i in ids] == [b"e/d/a.txt", b"e/d/s/b.txt", b"d2/c.txt"]
    assert history(harness, ids[1])[-1] == ("move", b"e/d/s/b.txt", b"d/s/b.txt", None)
    assert only(events, "dir.move") == [
        ev(
            "dir.move",
            root=harness.root.display,
            path=os.fsencode(tree / "e" / "d"),
            old_path=os.fsencode(tree / "d"),
            files=2,
        )
    ]


def test_a_directory_moved_to_another_root_logs_both_roots_paths(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """Between roots: the files follow into the other root, and the log names each side in its root."""
    (tmp_path / "other").mkdir()
    other = harness.add_root(tmp_path / "other")
    a = write(tree / "d" / "a.txt", b"a")
    harness.sweep()
    aid = row_at(harness, a).id
    os.rename(tree / "d", tmp_path / "other" / "e")
    with logged() as events:
        count = run(
            harness,
            lambda conn: reconcile.apply_move_dir(
                conn, harness.root, b"d", other, b"e", time.time()
            ),
        )
    assert count == 1
    assert (get(harness, aid).root, get(harness, aid).path) == (other.id, b"e/a.txt")
    assert [(e["root"], e["path"], e["old_path"]) for e in only(events, "dir.move")] == [
        (other.display, os.fsencode(tmp_path / "other" / "e"), os.fsencode(tree / "d"))
    ]


def gone(h: Harness, path: bytes, reason: str, now: float) -> int:
    return run(h, lambda c: reconcile.gone_under(c, h.root, path, reason, now))


def test_a_file_that_left_is_missing_with_the_reason(harness: Harness, tree: Path) -> None:
    """A file deleted or moved out: missing since then with that reason; its neighbours stay; its directory is listed again."""
    f = write(tree / "d" / "f.txt", b"f")
    g = write(tree / "d" / "f.txt2", b"g")
    harness.sweep()
    fid = row_at(harness, f).id
    f.unlink()
    remember(harness, b"d")
    now = time.time()
    with logged() as events:
        assert gone(harness, b"d/f.txt", "moved_out", now) == 1
    left = get(harness, fid)
    assert (left.state, left.missing_reason, left.missing_since) == ("missing", "moved_out", now)
    assert row_at(harness, g).state == "present"
    assert only(events, "file.missing") == [
        ev(
            "file.missing",
            id=fid,
            root=harness.root.display,
            path=os.fsencode(f),
            reason="moved_out",
        )
    ]
    assert stamp(harness, b"d") == DIRTY
    assert gone(harness, b"d/f.txt", "deleted", now + 1) == 0
    assert get(harness, fid) == left


def test_a_directory_that_left_takes_its_present_files_with_it(
    harness: Harness, tree: Path
) -> None:
    """Everything present at any depth below a directory that left is missing with the reason; files already missing keep their own; the listings below it are forgotten, the parent's is stale."""
    a = write(tree / "p" / "d" / "a.txt", b"a")
    b = write(tree / "p" / "d" / "s" / "b.txt", b"b")
    c = write(tree / "p" / "d" / "c.txt", b"c")
    x = write(tree / "p" / "d2" / "x.txt", b"x")
    y = write(tree / "p" / "dy.txt", b"y")
    harness.sweep()
    ids = {p: row_at(harness, p).id for p in (a, b, c, x, y)}
    run(harness, lambda conn: catalog.mark_missing(conn, [ids[c]], "deleted", 5.0, None))
    shutil.rmtree(tree / "p" / "d")
    remember(harness, b"p", b"p/d", b"p/d/s", b"p/d2")
    now = time.time()
    assert gone(harness, b"p/d", "moved_out", now) == 2
    assert [get(harness, ids[p]).missing_reason for p in (a, b, c, x, y)] == [
        "moved_out",
        "moved_out",
        "deleted",
        None,
        None,
    ]
    assert get(harness, ids[c]).missing_since == 5.0
    assert (stamp(harness, b"p/d"), stamp(harness, b"p/d/s")) == (None, None)
    assert (stamp(harness, b"p"), stamp(harness, b"p/d2")) == (DIRTY, STAMP)


def test_only_files_still_where_they_were_seen_are_confirmed_missing(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """Of the files a caller found gone, one that moved since, one in another root, one already missing and one purged are left alone; the rest are missing, logged, with the time last seen."""
    (tmp_path / "other").mkdir()
    other = harness.add_root(tmp_path / "other")
    files = [write(tree / n, n.encode()) for n in ("a", "b", "c")]
    o = write(tmp_path / "other" / "a", b"o")
    harness.sweep()
    harness.sweep(root=other)
    a, b, c = (row_at(harness, p) for p in files)
    oid = catalog.file_at(harness.reader, other.id, b"a").id  # type: ignore[union-attr]
    move(harness, b"b", b"b2", None)
    run(harness, lambda conn: catalog.mark_missing(conn, [c.id], "deleted", 5.0, None))
    now = time.time()
    with logged() as events:
        count = run(
            harness,
            lambda conn: reconcile.confirm_missing(
                conn,
                harness.root,
                [(a.id, b"a"), (b.id, b"b"), (oid, b"a"), (c.id, b"c"), (10**9, b"z")],
                "not_found",
                now,
                now + 60,
            ),
        )
    assert count == 1
    got = get(harness, a.id)
    assert (got.state, got.missing_reason, got.missing_since, got.last_seen) == (
        "missing",
        "not_found",
        now,
        now + 60,
    )
    assert get(harness, b.id).state == "present" and get(harness, oid).state == "present"
    assert get(harness, c.id).missing_since == 5.0
    assert only(events, "file.missing") == [
        ev(
            "file.missing",
            id=a.id,
            root=harness.root.display,
            path=os.fsencode(files[0]),
            reason="not_found",
        )
    ]
    assert o.exists()


def test_two_known_files_an_inode_names_are_ambiguous_and_neither_moves(
    harness: Harness, tree: Path
) -> None:
    """Two known files (hard links) both moved off their paths, one of them seen at a new path: no id moves, the ambiguity is logged with that path, and the path is a new file."""
    a = write(tree / "a.txt", b"linked")
    b = tree / "b.txt"
    os.link(a, b)
    harness.sweep()
    aid, bid = row_at(harness, a).id, row_at(harness, b).id
    c = tree / "c.txt"
    os.rename(a, c)
    b.unlink()
    with logged() as events:
        got = observe(harness, b"c.txt", sig_of(c), roots={harness.root.id: harness.root})
    assert got not in (None, aid, bid)
    assert only(events, "file.ambiguous") == [
        ev(
            "file.ambiguous",
            path=os.fsencode(c),
            rule="inode",
            candidates=[aid, bid],
            reason="several files moved here",
        )
    ]


def test_a_match_that_no_longer_holds_may_find_another_known_file(
    harness: Harness, tree: Path
) -> None:
    """Looked at again, the destination is still compared with every known file by inode: a file moved there while nobody watched keeps its id."""
    s = write(tree / "s.txt", b"s")
    x = write(tree / "a" / "x.txt", b"x")
    harness.sweep()
    seen, known = row_at(harness, s), row_at(harness, x)
    run(harness, lambda c: catalog.set_hash(c, seen.id, seen.signature, b"0" * 16))
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    roots = {harness.root.id: harness.root}
    got = move(harness, b"s.txt", b"b/y.txt", sig_of(y), matched=seen, by="inode", roots=roots)
    assert got == known.id and row_at(harness, y).id == known.id
    assert row_at(harness, s).id == seen.id


def test_a_backup_said_deleted_is_not_looked_at(harness: Harness, tree: Path) -> None:
    """Without ``keep_backup`` the backup is taken as deleted: a file at its name again is left to its own event, and the id is home."""
    f, backup, known, since = aside(harness, tree)
    assert save(harness, since=since, keep=False) == known.id
    assert harness.at(backup) is None
    assert row_at(harness, f).id == known.id


def test_a_new_file_rewritten_before_the_save_is_applied_gets_its_last_signature(
    harness: Harness, tree: Path
) -> None:
    """The interim id retired into the old one, and the file written again since: the old id is home with the signature on disk now, as a change."""
    f, backup, known, since = aside(harness, tree)
    interim = observe(harness, b"d/f.txt", sig_of(f), since)
    write(f, b"version three, longer still")
    backup.unlink()
    assert save(harness, since=since, keep=False) == known.id
    home = get(harness, known.id)
    assert (home.path, home.signature) == (b"d/f.txt", sig_of(f))
    assert [k for k, *_ in history(harness, known.id)][-2:] == ["move", "change"]
    assert catalog.get_file(harness.reader, interim or 0) is None


def test_a_save_whose_new_file_went_leaves_the_interim_id_to_its_own_event(
    harness: Harness, tree: Path
) -> None:
    """The new ``f`` recorded, then deleted before the save is applied: nothing is decided at ``f``; its deletion, applied next, makes it missing with reason deleted."""
    f, backup, known, since = aside(harness, tree)
    interim = observe(harness, b"d/f.txt", sig_of(f), since)
    assert interim is not None
    f.unlink()
    backup.unlink()
    assert save(harness, since=since, keep=False) is None
    assert get(harness, known.id).missing_reason == "deleted"
    assert get(harness, interim).state == "present"
    assert gone(harness, b"d/f.txt", "deleted", time.time()) == 1
    assert get(harness, interim).missing_reason == "deleted"


def test_a_save_the_catalog_cannot_pair_still_finds_a_file_by_inode(
    harness: Harness, tree: Path
) -> None:
    """The backup unknown: the new ``f`` is decided as any path is, the inode rule included."""
    k = write(tree / "d" / "k.txt", b"k")
    harness.sweep()
    known = row_at(harness, k)
    f = tree / "d" / "f.txt"
    os.rename(k, f)
    assert save(harness, since=time.time(), keep=False) == known.id
    assert row_at(harness, f).id == known.id


def test_a_stale_match_in_a_listing_is_decided_against_every_root(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """A sweep's inode match that no longer holds when applied: the path is looked at again against all roots, and a file moved there from another root keeps its id."""
    (tmp_path / "other").mkdir()
    other = harness.add_root(tmp_path / "other")
    s = write(tree / "s.txt", b"s")
    x = write(tmp_path / "other" / "x.txt", b"x")
    harness.sweep()
    harness.sweep(root=other)
    seen, known = row_at(harness, s), catalog.file_at(harness.reader, other.id, b"x.txt")
    assert known is not None
    run(harness, lambda c: catalog.set_hash(c, seen.id, seen.signature, b"0" * 16))
    y = tree / "b" / "y.txt"
    y.parent.mkdir()
    os.rename(x, y)
    diff = compare(harness, listing(harness, b"b"))
    diff = DirDiff(
        b"b",
        diff.stamp,
        [],
        [],
        [],
        [],
        found=[(b"y.txt", sig_of(y), seen, harness.root.id)],
        digest=diff.digest,
        listed=1,
        ident=diff.ident,
    )
    counts, _ = apply(harness, diff, roots={harness.root.id: harness.root, other.id: other})
    assert counts == Tally(moved=1)
    assert row_at(harness, y).id == known.id
    assert row_at(harness, s).id == seen.id


def test_a_file_found_in_another_root_where_a_new_id_was_recorded_meanwhile(
    tmp_path: Path, harness: Harness, tree: Path
) -> None:
    """Found by inode in another root, but a check on access already recorded it there as new: the id at the path stays, and the original is not left present at the path it left."""
    (tmp_path / "other").mkdir()
    other = harness.add_root(tmp_path / "other")
    x = write(tree / "x.txt", b"x")
    harness.sweep()
    known = row_at(harness, x)
    y = tmp_path / "other" / "y.txt"
    os.rename(x, y)
    lst = listing(harness, b"", root=other)
    digest = catalog.files_digest(sorted(lst.files.items()))
    diff = reconcile.diff_listing(lst, [], [], None, digest)
    interim = run(
        harness, lambda c: reconcile.observe_path(c, other, b"y.txt", sig_of(y), time.time())
    )
    diff = DirDiff(
        b"",
        diff.stamp,
        [],
        [],
        [],
        [],
        found=[(b"y.txt", sig_of(y), known, harness.root.id)],
        digest=digest,
        listed=1,
        ident=diff.ident,
    )
    apply(harness, diff, roots={harness.root.id: harness.root, other.id: other}, root=other)
    assert catalog.file_at(harness.reader, other.id, b"y.txt").id == interim  # type: ignore[union-attr]
    gone = get(harness, known.id)
    assert (gone.root, gone.path, gone.state) == (harness.root.id, b"x.txt", "missing")
