"""inotify's limits, met for real: a queue overflow and a watch limit lose nothing."""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from filewarden.watch.hints import Hint, Kind
from filewarden.watch.limits import watches_in_use
from filewarden.watch.watchdog_backend import WatchdogBackend
from tests.conftest import make_files
from tests.scenarios.conftest import BACKENDS, live_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes inotify sysctls")
KERNEL_BACKENDS = [b for b in BACKENDS if b != "poll"]


@contextmanager
def sysctl(name: str, value: int) -> Iterator[str]:
    """Set /proc/sys/fs/inotify/NAME for the block; the old value comes back whatever happens."""
    path = Path("/proc/sys/fs/inotify") / name
    old = path.read_text().strip()
    path.write_text(str(value))
    try:
        yield old
    finally:
        path.write_text(old)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_queue_overflow_resweeps_and_loses_nothing(tmp_path: Path, backend: str) -> None:
    """With a 64-event kernel queue, a storm overflows it: logged, warned in status, swept; the catalog equals the disk."""
    with sysctl("max_queued_events", 64) as old:
        # The queue size is fixed when the daemon opens its inotify instance.
        with live_daemon(tmp_path, backend, roots=1) as live:
            Path("/proc/sys/fs/inotify/max_queued_events").write_text(old)
            storm = live.roots[0] / "storm"
            for i in range(10):
                (storm / f"d{i}").mkdir(parents=True)
            live.sync()  # the directories are watched before the storm
            # A stalled consumer: the storm happens in watched directories while
            # the daemon is stopped, so the 64-event kernel queue must overflow.
            live.proc.signal(signal.SIGSTOP)
            try:
                paths = []
                for i in range(3000):
                    p = storm / f"d{i % 10}" / f"f{i:05d}.txt"
                    p.write_bytes(b"%d" % i)
                    paths.append(p)
                for p in paths[::3]:
                    p.rename(p.with_suffix(".renamed"))
                for p in paths[1::3]:
                    p.unlink()
            finally:
                live.proc.signal(signal.SIGCONT)
            live.sync()
            overflow = live.proc.wait_event("watcher.overflow", timeout=30)
            assert overflow["level"] == "warning"
            [root] = live.call("status")["roots"]
            assert any("overflow" in w for w in root["warnings"])
            live.assert_matches_disk()
            assert len(live.files("present")) == 2000


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_watch_limit_falls_back_to_poll(tmp_path: Path, backend: str) -> None:
    """A root that cannot be fully watched is polled, said loudly (watcher.limit, status), and stays correct."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0], 400, per_dir=5)  # 80 directories

    with sysctl("max_user_watches", watches_in_use() + 5):
        with live_daemon(tmp_path, backend, roots=1, before_start=fill) as live:
            [limit] = live.proc.seen("watcher.limit")
            assert limit["level"] == "error" and "max_user_watches" in limit["error"]
    with sysctl("max_user_watches", watches_in_use() + 5):
        # Restart under the same limit, then check that the polled root follows changes.
        with live_daemon(tmp_path, backend, roots=1) as live:
            [root] = live.call("status")["roots"]
            assert (root["backend"], root["mode"]) == ("poll", "poll")
            assert any("max_user_watches" in w for w in root["warnings"])
            first = next(iter(sorted(live.roots[0].rglob("*.txt"))))
            file_id = live.id_of(first)
            first.rename(first.parent / "renamed.txt")
            (live.roots[0] / "d0003" / "new.txt").write_text("new")
            (live.roots[0] / "d0004" / "f00020.txt").unlink()
            live.sync()
            assert live.id_of(first.parent / "renamed.txt") == file_id
            live.assert_matches_disk()


def test_a_root_that_outgrows_the_watch_limit_is_polled(tmp_path: Path) -> None:
    """Directories made while watched, past max_user_watches: said loudly, the root is polled, nothing lost.

    watchdog ignores a watch refused below the root; the tree would stay
    partly watched, and files in the unwatched directories would be missed.
    """
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        root = live.roots[0]
        with sysctl("max_user_watches", watches_in_use() + 3):
            for i in range(20):
                d = root / "grown" / f"d{i:02d}"
                d.mkdir(parents=True)
                (d / "f.txt").write_text(str(i))
            limit = live.proc.wait_event("watcher.limit", timeout=30)
        assert limit["level"] == "error" and "max_user_watches" in limit["error"]
        live.sync()
        [status] = live.call("status")["roots"]
        assert (status["backend"], status["mode"]) == ("poll", "poll")
        assert any("max_user_watches" in w for w in status["warnings"])
        live.assert_matches_disk()
        # Polled from now on: later changes still reach the catalog.
        (root / "grown" / "d05" / "later.txt").write_text("later")
        (root / "grown" / "d06" / "f.txt").unlink()
        live.sync()
        live.assert_matches_disk()


def test_watchdog_reports_an_overflow_once_the_watches_are_back(tmp_path: Path) -> None:
    """A file made the moment an overflow is reported (a sync cookie, say) is seen.

    watchdog removes and re-adds every watch after an overflow; a file made
    before that is done lands on a watch about to go, and is never reported.
    Its event may still be lost in a later overflow (the reader can be one
    full queue behind), but then that overflow is reported in turn: the file
    made at the last overflow reported must be seen.
    """
    sub = tmp_path / "root" / "sub"
    sub.mkdir(parents=True)
    hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
    made: list[Path] = []

    def emit(hint: Hint) -> None:
        if hint.kind is Kind.OVERFLOW:
            made.append(sub / f"made-at-overflow-{len(made)}.txt")
            made[-1].write_bytes(b"x")
        hints.put(hint)

    def next_hint(deadline: float) -> Hint:
        return hints.get(timeout=max(0.01, deadline - time.monotonic()))

    with sysctl("max_queued_events", 64):
        # The queue size is fixed when the inotify instance is opened.
        backend = WatchdogBackend(emit)
        backend.start()
    try:
        backend.watch(os.fsencode(tmp_path / "root"))
        (sub / "probe.txt").write_bytes(b"x")
        deadline = time.monotonic() + 20
        while next_hint(deadline) != Hint(Kind.CLOSED, os.fsencode(sub / "probe.txt")):
            pass  # watched
        # Stall watchdog's reader (it takes this lock before every read) while
        # 500 files are made: the 64-event queue overflows.
        with backend._observer._inotify_fd._lock:  # type: ignore[attr-defined]
            for i in range(500):
                (sub / f"f{i:03d}").write_bytes(b"x")
        overflows, deadline = 0, time.monotonic() + 20
        while True:
            hint = next_hint(deadline)
            if hint.kind is Kind.OVERFLOW:
                overflows += 1
            elif overflows and hint == Hint(Kind.CREATED, os.fsencode(made[overflows - 1])):
                break
    except queue.Empty:
        raise AssertionError(f"no event for {made[-1:] or 'an overflow'}") from None
    finally:
        backend.stop()
