"""The daemon process: start, index, stop on SIGTERM/SIGINT, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden import catalog, config, logs
from filewarden.client import Client, Unreachable
from filewarden.daemon import Daemon
from filewarden.testing import DaemonProcess, write_config
from tests.conftest import make_files, wait_for


@pytest.fixture
def procs() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for p in started:
        p.kill()


def test_run_root_without_config_indexes_and_stops_cleanly(
    tmp_path: Path, tree: Path, procs: list[DaemonProcess]
) -> None:
    """`run --root DIR` with no config indexes the tree, logs the contract's events, exits 0 on SIGTERM."""
    make_files(tree, 120)
    d = DaemonProcess(tmp_path, "--root", str(tree))
    procs.append(d)
    start = d.wait_event("daemon.start")
    assert start["catalog"] == str(tmp_path / "state" / "filewarden" / "catalog.db")
    finish = d.wait_event("sweep.finish", first_index=True)
    assert finish["new"] == 120 and finish["files"] == 120 and finish["duration_s"] >= 0
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 5
    assert d.events[-1]["event"] == "daemon.stop"
    for line in d.raw:
        event = json.loads(line)
        assert list(event)[:3] == ["timestamp", "level", "event"]
        assert event["timestamp"].endswith("Z")
    conn = catalog.connect(tmp_path / "state" / "filewarden" / "catalog.db", readonly=True)
    assert catalog.recount(conn, 1) == (120, 0, 0)
    conn.close()


def test_restart_finds_changes_made_while_stopped(
    tmp_path: Path, tree: Path, procs: list[DaemonProcess]
) -> None:
    """A restart sweeps at once and records what changed while the daemon was down."""
    paths = make_files(tree, 30)
    d = DaemonProcess(tmp_path, "--root", str(tree))
    procs.append(d)
    d.wait_event("sweep.finish")
    assert d.stop() == 0
    paths[0].unlink()
    (tree / "new.txt").write_text("new")
    d = DaemonProcess(tmp_path, "--root", str(tree))
    procs.append(d)
    finish = d.wait_event("sweep.finish", first_index=False)
    assert (finish["new"], finish["missing"]) == (1, 1)
    missing = d.events[[e["event"] for e in d.events].index("file.missing")]
    assert missing["path"] == str(paths[0]) and missing["reason"] == "not_found"
    assert d.stop() == 0


def test_sigterm_during_first_index_exits_0_within_5s(
    tmp_path: Path, tree: Path, procs: list[DaemonProcess]
) -> None:
    """SIGTERM in the middle of a big first index ends the open transaction and exits 0 within 5 s."""
    make_files(tree, 20000, per_dir=200)
    d = DaemonProcess(tmp_path, "--root", str(tree), "--log-level", "debug")
    procs.append(d)
    d.wait_event("file.new", timeout=60)  # indexing has begun
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    events = [e["event"] for e in d.events]
    assert "daemon.stop" in events
    conn = catalog.connect(tmp_path / "state" / "filewarden" / "catalog.db", readonly=True)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    present, missing, offline = catalog.recount(conn, 1)
    assert catalog.get_root(conn, 1).present == present  # type: ignore[union-attr]
    assert missing == 0 and offline == 0
    conn.close()
    # A restart picks up where it stopped: the next first... full sweep completes the index.
    d = DaemonProcess(tmp_path, "--root", str(tree))
    procs.append(d)
    d.wait_event("sweep.finish", timeout=120)
    assert d.stop() == 0
    conn = catalog.connect(tmp_path / "state" / "filewarden" / "catalog.db", readonly=True)
    assert catalog.recount(conn, 1) == (20000, 0, 0)
    conn.close()


def test_missing_root_is_offline_not_an_error(tmp_path: Path, procs: list[DaemonProcess]) -> None:
    """A root that does not exist at start is logged offline and nothing is swept or marked."""
    d = DaemonProcess(tmp_path, "--root", str(tmp_path / "not-mounted"))
    procs.append(d)
    event = d.wait_event("root.offline")
    assert event["reason"] == "path does not exist"
    assert d.stop() == 0


