"""Everyday tools on a real ext4: restores, editors' saves, copies and deletes keep every id on its own file.

Each story annotates files with a label that names their content, runs the
tool as a user would, and then checks the catalog against the disk: the same
paths, sizes, mtimes, inodes and hashes, every expected id at its path, and
no annotation sitting on another file's content.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import xxhash

from filewarden import catalog
from filewarden.protocol import RpcError
from filewarden.testing import Live
from tests.conftest import make_files, wait_for
from tests.scenarios.conftest import live_daemon
from tests.scenarios.ext4 import ext4_mount, needs, needs_root

pytestmark = [needs_root, needs("mkfs.ext4", "mount", "umount")]

NOT_FOUND = -32002
MTIME_NS = 1_600_000_000 * 10**9  # whole seconds: tar, zip and rsync restore it exactly


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh ext4 (outside /tmp): the daemon's roots, state and ``outside/`` all live on it."""
    with ext4_mount(tmp_path) as mount_point:
        yield mount_point


# -- helpers ---------------------------------------------------------------------------


def wait_hashed(live: Live, timeout: float = 60) -> None:
    """Poll (deadline ``timeout``) until no present file waits for its hash."""
    wait_for(lambda: live.call("status")["hashing"]["pending"] == 0, timeout=timeout, interval=0.05)


def settle(live: Live, done: Callable[[], bool], timeout: float = 30) -> bool:
    """``sync`` and poll ``done()`` until it holds or the deadline passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        live.sync()
        if done():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def nothing_missing(live: Live) -> bool:
    return not live.files("missing")


def annotate(live: Live, labels: dict[str, bytes], path: Path, label: str | None = None) -> int:
    """Give the file at ``path`` a ``name`` annotation naming its content; its id."""
    label = label or path.name
    assert label not in labels, label
    file_id = live.id_of(path)
    live.call("annotate", {"id": file_id, "key": "name", "value": label})
    labels[label] = path.read_bytes()
    return file_id


def journal(live: Live, since: int) -> list[dict[str, Any]]:
    """Every journal entry after ``since``."""
    out: list[dict[str, Any]] = []
    while True:
        page = live.call("changes", {"since": since, "limit": 10000})
        out += page["changes"]
        if not page["changes"]:
            return out
        since = page["seq"]


def seq_now(live: Live) -> int:
    return int(live.call("status")["seq"])


def assert_consistent(live: Live, expected: dict[Path, int], labels: dict[str, bytes]) -> None:
    """Catalog = disk; each present record's size, mtime, inode and hash are its file's; each expected id is at its path; every label sits on its content."""
    live.assert_matches_disk()
    problems: dict[str, list[str]] = {}

    def problem(kind: str, text: str) -> None:
        problems.setdefault(kind, []).append(text)

    for f in live.files("present"):
        p = os.fsencode(f["path"])
        st = os.lstat(p)
        data = Path(os.fsdecode(p)).read_bytes()
        want = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
        want["device"] = st.st_dev
        if "ctime_ns" in f:
            want["ctime_ns"] = st.st_ctime_ns
        got = {k: f[k] for k in want}
        if got != want:
            problem("record differs from lstat", f"{f['path']} (id {f['id']}): {got} != {want}")
        if f["hash"] is not None and f["hash"] != xxhash.xxh3_128_hexdigest(data):
            problem("stored hash is another content's", f"{f['path']} (id {f['id']})")
        label = f["annotations"].get("name")
        if label is not None and labels.get(label) != data:
            problem(
                "annotation on another file's content", f"{f['path']} (id {f['id']}): {label!r}"
            )
    for path, file_id in sorted(expected.items()):
        rec = live.lookup(path)
        if rec is None or rec["state"] != "present" or rec["id"] != file_id:
            have = None if rec is None else (rec["id"], rec["state"], rec["annotations"])
            problem("wrong id at its path", f"{path}: expected {file_id}, catalog has {have}")
    assert not problems, (
        "; ".join(f"{k}: {len(v)}" for k, v in problems.items())
        + "\n"
        + "\n".join(line for v in problems.values() for line in v[:4])
    )


def assert_nothing_missing(live: Live) -> None:
    missing = live.files("missing")
    assert not missing, f"{len(missing)} missing: " + ", ".join(
        f"{f['id']} {f['path']} ({f['missing_reason']})" for f in missing[:10]
    )


def make_album(
    directory: Path, count: int, size: int, *, name: str = "p{:03d}.jpg"
) -> dict[Path, bytes]:
    """``count`` files of ``size`` distinct random bytes, all with one forced mtime."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(count):
        p = directory / name.format(i)
        data = os.urandom(size)
        p.write_bytes(data)
        os.utime(p, ns=(MTIME_NS, MTIME_NS))
        files[p] = data
    return files


