"""The live planner over a real catalog: what a hint means, and what it says to (un)pend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from filewarden import catalog
from filewarden.live import Batch, Planner
from filewarden.roots import Root
from filewarden.watch.hints import Settle
from filewarden.writer import Writer
from tests.conftest import Harness, roots_of


class _Host:
    """The daemon as far as the planner sees it; failed decisions are kept, not raised."""

    def __init__(self, writer: Writer, root: Root) -> None:
        self.writer = writer
        self.root = root
        self.failed: list[str] = []
        self.batches = 0

    def after_batch(self, reader: apsw.Connection) -> None:
        self.batches += 1

    def on_hint_failed(self, root: Root, error: str) -> None:
        self.failed.append(error)


@pytest.fixture
def planner(harness: Harness) -> Iterator[Planner]:
    p = Planner(_Host(harness.writer, harness.root), harness.writer, roots_of(harness.root))
    p.open()
    yield p
    p.close()


def _batch(p: Planner, h: Harness) -> Batch:
    return p.batch([h.root])


def test_a_file_gone_but_made_again_waits_to_settle(
    harness: Harness, tree: Path, planner: Planner
) -> None:
    """A delete of a path that holds a file again plans nothing and pends the path."""
    (tree / "f").write_bytes(b"again\n")
    batch = _batch(planner, harness)
    f = os.fsencode(tree / "f")
    assert batch.gone(f, directory=False) == Settle(pend=(f,))
    assert not batch.commit()


def test_an_editor_save_keeps_the_id_home_and_unpends_it(
    harness: Harness, tree: Path, planner: Planner
) -> None:
    """vim: f moved to f~, a new f, f~ deleted: the id stays at f, which no longer waits to settle."""
    (tree / "f").write_bytes(b"one\n")
    harness.sweep()
    file_id = harness.at(tree / "f").id  # type: ignore[union-attr]
    f, backup = os.fsencode(tree / "f"), os.fsencode(tree / "f~")
    os.rename(f, backup)
    batch = _batch(planner, harness)
    assert batch.move(f, backup) == Settle()
    (tree / "f").write_bytes(b"two, longer\n")
    os.unlink(backup)
    assert batch.gone(backup, directory=False) == Settle(unpend=(f,))
    assert batch.commit()
    row = harness.at(tree / "f")
    assert row is not None and (row.id, row.state, row.size) == (file_id, catalog.PRESENT, 12)
    assert harness.at(tree / "f~") is None


def test_a_move_out_into_a_directory_made_a_moment_ago_is_a_move(
    harness: Harness, tree: Path, planner: Planner
) -> None:
    """A directory moved into a new, unwatched one keeps its files' ids and takes what waits along."""
    (tree / "album").mkdir()
    (tree / "album" / "t.flac").write_bytes(b"track\n")
    harness.sweep()
    file_id = harness.at(tree / "album" / "t.flac").id  # type: ignore[union-attr]
    (tree / "new").mkdir()
    batch = _batch(planner, harness)
    new, album = os.fsencode(tree / "new"), os.fsencode(tree / "album")
    assert batch.dir_created(new) == Settle(pend=())
    (tree / "album").rename(tree / "new" / "album")
    assert batch.move_dir(album, b"") == Settle(moved=(album, new + b"/album"))
    assert batch.commit()
    row = harness.at(tree / "new" / "album" / "t.flac")
    assert row is not None and (row.id, row.state) == (file_id, catalog.PRESENT)


def test_a_move_out_of_sight_is_missing_and_drops_what_waits(
    harness: Harness, tree: Path, tmp_path: Path, planner: Planner
) -> None:
    """A directory moved out of every root: its files go missing (moved_out); nothing waits below."""
    (tree / "d").mkdir()
    (tree / "d" / "x").write_bytes(b"x\n")
    harness.sweep()
    (tree / "d").rename(tmp_path / "elsewhere")
    batch = _batch(planner, harness)
    d = os.fsencode(tree / "d")
    assert batch.move_dir(d, b"") == Settle(moved=(d, b""))
    assert batch.commit()
    row = harness.files()[0]
    assert (row.state, row.missing_reason) == (catalog.MISSING, "moved_out")


def test_a_scan_pends_every_file_below_but_excluded_ones(tmp_path: Path) -> None:
    """A directory that appeared is listed to the bottom; each file waits to settle, none is decided."""
    (tmp_path / "root").mkdir()
    h = Harness(tmp_path / "state", tmp_path / "root", exclude=("*.tmp",))
    try:
        p = Planner(_Host(h.writer, h.root), h.writer, roots_of(h.root))
        p.open()
        (h.root_dir / "d" / "e").mkdir(parents=True)
        for name in ("d/a", "d/e/b", "d/c.tmp"):
            (h.root_dir / name).write_bytes(b"")
        batch = p.batch([h.root])
        settle = batch.scan(os.fsencode(h.root_dir / "d"))
        base = os.fsencode(h.root_dir)
        assert sorted(settle.pend) == [base + b"/d/a", base + b"/d/e/b"]
        assert not batch.commit()
        p.close()
    finally:
        h.close()


def test_a_failing_decision_rolls_back_alone_and_is_reported(
    harness: Harness, tree: Path, planner: Planner
) -> None:
    """One decision raising leaves the others of its batch committed; the root is reported."""
    (tree / "ok").write_bytes(b"ok\n")
    batch = _batch(planner, harness)

    def broken(conn: apsw.Connection) -> None:
        raise RuntimeError("broken on purpose")

    batch.actions.append((harness.root, broken))
    batch.observe(os.fsencode(tree / "ok"))
    assert batch.commit()
    host = planner.host
    assert isinstance(host, _Host)
    assert host.failed == ["RuntimeError: broken on purpose"] and host.batches == 1
    assert [f.name for f in harness.files()] == [b"ok"]


def test_hints_outside_the_roots_plan_nothing(
    harness: Harness, tmp_path: Path, planner: Planner
) -> None:
    """A path outside every watched root, or excluded, is no decision."""
    outside = os.fsencode(tmp_path / "outside")
    (tmp_path / "outside").write_bytes(b"")
    batch = _batch(planner, harness)
    for settle in (
        batch.observe(outside),
        batch.gone(outside, directory=False),
        batch.move(outside, b""),
        batch.scan(outside),
    ):
        assert settle == Settle()
    assert not batch.commit()


def test_files_seen_in_turn_in_two_directories_are_each_recorded_where_they_are(
    harness: Harness, tree: Path, planner: Planner
) -> None:
    """Files seen one directory after another (a storm in two): each is recorded at its own
    path, the ones seen together in one directory in one decision."""
    paths = [tree / d / f"{n}.txt" for d, n in [("a", 0), ("a", 1), ("b", 2), ("a", 3)]]
    for p in paths:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    batch = _batch(planner, harness)
    for p in paths:
        batch.observe(os.fsencode(p))
    assert len(batch.actions) == 3  # a/0 and a/1 together, then b/2, then a/3
    assert batch.commit()
    assert all(harness.at(p) is not None for p in paths)
    assert len(harness.files("present")) == len(paths)
