"""The walker process and the bulk first index: same catalog, whatever walks and however it ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from filewarden import catalog
from filewarden.catalog import Catalog
from filewarden.walk import SweepAborted, WalkProcess
from tests.conftest import Harness, logged, make_files, wait_for
from tests.daemon_inproc import Live


@pytest.fixture
def away() -> Iterator[WalkProcess]:
    process = WalkProcess(hand_over_files=1)
    yield process
    process.close()


class Hook:
    """A sweep's progress that calls ``then`` once ``at`` files are listed."""

    def __init__(self, at: int, then: Callable[[], None]) -> None:
        self.at, self.then = at, then
        self.total: int | None = None
        self.kind = ""
        self._done = 0
        self.called = False

    @property
    def done(self) -> int:
        return self._done

    @done.setter
    def done(self, value: int) -> None:
        self._done = value
        if value >= self.at and not self.called:
            self.called = True
            self.then()


def on_disk(tree: Path) -> dict[str, tuple[int, int]]:
    return {
        os.path.relpath(os.path.join(d, name), tree): (
            os.lstat(os.path.join(d, name)).st_size,
            os.lstat(os.path.join(d, name)).st_ino,
        )
        for d, _, names in os.walk(tree)
        for name in names
    }


def in_catalog(h: Harness) -> dict[str, tuple[int, int]]:
    return {os.fsdecode(r.path): (r.size, r.inode) for r in h.files("present")}


def inode_index(h: Harness) -> bool:
    return bool(list(h.reader.execute("SELECT 1 FROM sqlite_master WHERE name = 'files_inode'")))


def test_a_resweep_walked_by_two_processes_finds_every_change(
    tmp_path: Path, tree: Path, away: WalkProcess
) -> None:
    """The sweep's thread and the walker process each take every other subtree; together
    they see edits, deletions, new files and a renamed directory, as one walker would."""
    paths = make_files(tree, 400, per_dir=10)
    h = Harness(tmp_path / "state", tree, away=away)
    try:
        first = h.sweep()
        assert (first.new, first.files, first.dirs_listed) == (400, 400, 41)
        ids = {os.fsdecode(r.path): r.id for r in h.files()}
        for i in (3, 57, 158, 222, 391):  # an edit in subtrees on both sides
            with open(paths[i], "ab") as f:
                f.write(b"edited")
        for i in (14, 115, 276):
            paths[i].unlink()
        (tree / "d0007" / "new.txt").write_text("new")
        (tree / "d0030" / "new.txt").write_text("new too")
        (tree / "d0020").rename(tree / "d0020-renamed")
        tally = h.sweep(racy_ns=0)
        assert (tally.files, tally.dirs_listed) == (399, 41)
        assert (tally.changed, tally.new, tally.moved, tally.missing) == (5, 2, 10, 3)
        assert in_catalog(h) == on_disk(tree)
        # Every file kept its id, the moved ones too.
        now = {os.fsdecode(r.path).replace("d0020-renamed/", "d0020/"): r.id for r in h.files()}
        assert {p: i for p, i in now.items() if "new.txt" not in p} == ids
        assert away.started == 1  # one process for both sweeps
        assert h.sweep().new == 0
    finally:
        h.close()


def test_a_stopped_walk_marks_nothing_missing_and_the_process_walks_the_next(
    tmp_path: Path, tree: Path, away: WalkProcess
) -> None:
    make_files(tree, 3000, per_dir=100)
    h = Harness(tmp_path / "state", tree, away=away)
    try:
        h.sweep()
        shutil.rmtree(tree / "d0029")
        hook = Hook(200, h.stop.set)
        with pytest.raises(SweepAborted, match="daemon stopping"):
            h.sweep(progress=hook)
        assert hook.called
        assert h.counts() == (3000, 0, 0)  # nothing missing from a sweep cut short
        h.stop.clear()
        assert h.sweep().missing == 100
        assert in_catalog(h) == on_disk(tree)
        assert away.started == 1
    finally:
        h.close()


@pytest.mark.slow
def test_a_walker_process_that_dies_ends_its_sweep_and_the_next_starts_another(
    tmp_path: Path, tree: Path, away: WalkProcess
) -> None:
    """Killed mid-walk, after its first answer (a first index: its diffs are more than the
    socket holds, so it cannot have finished): the sweep aborts with the reason; the next
    sweep starts a new process and completes. Killed before it answered, its share is walked
    here instead (see the test below)."""
    make_files(tree, 20_000, per_dir=200)
    h = Harness(tmp_path / "state", tree, away=away)
    try:

        def kill() -> None:
            assert away._proc is not None
            away._proc.send_signal(signal.SIGKILL)

        # 200 files are listed here (d0000) before the walk goes away: 201 is its answer.
        with pytest.raises(SweepAborted, match="walker process ended"):
            h.sweep(progress=Hook(201, kill))
        present, missing, _ = h.counts()
        assert present < 20_000 and missing == 0  # what was committed before it died stays
        tally = h.sweep()
        assert tally.new == 20_000 - present and tally.missing == 0
        assert away.started == 2
        assert in_catalog(h) == on_disk(tree)
    finally:
        h.close()