def annotate_all(live: Live, paths: Iterable[Path]) -> tuple[dict[Path, int], dict[str, bytes]]:
    """Annotate each file with its folder and name; the ids, and each label's content."""
    labels: dict[str, bytes] = {}
    ids = {p: annotate(live, labels, p, label=f"{p.parent.name}/{p.name}") for p in paths}
    return ids, labels


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run([os.fspath(c) for c in cmd], check=True, cwd=cwd, env=env, timeout=60)


def journal_names(entries: list[dict[str, Any]]) -> set[str]:
    """The base names every entry's path or old path mentions."""
    return {os.path.basename(p) for e in entries for p in (e.get("path"), e.get("old_path")) if p}


# -- restores over freed inodes ----------------------------------------------------------

# backup (cwd = root1), restore (cwd = root1); the album is root1/album.
RESTORES = {
    "tar": (
        ["tar", "-cf", "../outside/t.tar", "album"],
        ["tar", "-xf", "../outside/t.tar", "-C", "."],
    ),
    "rsync": (
        ["rsync", "-a", "album/", "../outside/bk/"],
        ["rsync", "-a", "../outside/bk/", "album/"],
    ),
    "unzip": (
        ["zip", "-q", "-r", "../outside/a.zip", "album"],
        ["unzip", "-q", "-o", "../outside/a.zip", "-d", "."],
    ),
}


@pytest.mark.parametrize(
    "tool",
    [pytest.param(t, marks=needs(*sorted({c[0] for c in RESTORES[t]}))) for t in RESTORES],
)
def test_restore_over_freed_inodes_keeps_each_id(fs: Path, tool: str) -> None:
    """120 equal-size, equal-mtime files deleted and restored from a backup while watched: each path gets exactly its own old id back."""
    backup, restore = RESTORES[tool]

    def fill(roots: list[Path]) -> None:
        make_album(roots[0] / "album", 120, 1000)

    with live_daemon(fs, "watchdog", before_start=fill) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
        run(*backup, cwd=root1)
        for p in album:
            p.unlink()
        live.sync()
        assert len(live.files("missing")) == 120
        run(*restore, cwd=root1)
        live.sync()
        wait_hashed(live)
        live.sync()
        assert_consistent(live, ids, labels)
        assert_nothing_missing(live)


@needs("tar")
def test_tar_restore_while_stopped_keeps_each_id(fs: Path) -> None:
    """The same tar restore over freed inodes done while the daemon is down: each path gets exactly its own old id back."""

    def fill(roots: list[Path]) -> None:
        make_album(roots[0] / "album", 120, 1000)

    with live_daemon(fs, "watchdog", before_start=fill) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
    run("tar", "-cf", fs / "outside" / "t.tar", "-C", root1, "album")
    for p in album:
        p.unlink()
    run("tar", "-xf", fs / "outside" / "t.tar", "-C", root1)
    with live_daemon(fs, "watchdog") as live:
        live.sync()
        wait_hashed(live)
        live.sync()
        assert_consistent(live, ids, labels)
        assert_nothing_missing(live)