def test_sync_at_start_waits_for_the_start_up_sweep(
    tmp_path: Path, tree: Path, procs: list[DaemonProcess]
) -> None:
    """A sync sent as soon as the socket answers covers what changed while the daemon was down.

    Edits in place leave directories unchanged, so only the start-up full
    sweep finds them; the socket answers before that sweep is even queued.
    """
    paths = make_files(tree, 6000, per_dir=2)  # many directories: watching them takes a while
    cfg = write_config(tmp_path, [tree])
    d = cfg.start()
    procs.append(d)
    d.wait_event("sweep.finish")
    assert d.stop() == 0
    edited = paths[::97]
    for p in edited:
        with open(p, "ab") as f:
            f.write(b"edited while the daemon was down\n")
    d = cfg.start()
    procs.append(d)
    deadline = time.monotonic() + 60
    while True:  # the first moment the socket answers
        assert d.proc.poll() is None and time.monotonic() < deadline, "".join(d.raw[-20:])
        try:
            client = Client(cfg.socket, timeout=60)
            break
        except (Unreachable, ConnectionError):
            threading.Event().wait(0.001)
    with client:
        client.call("sync", {"timeout_s": 60})
        for p in edited:
            rec = client.call("lookup", {"path": str(p)})
            assert rec is not None and rec["size"] == p.stat().st_size, (p, rec)
    assert d.stop() == 0


_MMAPPED_AFTER_A_BIG_FREE = """
import ctypes, sys
from filewarden.health import pin_malloc_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no glibc")
    sys.exit()
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "pin":
    assert pin_malloc_threshold()
big = bytearray(8 << 20)
del big  # unpinned, glibc now serves blocks up to 8 MiB from its heaps
before = libc.mallinfo2().hblks
block = bytearray(1 << 20)
print(libc.mallinfo2().hblks - before)
"""


