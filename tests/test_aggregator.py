"""The aggregator: hints in, batches out; settle timers, cookies, and what the planner says to (un)pend."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import apsw

from filewarden import catalog, live
from filewarden.config import RootConfig
from filewarden.roots import COOKIE_PREFIX, Root
from filewarden.watch.aggregator import Aggregator, Planner
from filewarden.watch.hints import Hint, Kind, Settle
from filewarden.writer import Writer
from tests.conftest import Harness, logged, roots_of


class _Host:
    """The daemon as far as the aggregator and the planner see it: one watched root, no sweeps."""

    def __init__(self, writer: Writer, root: Root) -> None:
        self.writer = writer
        self.root = root

    def watched_roots(self) -> list[Root]:
        return [self.root]

    def after_batch(self, reader: apsw.Connection) -> None:
        pass

    def on_overflow(self, root: Root | None) -> list[threading.Event]:
        raise AssertionError("no overflow expected")

    def on_watch_limit(self, root: Root, path: bytes) -> list[threading.Event]:
        raise AssertionError("no watch limit expected")

    def on_unmount(self, path: bytes) -> None:
        pass

    def on_hint_failed(self, root: Root, error: str) -> None:
        raise AssertionError(error)


def run_batch(host: _Host, planner: Planner, *hints: Hint) -> Aggregator:
    """Queue hints and a sync cookie before the aggregator starts (one batch); wait for the answer."""
    agg = Aggregator(host, planner, host.watched_roots)
    for hint in hints:
        agg.put(hint)
    cookie = host.root.path + b"/" + COOKIE_PREFIX + b"test"
    done = threading.Event()
    agg.expect_cookie(cookie, done)
    agg.put(Hint(Kind.CREATED, cookie))
    agg.start()
    try:
        assert done.wait(30)
    finally:
        agg.stop()
    return agg


def deliver(h: Harness, *hints: Hint) -> None:
    """Feed hints to an aggregator with the real planner and wait until they are committed."""
    host = _Host(h.writer, h.root)
    run_batch(host, live.Planner(host, h.writer, roots_of(h.root)), *hints)


class _Recorder:
    """A planner (and its batch) that records what it is asked and answers with given settles."""

    def __init__(self, answers: dict[tuple[str, bytes], Settle] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, bytes]] = []
        self.commits: list[int] = []  # calls planned by each commit
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def batch(self, roots: list[Root]) -> _Recorder:
        self._since = len(self.calls)
        return self

    def _call(self, what: str, path: bytes) -> Settle:
        self.calls.append((what, path))
        return self.answers.get((what, path), Settle())

    def observe(self, path: bytes) -> Settle:
        return self._call("observe", path)

    def gone(self, path: bytes, *, directory: bool) -> Settle:
        return self._call("gone_dir" if directory else "gone", path)

    def move(self, src: bytes, dest: bytes) -> Settle:
        return self._call("move", src)

    def move_dir(self, src: bytes, dest: bytes) -> Settle:
        return self._call("move_dir", src)

    def dir_created(self, path: bytes) -> Settle:
        return self._call("dir_created", path)

    def scan(self, path: bytes) -> Settle:
        return self._call("scan", path)

    def commit(self) -> bool:
        self.commits.append(len(self.calls) - self._since)
        return len(self.calls) > self._since


def _fake(tmp_path: Path) -> _Host:
    return _Host(None, Root.make(1, RootConfig(path=tmp_path)))  # type: ignore[arg-type]


def test_a_created_file_waits_to_settle_and_a_sync_records_it_once(tmp_path: Path) -> None:
    """A new file's close is not observed while it settles; the sync cookie observes it, once."""
    host, planner = _fake(tmp_path), _Recorder()
    f = host.root.path + b"/f"
    agg = run_batch(
        host, planner, Hint(Kind.CREATED, f), Hint(Kind.CLOSED, f), Hint(Kind.ATTRIB, f)
    )
    assert planner.calls == [("observe", f)]
    assert planner.commits == [1] and agg.batches == 1 and agg.hints == 4
    assert planner.opened and planner.closed


def test_what_the_planner_says_to_pend_is_applied_before_the_next_hint(tmp_path: Path) -> None:
    """A file gone but made again waits to settle: its close in the same batch is not observed."""
    f = os.fsencode(tmp_path / "f")
    planner = _Recorder({("gone", f): Settle(pend=(f,))})
    run_batch(_fake(tmp_path), planner, Hint(Kind.DELETED, f), Hint(Kind.CLOSED, f))
    assert planner.calls == [("gone", f), ("observe", f)]  # the close skipped; the sync observes


def test_what_the_planner_says_to_unpend_is_not_observed_again(tmp_path: Path) -> None:
    """An editor's save took the new file home: it no longer waits, and its close is observed."""
    f, backup = os.fsencode(tmp_path / "f"), os.fsencode(tmp_path / "f~")
    planner = _Recorder({("gone", backup): Settle(unpend=(f,))})
    hints = (Hint(Kind.CREATED, f), Hint(Kind.DELETED, backup), Hint(Kind.CLOSED, f))
    run_batch(_fake(tmp_path), planner, *hints)
    assert planner.calls == [("gone", backup), ("observe", f)]