@needs("tar")
def test_tar_restore_elsewhere_while_stopped_relinks_by_content(fs: Path) -> None:
    """Extracted into another folder while the daemon is down, each file gets its own old id (by content), never a neighbour's."""

    def fill(roots: list[Path]) -> None:
        make_album(roots[0] / "album", 120, 1000)

    with live_daemon(fs, "watchdog", before_start=fill) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
    run("tar", "-cf", fs / "outside" / "t.tar", "-C", root1, "album")
    for p in album:
        p.unlink()
    (root1 / "restored").mkdir()
    run("tar", "-xf", fs / "outside" / "t.tar", "-C", root1 / "restored")
    with live_daemon(fs, "watchdog") as live:
        settle(live, lambda: nothing_missing(live))
        wait_hashed(live)
        live.sync()
        expected = {root1 / "restored" / "album" / p.name: ids[p] for p in album}
        assert_consistent(live, expected, labels)
        assert_nothing_missing(live)


# -- editors and in-place tools ----------------------------------------------------------


def notes(root: Path, text: bytes = b"line one\nline two\n") -> Path:
    p = root / "notes" / "f.txt"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(text)
    return p


def assert_one_file(live: Live, path: Path, file_id: int) -> None:
    """The catalog, in every state, holds exactly one file: ``file_id``, present at ``path``."""
    rows = [(f["id"], os.path.relpath(f["path"], path.parent), f["state"]) for f in live.files()]
    assert rows == [(file_id, path.name, "present")], f"the catalog holds {rows}"


def assert_journal_names_only(live: Live, since: int, *names: str) -> None:
    """Every journal entry after ``since`` names only files called ``names``."""
    seen = journal_names(journal(live, since))
    assert seen <= set(names), f"the journal names {sorted(seen - set(names))}"


@needs("vim")
@pytest.mark.parametrize("backupcopy", ["auto", "yes"])
def test_vim_save_keeps_the_id(fs: Path, backupcopy: str) -> None:
    """vim's save (backup rename or copy, probe file, swap file) keeps the file's id and annotation, and leaves no other row or journal entry."""
    with live_daemon(fs, "watchdog") as live:
        f = notes(live.roots[0])
        live.sync()
        labels: dict[str, bytes] = {}
        file_id = annotate(live, labels, f, "notes")
        inode = os.lstat(f).st_ino
        before = live.sync()
        run(
            "vim", "-N", "-u", "NONE", "-i", "NONE", "-es",
            "-c", f"set backupcopy={backupcopy}",
            "-c", "sleep 300m",  # the editing session, with the swap file there (under 1 s)
            "-c", "normal Goadded line", "-c", "wq",
            "f.txt", cwd=f.parent, env={**os.environ, "HOME": str(fs / "outside")},
        )  # fmt: skip
        assert f.read_bytes() == b"line one\nline two\nadded line\n"
        assert sorted(os.listdir(f.parent)) == ["f.txt"]
        # auto: f.txt renamed to f.txt~, a new f.txt written; yes: f.txt~ a copy, f.txt rewritten.
        assert (os.lstat(f).st_ino == inode) == (backupcopy == "yes")
        labels["notes"] = f.read_bytes()
        live.sync()
        wait_hashed(live)
        assert_consistent(live, {f: file_id}, labels)
        assert_one_file(live, f, file_id)
        names = journal_names(journal(live, before))
        assert not names & {".f.txt.swp", ".f.txt.swx", "4913"}, (
            f"the journal names {sorted(names)}"
        )


SAVERS = {
    "sed": ["sed", "-i", "s/two/2/", "f.txt"],
    "perl": ["perl", "-pi", "-e", "s/two/2/", "f.txt"],
}


@pytest.mark.parametrize("tool", [pytest.param(t, marks=needs(t)) for t in SAVERS])
def test_in_place_edit_keeps_the_id(fs: Path, tool: str) -> None:
    """sed -i and perl -pi (a temporary file renamed over the file) keep its id and annotation, and leave no other row or journal entry."""
    with live_daemon(fs, "watchdog") as live:
        f = notes(live.roots[0])
        live.sync()
        labels: dict[str, bytes] = {}
        file_id = annotate(live, labels, f, "notes")
        inode = os.lstat(f).st_ino
        before = live.sync()
        run(*SAVERS[tool], cwd=f.parent)
        assert f.read_bytes() == b"line one\nline 2\n"
        assert os.lstat(f).st_ino != inode  # a new file renamed over the old one
        labels["notes"] = f.read_bytes()
        live.sync()
        wait_hashed(live)
        assert_consistent(live, {f: file_id}, labels)
        assert_one_file(live, f, file_id)
        assert_journal_names_only(live, before, "f.txt")


