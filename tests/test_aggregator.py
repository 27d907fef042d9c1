"""The aggregator over a real catalog: hints in, the same decisions a sweep would make out."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import apsw

from filewarden import catalog
from filewarden.roots import COOKIE_PREFIX, Root
from filewarden.watch.aggregator import Aggregator
from filewarden.watch.hints import Hint, Kind
from filewarden.writer import Writer
from tests.conftest import Harness, logged


class _Host:
    """The daemon as far as the aggregator sees it: one watched root, no sweeps."""

    def __init__(self, writer: Writer, root: Root) -> None:
        self.writer = writer
        self.root = root

    def watched_roots(self) -> list[Root]:
        return [self.root]

    def all_roots(self) -> dict[int, Root]:
        return {self.root.id: self.root}

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


def deliver(h: Harness, *hints: Hint) -> None:
    """Feed hints to a running aggregator and wait until they are committed (a sync cookie)."""
    agg = Aggregator(_Host(h.writer, h.root), h.db_path)
    agg.start()
    try:
        for hint in hints:
            agg.put(hint)
        cookie = os.fsencode(h.root_dir) + b"/" + COOKIE_PREFIX + b"test"
        done = threading.Event()
        agg.expect_cookie(cookie, done)
        agg.put(Hint(Kind.CREATED, cookie))
        assert done.wait(30)
    finally:
        agg.stop()


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