def test_a_directory_move_takes_what_waits_below_it_along(tmp_path: Path) -> None:
    """Files waiting to settle under a moved directory wait under its new place; a move out drops them."""
    base = os.fsencode(tmp_path)
    planner = _Recorder(
        {
            ("move_dir", base + b"/a"): Settle(moved=(base + b"/a", base + b"/b")),
            ("move_dir", base + b"/c"): Settle(moved=(base + b"/c", b"")),
        }
    )
    hints = (
        Hint(Kind.CREATED, base + b"/a/x/f"),
        Hint(Kind.CREATED, base + b"/c/g"),
        Hint(Kind.DIR_MOVED, base + b"/a", base + b"/b"),
        Hint(Kind.DIR_MOVED, base + b"/c"),
    )
    run_batch(_fake(tmp_path), planner, *hints)
    assert planner.calls[2:] == [("observe", base + b"/b/x/f")]


def test_what_a_scan_finds_waits_to_settle(tmp_path: Path) -> None:
    """The files a new directory's scan reports are observed once settled (here: by the sync)."""
    base = os.fsencode(tmp_path)
    planner = _Recorder({("dir_created", base + b"/d"): Settle(pend=(base + b"/d/f",))})
    run_batch(_fake(tmp_path), planner, Hint(Kind.DIR_CREATED, base + b"/d"))
    assert planner.calls == [("dir_created", base + b"/d"), ("observe", base + b"/d/f")]


def test_a_batch_with_nothing_planned_is_not_counted(tmp_path: Path) -> None:
    """Only a sync cookie: no decision, no batch committed."""
    planner = _Recorder()
    agg = run_batch(_fake(tmp_path), planner)
    assert planner.commits == [0] and agg.batches == 0


def test_move_from_a_path_the_catalog_does_not_know_keeps_the_id(
    harness: Harness, tree: Path
) -> None:
    """A file renamed live from under a directory that moved while nobody watched keeps its id."""
    (tree / "a").mkdir()
    (tree / "a" / "x.dat").write_bytes(b"annotated\n")
    harness.sweep()
    file_id = harness.at(tree / "a" / "x.dat").id  # type: ignore[union-attr]
    (tree / "a").rename(tree / "b")  # unseen: no hint, no sweep yet
    (tree / "c").mkdir()
    (tree / "b" / "x.dat").rename(tree / "c" / "y.dat")
    deliver(
        harness,
        Hint(Kind.MOVED, os.fsencode(tree / "b" / "x.dat"), os.fsencode(tree / "c" / "y.dat")),
    )
    moved = harness.at(tree / "c" / "y.dat")
    assert moved is not None and (moved.id, moved.state) == (file_id, catalog.PRESENT)
    assert [f.id for f in harness.files()] == [file_id]


def test_move_of_an_unknown_file_is_new(harness: Harness, tree: Path) -> None:
    """A live move of a file the catalog has never seen (by path or by inode) records it as new."""
    harness.sweep()
    (tree / "fresh.dat").write_bytes(b"never seen\n")
    (tree / "fresh.dat").rename(tree / "kept.dat")
    deliver(
        harness, Hint(Kind.MOVED, os.fsencode(tree / "fresh.dat"), os.fsencode(tree / "kept.dat"))
    )
    rows = harness.files()
    assert [(f.name, f.state) for f in rows] == [(b"kept.dat", catalog.PRESENT)]


def test_a_failing_handler_does_not_stop_the_watchdog_dispatcher() -> None:
    """An exception while translating an event is logged as watcher.error and counted, never raised."""
    from watchdog.events import FileCreatedEvent

    from filewarden.watch.watchdog_backend import _Handler

    def emit(hint: object) -> None:
        raise RuntimeError("broken on purpose")

    handler = _Handler(emit)
    with logged() as events:
        handler.dispatch(FileCreatedEvent(b"/somewhere/f"))
        handler.dispatch(FileCreatedEvent(b"/somewhere/g"))
    assert handler.errors == 2
    errors = [e for e in events if e["event"] == "watcher.error"]
    assert len(errors) == 2 and errors[0]["log_level"] == "error"
    assert "broken on purpose" in errors[0]["error"] and "/somewhere/f" in errors[0]["fs_event"]


class _TwoRoots(_Host):
    """Two watched roots whose overflow sweeps end when the test says."""

    def __init__(self, tmp_path: Path) -> None:
        self.roots = [Root.make(n, RootConfig(path=tmp_path / f"r{n}")) for n in (1, 2)]
        super().__init__(None, self.roots[0])  # type: ignore[arg-type]
        self.sweeps: dict[bytes, threading.Event] = {r.path: threading.Event() for r in self.roots}
        self.overflowed: queue.Queue[bytes] = queue.Queue()

    def watched_roots(self) -> list[Root]:
        return self.roots

    def on_overflow(self, root: Root | None) -> list[threading.Event]:
        assert root is not None
        self.overflowed.put(root.path)
        return [self.sweeps[root.path]]


def test_an_overflow_answers_a_sync_only_once_that_roots_own_sweep_ended(tmp_path: Path) -> None:
    """One inotify queue serves every root, and each root hears of its overflow in turn: a
    sync waiting on the second root is not answered when the first root's sweep ends."""
    host = _TwoRoots(tmp_path)
    agg = Aggregator(host, _Recorder(), host.watched_roots)
    done = {r.path: threading.Event() for r in host.roots}
    for r in host.roots:
        agg.expect_cookie(r.path + b"/" + COOKIE_PREFIX + b"sync", done[r.path])
    first, second = (r.path for r in host.roots)
    agg.start()
    try:
        agg.put(Hint(Kind.OVERFLOW, first))
        assert host.overflowed.get(timeout=30) == first
        host.sweeps[first].set()
        assert done[first].wait(30)
        agg.put(Hint(Kind.OVERFLOW, second))
        assert host.overflowed.get(timeout=30) == second
        # Its events were lost with the first root's, but its own sweep still runs.
        assert not done[second].is_set()
        host.sweeps[second].set()
        assert done[second].wait(30)
    finally:
        agg.stop()