ATOMIC_SAVE = """
import os, sys, time
d, new = sys.argv[1], sys.argv[2].encode()
lock = os.path.join(d, ".~lock.f.odt#")
with open(lock, "w") as f:
    f.write("user,host,/home/user,30.11.2026 12:00;")
time.sleep(0.2)  # the document is open (LibreOffice holds the lock through the session)
tmp = os.path.join(d, ".f.odt.Xq3Zr1")
with open(tmp, "wb") as f:
    f.write(new)
    f.flush()
    os.fsync(f.fileno())
os.rename(tmp, os.path.join(d, "f.odt"))
os.unlink(lock)
"""


def test_temp_then_rename_save_with_lock_file_keeps_the_id(fs: Path) -> None:
    """A save through a temporary file renamed over the document, with a lock file while it runs, keeps the id; neither the lock nor the temporary file leaves a row or journal entry."""
    with live_daemon(fs, "watchdog") as live:
        doc = live.roots[0] / "docs" / "f.odt"
        doc.parent.mkdir()
        doc.write_bytes(os.urandom(3000))
        live.sync()
        labels: dict[str, bytes] = {}
        file_id = annotate(live, labels, doc, "doc")
        before = live.sync()
        new = os.urandom(16).hex() * 200
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", ATOMIC_SAVE, str(doc.parent), new], check=True)
        assert time.monotonic() - started < 1.0
        assert sorted(os.listdir(doc.parent)) == ["f.odt"]
        labels["doc"] = new.encode()
        live.sync()
        wait_hashed(live)
        assert_consistent(live, {doc: file_id}, labels)
        assert_one_file(live, doc, file_id)
        assert_journal_names_only(live, before, "f.odt")


@needs("emacs")
def test_emacs_save_keeps_the_id_and_its_backup_is_a_new_file(fs: Path, tmp_path: Path) -> None:
    """emacs renames f.txt to f.txt~ (kept) and writes a new f.txt: f.txt keeps its id and annotation, f.txt~ is a new file."""
    with live_daemon(fs, "watchdog") as live:
        f = notes(live.roots[0])
        live.sync()
        labels: dict[str, bytes] = {}
        file_id = annotate(live, labels, f, "notes")
        inode = os.lstat(f).st_ino
        run(
            "emacs", "--batch", "-Q", "f.txt", "--eval",
            '(progn (goto-char (point-max)) (insert "more\\n") (save-buffer))',
            cwd=f.parent, env={**os.environ, "HOME": str(tmp_path)},
        )  # fmt: skip
        backup = f.parent / "f.txt~"
        assert backup.read_bytes() == b"line one\nline two\n"
        assert os.lstat(backup).st_ino == inode  # renamed, not copied
        assert f.read_bytes() == b"line one\nline two\nmore\n"
        labels["notes"] = f.read_bytes()
        live.sync()
        wait_hashed(live)
        assert_consistent(live, {f: file_id}, labels)
        rec = live.lookup(backup)
        assert rec is not None and rec["state"] == "present"
        assert rec["id"] != file_id and rec["annotations"] == {}
        assert_nothing_missing(live)
        assert len(live.files()) == 2


# -- attributes ---------------------------------------------------------------------------


def catalog_ctime(fs: Path, file_id: int) -> int:
    """The ctime the catalog holds for a file (the record does not carry it)."""
    conn = catalog.connect(fs / "state" / "catalog.db", readonly=True)
    try:
        return int(next(conn.execute("SELECT ctime_ns FROM files WHERE id = ?", (file_id,)))[0])
    finally:
        conn.close()


