"""The writer's priorities: live work first, and background work gives way between its jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from filewarden.writer import Priority, Writer, WriterStopped


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "catalog.db")
    w.start()
    yield w
    if w.alive():
        w.stop(time.monotonic() + 10)


class Held:
    """A job that keeps the writer busy until released, so that others queue behind it."""

    def __init__(self, writer: Writer) -> None:
        self.running = threading.Event()
        self.release = threading.Event()
        self.done = writer.submit(self._job)
        assert self.running.wait(10)

    def _job(self, conn: apsw.Connection) -> None:
        self.running.set()
        assert self.release.wait(10)


def recorder(
    ran: list[tuple[str, int]], writer: Writer, name: str
) -> Callable[[apsw.Connection], None]:
    """A job that notes its name and how many commits came before it."""

    def job(conn: apsw.Connection) -> None:
        ran.append((name, writer.commits))

    return job


def test_queued_jobs_run_live_first_then_sweeps_then_background(writer: Writer) -> None:
    held = Held(writer)
    ran: list[tuple[str, int]] = []
    futures = [
        writer.submit(recorder(ran, writer, name), priority)
        for name, priority in [
            ("hash 1", Priority.BACKGROUND),
            ("sweep", Priority.SWEEP),
            ("rename", Priority.LIVE),
            ("hash 2", Priority.BACKGROUND),
            ("lookup verify", Priority.LIVE),
        ]
    ]
    held.release.set()
    for f in futures:
        f.result(10)
    assert [name for name, _ in ran] == ["rename", "lookup verify", "sweep", "hash 1", "hash 2"]
    # One priority per transaction: three commits after the held one.
    commits = [c for _, c in ran]
    assert commits[0] == commits[1] < commits[2] < commits[3] == commits[4]


def test_background_work_gives_way_between_two_of_its_jobs(writer: Writer) -> None:
    """A live job that arrives while a background batch runs waits for one job and a commit only."""
    held = Held(writer)
    ran: list[tuple[str, int]] = []
    live: list[Any] = []

    def first(conn: apsw.Connection) -> None:
        ran.append(("hash 1", writer.commits))
        live.append(writer.submit(recorder(ran, writer, "rename")))

    futures = [writer.submit(first, Priority.BACKGROUND)] + [
        writer.submit(recorder(ran, writer, f"hash {i}"), Priority.BACKGROUND) for i in (2, 3)
    ]
    held.release.set()
    for f in futures:
        f.result(10)
    live[0].result(10)
    assert [name for name, _ in ran] == ["hash 1", "rename", "hash 2", "hash 3"]
    # hash 1 was committed on its own before the rename; the rest after it, together.
    commits = [c for _, c in ran]
    assert commits[0] < commits[1] < commits[2] == commits[3]


def test_a_failing_job_that_gave_way_is_not_lost(writer: Writer) -> None:
    """The jobs put back after giving way run later, each with its own outcome."""
    held = Held(writer)

    def boom(conn: apsw.Connection) -> None:
        raise ValueError("broken on purpose")

    def first(conn: apsw.Connection) -> int:
        writer.submit(lambda c: None)
        return 1

    f1 = writer.submit(first, Priority.SWEEP)
    f2 = writer.submit(boom, Priority.SWEEP)
    f3 = writer.submit(lambda c: 3, Priority.SWEEP)
    held.release.set()
    assert f1.result(10) == 1
    with pytest.raises(ValueError, match="broken on purpose"):
        f2.result(10)
    assert f3.result(10) == 3


def test_stop_runs_everything_queued_at_every_priority_then_refuses(writer: Writer) -> None:
    held = Held(writer)
    ran: list[tuple[str, int]] = []
    futures = [writer.submit(recorder(ran, writer, p.name), p) for p in Priority]
    stopper = threading.Thread(target=writer.stop, args=(time.monotonic() + 10,))
    stopper.start()
    held.release.set()
    stopper.join(10)
    assert [f.result(0) for f in futures] == [None] * len(Priority)
    assert [name for name, _ in ran] == [p.name for p in Priority]
    assert not writer.alive()
    with pytest.raises(WriterStopped):
        writer.submit(lambda c: None)