def test_big_blocks_keep_their_own_mappings_after_a_big_free() -> None:
    """With the threshold pinned, a megabyte block is mapped (and unmapped when freed) even after a bigger one was freed.

    Unpinned (glibc's default), the same script prints 0: the block comes from a heap.
    """
    out = subprocess.run(
        [sys.executable, "-c", _MMAPPED_AFTER_A_BIG_FREE, "pin"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if out == "no glibc":
        pytest.skip("no glibc mallinfo2")
    assert out == "1"


def test_a_dead_watcher_is_restarted_and_its_roots_swept(tmp_path: Path, tree: Path) -> None:
    """watchdog's inotify reader thread dies: the daemon notices, watches afresh, and sweeps."""
    make_files(tree, 10)
    cfg = write_config(tmp_path, [tree])
    d = Daemon(config.load(cfg.path))
    d.start()
    try:
        assert d.syncer.sync(60) and d.watcher.alive()
        reader = d.watcher.backend._observer._inotify_fd  # type: ignore[union-attr]
        reader.stop()  # what an exception escaping watchdog's reader would leave
        reader.join(5)
        assert not d.watcher.alive()
        made = tree / "made-while-deaf.txt"
        made.write_bytes(b"nobody heard this\n")
        d._check_watcher()
        assert d.watcher.alive() and d.watcher.restarts == 1
        assert d.syncer.sync(60)
        conn = catalog.connect(cfg.catalog, readonly=True)
        try:
            row = catalog.file_at(conn, 1, b"made-while-deaf.txt")
        finally:
            conn.close()
        assert row is not None and row.state == "present"
        # Watched again: a sync is answered by its cookie's event, not a sweep.
        [root] = d.roots
        assert d.watcher.mode_of(root) == "watch"
        hints = d.watcher.aggregator.hints
        assert d.syncer.sync(10) and d.watcher.aggregator.hints > hints
    finally:
        d.stop()


def _reload_config(tmp_path: Path, tree: Path, *sections: str) -> Path:
    path = tmp_path / "reload.toml"
    path.write_text(
        "\n".join(
            [
                "[daemon]",
                f'state_dir = "{tmp_path / "state"}"',
                f'socket = "{tmp_path / "fw.sock"}"',
                *sections,
                "[[root]]",
                f'path = "{tree}"',
            ]
        )
        + "\n"
    )
    return path


def test_reload_applies_every_reloadable_key_and_names_the_rest(tmp_path: Path, tree: Path) -> None:
    """SIGHUP's reload applies [log], [sweep], [hash], [retention] and [identity] at once; [daemon] and [watch] are reported as needing a restart."""
    make_files(tree, 4)
    before = [
        'client_idle_timeout = "5m"',
        "[log]",
        'level = "warning"',
        "[sweep]",
        'interval = "never"',
        'quick_interval = "never"',
        "[watch]",
        'backend = "watchdog"',
        "[hash]",
        "enabled = false",
        "[retention]",
        'purge_missing_after = "never"',
        'journal_keep = "never"',
        "[identity]",
        'match_window = "7d"',
    ]
    cfg = _reload_config(tmp_path, tree, *before)
    d = Daemon(config.load(cfg))
    d.start()
    try:
        assert d.syncer.sync(30)
        gone = tree / "d0000" / "f00000.txt"
        gone.unlink()
        assert d.syncer.sync(30)
        reader = catalog.connect(d.db_path, readonly=True)
        assert catalog.totals(reader) == (3, 1, 0)
        assert catalog.count_unhashed(reader) == 3  # hashing is off
        after = [
            'client_idle_timeout = "1m"',  # [daemon]: at the next restart
            "[log]",
            'level = "debug"',
            "[sweep]",
            'interval = "never"',
            'quick_interval = "1s"',
            'mount_check_interval = "7s"',
            "[watch]",
            'backend = "poll"',  # at the next restart
            "[hash]",
            "enabled = true",
            "max_mb_per_s = 50",
            "[retention]",
            'purge_missing_after = "1ms"',
            'journal_keep = "never"',
            "[identity]",
            'match_window = "2d"',
        ]
        _reload_config(tmp_path, tree, *after)
        d.reload()
        # [log]: debug lines are written now.
        assert logs.get("t").is_enabled_for(10)
        # [hash]: turned on, and rate-limited.
        assert d.hasher.max_bytes_per_s == 50e6
        wait_for(lambda: catalog.count_unhashed(reader) == 0, timeout=30)
        # [identity]: the new window.
        assert d.relinker.window == 2 * 86400
        # [sweep]: quick sweeps every second now.
        wait_for(lambda: any(j.kind == "quick" for j in d.jobs.all()), timeout=30)
        assert d.availability.interval == 7.0
        # [retention]: files missing for more than 1 ms are purged by the next pass.
        d.retention.once()
        assert catalog.totals(reader) == (3, 0, 0)
        # [daemon] and [watch] wait for a restart.
        assert d.config.daemon.client_idle_timeout == 300
        assert d.config.watch.backend == "watchdog"
        assert d.watcher.backend_name == "watchdog"
        reader.close()
    finally:
        d.stop()
        logs.configure(config.LogConfig(format="json", level="warning"))


def test_reload_reports_what_changed_and_what_waits_for_a_restart(
    tmp_path: Path, tree: Path
) -> None:
    """daemon.reload lists each changed section, [daemon] and [watch] as taking effect at the next restart."""
    make_files(tree, 2)
    cfg = _reload_config(tmp_path, tree, "[watch]", 'backend = "watchdog"')
    proc = DaemonProcess(tmp_path, "--config", str(cfg))
    try:
        proc.wait_event("daemon.ready", timeout=60)
        _reload_config(
            tmp_path,
            tree,
            'client_idle_timeout = "1m"',
            "[watch]",
            'backend = "poll"',
            "[hash]",
            "max_mb_per_s = 5",
            "[identity]",
            'match_window = "1d"',
        )
        proc.signal(signal.SIGHUP)
        changes = proc.wait_event("daemon.reload", timeout=30)["changes"]
        assert sorted(changes) == [
            "[daemon] changed: takes effect at the next restart",
            "[hash] changed",
            "[identity] changed",
            "[watch] changed: takes effect at the next restart",
        ]
    finally:
        assert proc.stop() == 0