@needs("touch", "chmod")
def test_attribute_changes_are_seen_live_and_keep_moves_found_by_inode(fs: Path) -> None:
    """touch -m and chmod while watched update the record's mtime and ctime; moved and renamed while the daemon is down, both files keep their ids."""

    def fill(roots: list[Path]) -> None:
        for name in ("a.jpg", "b.jpg"):
            (roots[0] / name).write_bytes(os.urandom(5000))

    with live_daemon(fs, "watchdog", before_start=fill) as live:
        root1 = live.roots[0]
        a, b = root1 / "a.jpg", root1 / "b.jpg"
        wait_hashed(live)
        labels: dict[str, bytes] = {}
        ids = {a: annotate(live, labels, a), b: annotate(live, labels, b)}
        run("touch", "-m", "-d", "2020-01-02 03:04:05", a)
        run("chmod", "600", b)
        live.sync()
        for p in (a, b):
            rec = live.lookup(p)
            assert rec is not None
            st = os.lstat(p)
            assert rec["mtime_ns"] == st.st_mtime_ns, (p.name, rec["mtime_ns"], st.st_mtime_ns)
            ctime = rec["ctime_ns"] if "ctime_ns" in rec else catalog_ctime(fs, rec["id"])
            assert ctime == st.st_ctime_ns, (p.name, ctime, st.st_ctime_ns)
        assert_consistent(live, ids, labels)
    other = root1 / "other"
    other.mkdir()
    a.rename(other / "x1.jpg")
    b.rename(other / "x2.jpg")
    with live_daemon(fs, "watchdog") as live:
        live.sync()
        assert_consistent(live, {other / "x1.jpg": ids[a], other / "x2.jpg": ids[b]}, labels)
        assert_nothing_missing(live)


# -- a burst: mkdir, then a move into it at once -----------------------------------------

WATCHERS = ["watchdog"] + (["pyinotify"] if importlib.util.find_spec("pyinotify") else [])