def test_a_first_index_into_an_empty_catalog_builds_the_inode_index_after_its_rows(
    tmp_path: Path, tree: Path, away: WalkProcess
) -> None:
    """While the rows go in, the index is not there and a lookup by inode finds nothing
    (no scan of every row); it is there when the index ends, and the inode rule works."""
    paths = make_files(tree, 300)
    h = Harness(tmp_path / "state", tree, away=away)
    seen: list[tuple[bool, list[catalog.FileRow]]] = []

    def during() -> None:
        st = os.lstat(paths[0])
        found = catalog.files_with_inode(h.reader, st.st_dev, st.st_ino)
        seen.append((inode_index(h), found))

    try:
        h.sweep(progress=Hook(150, during))
        assert seen == [(False, [])]
        assert inode_index(h)
        st = os.lstat(paths[0])
        assert [r.id for r in catalog.files_with_inode(h.reader, st.st_dev, st.st_ino)] == [
            h.at(paths[0]).id  # type: ignore[union-attr]
        ]
        # Moved while nobody watched: the inode says which file it is.
        old_id = h.at(paths[5]).id  # type: ignore[union-attr]
        paths[5].rename(tree / "moved.txt")
        assert h.sweep(racy_ns=0).moved == 1
        assert h.at(tree / "moved.txt").id == old_id  # type: ignore[union-attr]
    finally:
        h.close()


def test_a_first_index_cut_short_still_builds_the_inode_index(tmp_path: Path, tree: Path) -> None:
    make_files(tree, 300)
    h = Harness(tmp_path / "state", tree)
    try:
        with pytest.raises(SweepAborted):
            h.sweep(progress=Hook(100, h.stop.set))
        assert inode_index(h)
    finally:
        h.close()


def test_opening_the_catalog_builds_the_indexes_a_crash_left_out(tmp_path: Path) -> None:
    """Until then a lookup by inode finds nothing, not an error."""
    db = tmp_path / "catalog.db"
    conn = catalog.connect(db)
    assert catalog.begin_bulk(conn)
    conn.close()
    reader = Catalog(db).reader()
    try:
        assert indexes(reader) == set()
        assert catalog.files_with_inode(reader, 1, 2) == []
    finally:
        reader.close()
    conn = catalog.connect(db)
    try:
        assert indexes(conn) == set(catalog.DEFERRED_INDEXES)
    finally:
        conn.close()


def indexes(conn: apsw.Connection) -> set[str]:
    """Which of the indexes a bulk load defers are there."""
    return {
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        if name in catalog.DEFERRED_INDEXES
    }


def test_a_first_index_beside_other_files_keeps_the_index(tmp_path: Path, tree: Path) -> None:
    """Bulk only into an empty catalog: with files of another root there, their moves are
    matched by inode at any time, so the index stays."""
    other = tmp_path / "other"
    make_files(other, 5)
    h = Harness(tmp_path / "state", other)
    try:
        h.sweep()
        make_files(tree, 50)
        second = h.add_root(tree)
        states: list[bool] = []
        h.sweep(root=second, progress=Hook(20, lambda: states.append(inode_index(h))))
        assert states == [True]
        conn = catalog.connect(tmp_path / "state" / "catalog.db")
        try:
            assert not catalog.begin_bulk(conn)
        finally:
            conn.close()
    finally:
        h.close()


def test_the_walker_process_is_never_started_for_a_small_tree(tmp_path: Path, tree: Path) -> None:
    make_files(tree, 50)
    process = WalkProcess(hand_over_files=1000)
    h = Harness(tmp_path / "state", tree, away=process)
    try:
        h.sweep()
        h.sweep()
        assert process.started == 0
    finally:
        h.close()


def test_the_daemon_walks_a_full_scan_away_and_ends_the_process_when_no_sweep_waits(
    tmp_path: Path, tree: Path
) -> None:
    """In a real daemon: a full scan's walk goes on in the walker process, the catalog is the
    disk after it, and once no sweep waits the process is gone (at rest, one process)."""
    make_files(tree, 60, per_dir=10)
    with contextlib.closing(Live(tmp_path, tree, tmp_path / "fw.sock")) as live:
        away = live.d.scheduler.away
        away.hand_over_files = 1
        for i in range(5):
            (tree / "d0004" / f"added{i}.txt").write_text(f"added {i}")
        (tree / "d0002" / "f00021.txt").unlink()
        job = live.call("scan", {"root": str(tree), "wait": True})["job"]
        assert job["state"] == "done" and job["counts"]["new"] == 5, job
        assert away.started == 1
        wait_for(lambda: away._proc is None)
        counts = live.root_counts(tree)
        assert (counts["present"], counts["missing"]) == (64, 1)
        assert live.id_of(tree / "d0004" / "added3.txt")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ((sys.executable, "-c", "raise SystemExit(3)"), "ended (exit status 3) before it answered"),
        (("/nonexistent/filewarden-walker",), "cannot start the walker process"),
    ],
    ids=["ends-at-once", "cannot-start"],
)
def test_without_a_walker_process_the_daemon_walks_it_all_itself(
    tmp_path: Path, tree: Path, command: tuple[str, ...], reason: str
) -> None:
    """A walker that cannot start, or dies before its first answer (a broken install): each
    sweep says so (sweep.walker, an error) and walks the process's share itself, whole."""
    paths = make_files(tree, 300, per_dir=10)
    h = Harness(tmp_path / "state", tree, away=WalkProcess(hand_over_files=1, command=command))
    try:
        with logged() as events:
            assert h.sweep().new == 300
            paths[7].unlink()
            paths[250].unlink()
            (tree / "d0029" / "new.txt").write_text("new")
            tally = h.sweep(racy_ns=0)
        assert (tally.files, tally.new, tally.missing) == (299, 1, 2)
        assert in_catalog(h) == on_disk(tree)
        said = [e for e in events if e["event"] == "sweep.walker"]
        assert len(said) == 2 and all(reason in e["error"] for e in said), said
        assert all(e["log_level"] == "error" and e["root"] == str(tree) for e in said)
    finally:
        h.close()
