"""Live changes reach the catalog with ids kept, on every backend (poll: through sweeps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.testing import Live
from tests.conftest import make_files, wait_for
from tests.scenarios.conftest import live_daemon


def test_rename_keeps_id(live: Live) -> None:
    """A renamed file keeps its id at its new name."""
    a = live.roots[0] / "a.jpg"
    a.write_bytes(b"photo")
    live.sync()
    file_id = live.id_of(a)
    a.rename(live.roots[0] / "b.jpg")
    live.sync()
    assert live.id_of(live.roots[0] / "b.jpg") == file_id
    assert live.lookup(a) is None
    history = live.call("file", {"id": file_id})["history"]
    # Watched, the rename event moves it; polled, the next sweep finds it by its inode.
    assert history[-1]["kind"] == "move" and history[-1]["old_path"] == str(a)
    assert history[-1].get("by") == ("inode" if live.backend == "poll" else None)
    live.assert_matches_disk()


def test_move_across_directories_keeps_id(live: Live) -> None:
    """A file moved into another directory keeps its id."""
    src = live.roots[0] / "one" / "x.txt"
    src.parent.mkdir()
    (live.roots[0] / "two").mkdir()
    src.write_text("x")
    live.sync()
    file_id = live.id_of(src)
    src.rename(live.roots[0] / "two" / "x.txt")
    live.sync()
    assert live.id_of(live.roots[0] / "two" / "x.txt") == file_id
    live.assert_matches_disk()


def test_move_across_roots_keeps_id(live: Live) -> None:
    """A file moved from one root to another (same filesystem) keeps its id and its annotations."""
    src = live.roots[0] / "song.flac"
    src.write_bytes(b"music" * 100)
    live.sync()
    file_id = live.id_of(src)
    live.call("annotate", {"id": file_id, "key": "plays", "value": "42"})
    dst = live.roots[1] / "song.flac"
    src.rename(dst)
    live.sync()
    rec = live.lookup(dst)
    assert rec is not None and rec["id"] == file_id and rec["root"] == str(live.roots[1])
    assert rec["annotations"] == {"plays": "42"}
    assert live.lookup(src) is None
    status = {r["path"]: r["files"] for r in live.call("status")["roots"]}
    assert status[str(live.roots[0])]["present"] == 0 and status[str(live.roots[1])]["present"] == 1
    live.assert_matches_disk()


def test_directory_rename_with_10000_files_keeps_every_id(tmp_path: Path) -> None:
    """Renaming a directory of 10,000 files keeps all 10,000 ids (watched: one catalog update)."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0] / "album", 10_000, per_dir=2_500)

    with live_daemon(tmp_path, "watchdog", roots=1, before_start=fill) as live:
        before = {f["path"]: f["id"] for f in live.files("present")}
        assert len(before) == 10_000
        (live.roots[0] / "album").rename(live.roots[0] / "album-2026")
        live.sync()
        after = {f["path"]: f["id"] for f in live.files("present")}
        old, new = str(live.roots[0] / "album") + "/", str(live.roots[0] / "album-2026") + "/"
        assert after == {p.replace(old, new, 1): i for p, i in before.items()}
        moves = [e for e in live.proc.events if e["event"] == "dir.move"]
        assert len(moves) == 1 and moves[0]["files"] == 10_000
        assert not [e for e in live.proc.events if e["event"] in ("file.new", "file.missing")]


def test_rename_then_edit(live: Live) -> None:
    """A renamed file that is then written is the same id with the new size (watched)."""
    a = live.roots[0] / "doc.txt"
    a.write_text("first")
    live.sync()
    file_id = live.id_of(a)
    b = live.roots[0] / "doc-renamed.txt"
    a.rename(b)
    with open(b, "a") as f:
        f.write(" and more")
    live.sync()
    rec = live.lookup(b)
    assert rec is not None and rec["size"] == len("first and more")
    if live.backend == "poll":
        # Seen only by a sweep, a rename plus an edit is the documented limit
        # of relinking by inode (size and mtime must match): a new file.
        assert rec["id"] != file_id
        assert live.call("file", {"id": file_id})["state"] == "missing"
    else:
        assert rec["id"] == file_id
    live.assert_matches_disk()


def test_create_write_close(live: Live) -> None:
    """A file written in several steps is catalogued with its final size after the close."""
    p = live.roots[0] / "big.bin"
    with open(p, "wb") as f:
        for _ in range(10):
            f.write(b"x" * 4096)
            f.flush()
    live.sync()
    rec = live.lookup(p)
    assert rec is not None and rec["size"] == 40960
    kinds = [h["kind"] for h in live.call("file", {"id": rec["id"]})["history"]]
    assert kinds[0] == "new" and "missing" not in kinds
    live.assert_matches_disk()


def test_delete_marks_missing(live: Live) -> None:
    """A deleted file is missing (reason deleted when watched, not_found when polled), id kept."""
    p = live.roots[0] / "gone.txt"
    p.write_text("bye")
    live.sync()
    file_id = live.id_of(p)
    p.unlink()
    live.sync()
    rec = live.lookup(p)
    assert rec is not None and rec["id"] == file_id and rec["state"] == "missing"
    assert rec["missing_reason"] == ("not_found" if live.backend == "poll" else "deleted")
    live.assert_matches_disk()