@pytest.mark.parametrize("backend", WATCHERS)
def test_burst_with_mkdir_then_move_into_it_keeps_every_id(fs: Path, backend: str) -> None:
    """New files, renames and a directory moved into a just-made directory, all at once: every original file keeps its id and annotation (three rounds)."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0], 200, per_dir=10)

    with live_daemon(fs, backend, before_start=fill) as live:
        root1 = live.roots[0]
        originals = sorted(p for p in root1.rglob("*.txt"))
        labels: dict[str, bytes] = {}
        ids = {p: annotate(live, labels, p, label=p.name) for p in originals}
        for r in range(3):
            moving = root1 / f"d{r + 1:04d}"
            renaming = [p for p in sorted(ids) if p.parent.name == f"d{r + 10:04d}"]
            renaming += [p for p in sorted(ids) if p.parent.name == "d0019"][:5]
            assert len(renaming) == 15
            # As fast as possible, in one go:
            new = root1 / f"new{r}"
            new.mkdir()
            for i in range(25):
                (new / f"n{i:02d}.txt").write_bytes(b"new %d %d\n" % (r, i))
            renamed = {p: p.with_name(f"r{r}-{p.name}") for p in renaming}
            for src, dst in renamed.items():
                src.rename(dst)
            os.mkdir(root1 / f"moved{r}")
            os.rename(moving, root1 / f"moved{r}" / moving.name)
            live.sync()
            for src, dst in renamed.items():
                ids[dst] = ids.pop(src)
            for p in [p for p in ids if p.parent == moving]:
                ids[root1 / f"moved{r}" / moving.name / p.name] = ids.pop(p)
            assert_consistent(live, ids, labels)
            assert_nothing_missing(live)


# -- a FUSE root, polled -----------------------------------------------------------------


@needs("bindfs", "fusermount")
def test_rename_under_a_bindfs_root_keeps_the_id(fs: Path) -> None:
    """A file renamed in the directory a bindfs root shows (so only polling sees it) keeps its id and annotation."""
    back = fs / "back"
    back.mkdir()
    for i in range(20):
        (back / f"f{i:02d}.dat").write_bytes(os.urandom(1000 + 37 * i))
    mounted: list[Path] = []

    def bind(roots: list[Path]) -> None:
        subprocess.run(["bindfs", str(back), str(roots[0])], check=True)
        mounted.append(roots[0])

    try:
        with live_daemon(fs, "watchdog", before_start=bind) as live:
            root1 = live.roots[0]
            entry = next(r for r in live.call("status")["roots"] if r["path"] == str(root1))
            assert entry["backend"] == "poll", entry
            wait_hashed(live)
            ids, labels = annotate_all(live, sorted(root1.iterdir()))
            os.rename(back / "f07.dat", back / "renamed.dat")

            def renamed() -> bool:
                old = live.lookup(root1 / "f07.dat")
                new = live.lookup(root1 / "renamed.dat")
                return (old is None or old["state"] != "present") and (
                    new is not None and new["state"] == "present"
                )

            assert settle(live, renamed), "the rename never reached the catalog"
            ids[root1 / "renamed.dat"] = ids.pop(root1 / "f07.dat")
            assert_consistent(live, ids, labels)
            assert_nothing_missing(live)
    finally:
        for p in mounted:
            subprocess.run(["fusermount", "-u", str(p)], check=False)
            if os.path.ismount(p):
                subprocess.run(["umount", "-l", str(p)], check=False)


# -- copies and deletes on one filesystem ------------------------------------------------


def album_with_daemon(fs: Path, count: int) -> AbstractContextManager[Live]:
    """A daemon over root1/album: ``count`` files of 4096 random bytes with one mtime."""

    def fill(roots: list[Path]) -> None:
        make_album(roots[0] / "album", count, 4096)

    return live_daemon(fs, "watchdog", before_start=fill)


def retired(live: Live, file_id: int) -> bool:
    """The id is gone from the catalog (``file`` answers not found)."""
    try:
        live.call("file", {"id": file_id})
    except RpcError as exc:
        assert exc.code == NOT_FOUND, exc
        return True
    return False


@needs("cp", "rm")
def test_copy_then_delete_on_one_filesystem_keeps_the_ids(fs: Path) -> None:
    """cp -a of an album, then rm -rf of the original a little later: each copy takes its original's id and annotation; the copies' own ids are retired into them."""
    with album_with_daemon(fs, 30) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
        run("cp", "-a", root1 / "album", root1 / "album2")
        live.sync()
        interim = {p: live.id_of(root1 / "album2" / p.name) for p in album}
        assert not set(interim.values()) & set(ids.values())
        time.sleep(2)  # the scenario's gap between the copy and the delete, not a synchronisation
        before = seq_now(live)
        run("rm", "-rf", root1 / "album")
        live.sync()
        settle(live, lambda: nothing_missing(live), 20)
        wait_hashed(live)
        expected = {root1 / "album2" / p.name: ids[p] for p in album}
        assert_consistent(live, expected, labels)
        assert_nothing_missing(live)
        assert [p.name for p in album if not retired(live, interim[p])] == []
        retires = {e["id"]: e.get("into") for e in journal(live, before) if e["kind"] == "retire"}
        assert retires == {interim[p]: ids[p] for p in album}


@needs("cp", "rm")
def test_delete_then_restore_copy_relinks_by_content(fs: Path) -> None:
    """Backed up with cp -a, deleted, a new file written, then copied back under another name: each file gets its own old id (by content), never a neighbour's."""
    with album_with_daemon(fs, 30) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
        run("cp", "-a", root1 / "album", fs / "outside" / "bk")
        run("rm", "-rf", root1 / "album")
        live.sync()
        assert len(live.files("missing")) == 30
        # Life goes on before the restore: a new file takes the first inode the album freed.
        (root1 / "todo.txt").write_bytes(b"restore the album\n")
        run("cp", "-a", fs / "outside" / "bk", root1 / "album-restored")
        live.sync()
        settle(live, lambda: nothing_missing(live), 20)
        wait_hashed(live)
        expected = {root1 / "album-restored" / p.name: ids[p] for p in album}
        assert_consistent(live, expected, labels)
        assert_nothing_missing(live)


def shift_catalog(fs: Path, seconds: float) -> None:
    """Move every file's first and last seen back by ``seconds`` (the daemon stopped)."""
    conn = catalog.connect(fs / "state" / "catalog.db")
    with conn:
        conn.execute(
            "UPDATE files SET first_seen = first_seen - ?, last_seen = last_seen - ?",
            (seconds, seconds),
        )
    conn.close()


def set_first_seen(fs: Path, file_id: int, when: float) -> None:
    """The file arrived at ``when`` (the daemon stopped)."""
    conn = catalog.connect(fs / "state" / "catalog.db")
    with conn:
        conn.execute(
            "UPDATE files SET first_seen = ?, last_seen = max(last_seen, ?) WHERE id = ?",
            (when, when, file_id),
        )
    conn.close()


@pytest.mark.parametrize("copy_age_h", [2, 8 * 24])
def test_copy_then_delete_hours_apart(fs: Path, copy_age_h: int) -> None:
    """A copy made on another root hours before the original is deleted takes the original's id (Syncthing's add-then-delete); one older than the match window (7 d) does not."""
    content = os.urandom(50_000)

    def fill(roots: list[Path]) -> None:
        (roots[0] / "a.flac").write_bytes(content)

    with live_daemon(fs, "watchdog", before_start=fill) as live:
        original, copy = live.roots[0] / "a.flac", live.roots[1] / "a.flac"
        wait_hashed(live)
        labels: dict[str, bytes] = {}
        orig_id = annotate(live, labels, original, "song")
        shutil.copy2(original, copy)
        live.sync()
        copy_id = live.id_of(copy)
        assert copy_id != orig_id
        wait_hashed(live)
    # Catalog time passes: the original was last seen before the copy arrived.
    now = time.time()
    shift_catalog(fs, 3 * 3600 if copy_age_h < 24 else 9 * 86400)
    set_first_seen(fs, copy_id, now - copy_age_h * 3600)
    with live_daemon(fs, "watchdog") as live:
        live.sync()
        before = seq_now(live)
        original.unlink()
        live.sync()
        if copy_age_h < 24:
            settle(live, lambda: live.call("file", {"id": orig_id})["state"] != "missing", 20)
            wait_hashed(live)
            assert_consistent(live, {copy: orig_id}, labels)
            assert_nothing_missing(live)
            assert live.lookup(copy)["annotations"] == {"name": "song"}  # type: ignore[index]
            assert retired(live, copy_id)
            retires = [e for e in journal(live, before) if e["kind"] == "retire"]
            assert [(e["id"], e.get("into")) for e in retires] == [(copy_id, orig_id)]
        else:
            wait_hashed(live)
            live.sync()
            assert_consistent(live, {copy: copy_id}, labels)
            assert live.lookup(copy)["annotations"] == {}  # type: ignore[index]
            assert live.call("file", {"id": orig_id})["state"] == "missing"


@needs("cp")
def test_copy_without_delete_is_two_files(fs: Path) -> None:
    """cp -a of an album with nothing deleted: the copies are new ids, the originals keep theirs (guard)."""
    with album_with_daemon(fs, 30) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
        run("cp", "-a", root1 / "album", root1 / "album2")
        live.sync()
        wait_hashed(live)
        live.sync()
        copies = {root1 / "album2" / p.name: live.id_of(root1 / "album2" / p.name) for p in album}
        assert len(set(copies.values()) | set(ids.values())) == 60
        assert_consistent(live, ids | copies, labels)
        assert_nothing_missing(live)
        assert all(live.lookup(p)["annotations"] == {} for p in copies)  # type: ignore[index]


@needs("cp", "rm")
def test_annotated_copy_is_never_merged(fs: Path) -> None:
    """Copies that got annotations of their own keep their ids when the originals are deleted; the originals stay missing (guard)."""
    with album_with_daemon(fs, 3) as live:
        root1 = live.roots[0]
        album = sorted((root1 / "album").iterdir())
        wait_hashed(live)
        ids, labels = annotate_all(live, album)
        run("cp", "-a", root1 / "album", root1 / "album2")
        live.sync()
        copies = {c: annotate(live, labels, c, f"copy {c.name}") for c in root1.glob("album2/*")}
        time.sleep(2)  # the scenario's gap between the copy and the delete, not a synchronisation
        run("rm", "-rf", root1 / "album")
        live.sync()
        wait_hashed(live)
        live.sync()
        assert_consistent(live, copies, labels)
        assert sorted(f["id"] for f in live.files("missing")) == sorted(ids.values())