def test_move_to_excluded_path(live: Live) -> None:
    """A file moved into an excluded directory is missing (moved_out when watched)."""
    (live.roots[0] / "excluded").mkdir()
    p = live.roots[0] / "keep.txt"
    p.write_text("k")
    live.sync()
    file_id = live.id_of(p)
    p.rename(live.roots[0] / "excluded" / "keep.txt")
    live.sync()
    rec = live.call("file", {"id": file_id})
    assert rec["state"] == "missing"
    assert rec["missing_reason"] == ("not_found" if live.backend == "poll" else "moved_out")
    live.assert_matches_disk()


def test_move_out_of_all_roots(live: Live, tmp_path: Path) -> None:
    """A file and a directory moved outside every root are missing (moved_out when watched)."""
    p = live.roots[0] / "leaving.txt"
    p.write_text("l")
    make_files(live.roots[0] / "leaving-dir", 5)
    live.sync()
    file_id = live.id_of(p)
    p.rename(tmp_path / "outside" / "leaving.txt")
    (live.roots[0] / "leaving-dir").rename(tmp_path / "outside" / "leaving-dir")
    live.sync()
    reason = "not_found" if live.backend == "poll" else "moved_out"
    rec = live.call("file", {"id": file_id})
    assert rec["state"] == "missing" and rec["missing_reason"] == reason
    missing = live.files("missing")
    assert len(missing) == 6 and {f["missing_reason"] for f in missing} == {reason}
    live.assert_matches_disk()


def test_moved_in_from_outside_is_new(live: Live, tmp_path: Path) -> None:
    """Files and a directory moved in from outside every root are new files."""
    (tmp_path / "outside" / "in.txt").write_text("in")
    make_files(tmp_path / "outside" / "in-dir", 7)
    (tmp_path / "outside" / "in.txt").rename(live.roots[1] / "in.txt")
    (tmp_path / "outside" / "in-dir").rename(live.roots[1] / "in-dir")
    live.sync()
    assert live.lookup(live.roots[1] / "in.txt") is not None
    assert len(live.files("present")) == 8
    live.assert_matches_disk()


def test_directory_move_then_changes_inside(live: Live) -> None:
    """After a directory move, files created, renamed and deleted inside it are followed."""
    make_files(live.roots[0] / "d", 4)
    live.sync()
    keep = live.id_of(live.roots[0] / "d" / "d0000" / "f00001.txt")
    (live.roots[0] / "d").rename(live.roots[0] / "e")
    base = live.roots[0] / "e" / "d0000"
    (base / "f00000.txt").unlink()
    (base / "f00001.txt").rename(base / "renamed.txt")
    (base / "fresh.txt").write_text("fresh")
    live.sync()
    assert live.id_of(base / "renamed.txt") == keep
    live.assert_matches_disk()


def test_cookie_files_never_catalogued(live: Live) -> None:
    """sync's cookie files never appear in the catalog, whatever the sweeps find."""
    for _ in range(5):
        live.sync()
    live.call("scan", {"wait": True})
    assert not [f for f in live.files() if ".filewarden-sync-" in f["path"]]


def test_hostile_names_live(live: Live) -> None:
    """Non-UTF-8 names and newlines are followed live too (a backend must not choke on them)."""
    base = os.fsencode(live.roots[0])
    os.mkdir(base + b"/d\xe9")
    with open(base + b"/d\xe9/caf\xe9\n.jpg", "wb") as f:
        f.write(b"x")
    live.sync()
    rec = live.call("lookup", {"path": os.fsdecode(base + b"/d\xe9/caf\xe9\n.jpg")})
    assert rec is not None
    os.rename(base + b"/d\xe9/caf\xe9\n.jpg", base + b"/d\xe9/\xff.jpg")
    live.sync()
    moved = live.call("lookup", {"path": os.fsdecode(base + b"/d\xe9/\xff.jpg")})
    assert moved is not None and moved["id"] == rec["id"]
    live.assert_matches_disk()


@pytest.mark.parametrize("backend", ["watchdog", "pyinotify"])
def test_status_reports_backend_and_mode(tmp_path: Path, backend: str) -> None:
    """status shows each watched root's backend and mode."""
    if backend == "pyinotify":
        pytest.importorskip("pyinotify")
    with live_daemon(tmp_path, backend) as live:
        roots = live.call("status")["roots"]
        assert {(r["backend"], r["mode"]) for r in roots} == {(backend, "watch")}


def test_rename_onto_a_missing_files_path_keeps_its_own_id(live: Live) -> None:
    """A known file renamed onto the path of a missing one keeps its id; the missing one stays missing.

    Seen live, the rename says so; polled, the file's inode and its known
    content (hashed) outweigh the path (same path first otherwise).
    """
    old = live.roots[0] / "old.dat"
    old.write_bytes(b"the first file")
    live.sync()
    first = live.id_of(old)
    old.unlink()
    live.sync()
    new = live.roots[0] / "new.dat"
    new.write_bytes(b"another file, longer")
    live.sync()
    second = live.id_of(new)
    wait_for(lambda: (r := live.lookup(new)) is not None and r["hash"] is not None, timeout=60)
    new.rename(old)
    live.sync()
    assert live.id_of(old) == second
    assert live.call("file", {"id": first})["state"] == "missing"
    live.assert_matches_disk()
    # A new, unknown file at that path later is the missing one coming back (same path).
    old.unlink()
    live.sync()
    old.write_bytes(b"back")
    live.sync()
    assert live.id_of(old) in (first, second)
