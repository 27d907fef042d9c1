"""The change feed and the client library: held ``changes`` calls, cursors that cannot be
served, bulk lookups, and a consumer that follows the journal across a daemon restart."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import apsw
import pytest

from filewarden import catalog
from filewarden.client import Change, Client, Reset, Unreachable, connect, iter_changes
from filewarden.protocol import RpcError
from filewarden.testing import DaemonProcess, Setup
from tests.conftest import api_config, make_files, wait_for


class Feed:
    def __init__(self, tree: Path, files: list[Path], setup: Setup, proc: DaemonProcess) -> None:
        self.tree, self.files, self.setup, self.proc = tree, files, setup, proc
        assert proc.socket is not None
        self.sock = proc.socket

    def client(self, timeout: float = 30) -> Client:
        return Client(self.sock, timeout=timeout)

    def held(self) -> int:
        """``changes`` calls the server holds now."""
        return int(self.status_socket()["waiting"])

    def status_socket(self) -> dict[str, int]:
        with self.client() as c:
            return dict(c.status()["socket"])

    def proc_threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads: line")


@pytest.fixture
def feed(tmp_path: Path, tree: Path) -> Iterator[Feed]:
    files = make_files(tree, 20, per_dir=10)
    setup = api_config(tmp_path, [tree], backend="watchdog", socket=tmp_path / "run" / "fw.sock")
    feed = Feed(tree, files, setup, setup.start())
    try:
        feed.proc.wait_event("sweep.finish")
        yield feed
    finally:
        feed.proc.stop()  # the one running now: a test may have restarted it


def test_a_held_changes_call_answers_at_the_commit_not_at_the_end_of_its_wait(feed: Feed) -> None:
    with feed.client() as c:
        seq = c.status()["seq"]
        empty = c.changes(seq, wait=0.3)
        assert empty["changes"] == [] and empty["seq"] == seq and empty["reset_required"] is None
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(lambda: feed.client().changes(seq, wait=60))
            wait_for(lambda: feed.held() == 1, timeout=30)  # held by the server...
            assert not held.done()  # ...and not answered
            t0 = time.monotonic()
            feed.files[0].rename(feed.tree / "renamed.txt")
            answer = held.result(30)
            assert time.monotonic() - t0 < 10  # woken by the commit, long before its 60 s
        assert [(e["kind"], e["path"]) for e in answer["changes"]] == [
            ("move", str(feed.tree / "renamed.txt"))
        ]
        assert answer["instance"] == c.status()["instance"]


def test_a_hundred_held_calls_are_woken_by_one_commit_with_no_thread_each(feed: Feed) -> None:
    with feed.client() as c:
        seq = c.status()["seq"]
    threads_before = feed.proc_threads()
    clients = [feed.client(timeout=90) for _ in range(100)]
    try:
        with ThreadPoolExecutor(100) as pool:
            held = [pool.submit(cl.changes, seq, wait=60) for cl in clients]
            wait_for(lambda: feed.held() == 100, timeout=30)
            # Held on the server's loop: no worker thread per waiting client.
            assert feed.proc_threads() <= threads_before + 4
            (feed.tree / "new.txt").write_text("one change")
            answers = [h.result(30) for h in held]
    finally:
        for cl in clients:
            cl.close()
    assert all(
        [(e["kind"], e["path"]) for e in a["changes"]] == [("new", str(feed.tree / "new.txt"))]
        for a in answers
    )


def test_a_cursor_that_cannot_be_served_asks_for_a_reset(feed: Feed) -> None:
    with feed.client() as c:
        status = c.status()
        seq, instance = status["seq"], status["instance"]
        assert c.changes(0)["reset_required"] is None
        assert c.changes(seq, instance="0" * 36)["reset_required"] == "another instance"
        assert c.changes(seq + 1000)["reset_required"] == "ahead of the journal"
        # A held call is not held when its cursor needs a reset.
        t0 = time.monotonic()
        assert c.changes(seq, wait=30, instance="0" * 36)["reset_required"]
        assert time.monotonic() - t0 < 5
    # Compaction takes the entries after an old cursor: the client must re-list.
    feed.files[1].unlink()
    with feed.client() as c:
        c.sync()
    db = feed.setup.state_dir / "catalog.db"
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(10_000)
        with conn:
            catalog.compact_journal(conn, time.time() + 1)
    finally:
        conn.close()
    with feed.client() as c:
        answer = c.changes(0)
        assert answer["reset_required"] == "compacted" and answer["changes"] == []
        assert answer["instance"] == instance
        assert c.changes(answer["seq"])["reset_required"] is None


def test_bulk_lookup_answers_in_order_with_nulls(feed: Feed) -> None:
    paths = [feed.files[3], feed.tree / "nowhere.txt", feed.files[0], Path("/not/a/root")]
    with feed.client() as c:
        records = c.lookup_many(paths)
        assert [r["path"] if r else None for r in records] == [
            str(feed.files[3]),
            None,
            str(feed.files[0]),
            None,
        ]
        ids = [r["id"] for r in records if r]
        again = c.lookup_many(ids=[ids[1], 10**9, ids[0]])
        assert [r["id"] if r else None for r in again] == [ids[1], None, ids[0]]
        many = c.lookup_many([feed.files[0]] * 10_000)
        assert len(many) == 10_000 and {r["id"] for r in many if r} == {ids[1]}
        with pytest.raises(RpcError) as too_many:
            c.lookup_many(ids=list(range(10_001)))
        assert too_many.value.code == -32602
        odd = feed.tree / os.fsdecode(b"caf\xe9.txt")
        odd.write_text("latin-1 name")
        c.sync()
        assert c.lookup_many([odd])[0]["path_b64"]  # type: ignore[index]


def test_iter_changes_follows_the_feed_across_a_daemon_restart(feed: Feed) -> None:
    """Every entry once, in order: before, during and after a restart (with backoff)."""
    with connect(feed.sock) as c:
        status = c.status()
    seen: list[Change | Reset] = []
    stop = threading.Event()

    def follow() -> None:
        for item in iter_changes(
            status["seq"], instance=status["instance"], socket=feed.sock, wait=2, stop=stop
        ):
            seen.append(item)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        (feed.tree / "before.txt").write_text("1")
        wait_for(lambda: any(not isinstance(e, Reset) and e["kind"] == "new" for e in seen))
        assert feed.proc.stop() == 0
        (feed.tree / "while-down.txt").write_text("2")
        feed.proc = feed.setup.start()
        feed.proc.wait_event("sweep.finish")
        (feed.tree / "after.txt").write_text("3")
        names = {"before.txt", "while-down.txt", "after.txt"}
        wait_for(
            lambda: (
                names
                <= {Path(e["path"]).name for e in seen if not isinstance(e, Reset) and e["path"]}
            ),
            timeout=60,
        )
    finally:
        stop.set()
        follower.join(30)
    changes = [e for e in seen if not isinstance(e, Reset)]
    assert not [e for e in seen if isinstance(e, Reset)]  # the same catalog: nothing to re-read
    seqs = [e["seq"] for e in changes]
    assert seqs == sorted(set(seqs))  # each once, in order
    with connect(feed.sock) as c:
        assert seqs[-1] <= c.status()["seq"]
        journal = c.changes(status["seq"], limit=10_000)["changes"]
    assert [e["seq"] for e in journal][: len(seqs)] == seqs  # nothing skipped


def follow(feed: Feed, since: int, until: int, **filters: Any) -> list[Change | Reset]:
    """What one subscription streams after ``since``, up to seq ``until`` (or a reset)."""
    got: list[Change | Reset] = []
    with feed.client() as c:
        for item in c.subscribe(since, **filters):
            got.append(item)
            if isinstance(item, Reset) or item["seq"] >= until:
                break
    return got


def test_ten_subscribers_and_a_hundred_held_calls_see_every_entry_once_in_order(
    feed: Feed,
) -> None:
    with feed.client() as c:
        seq = c.status()["seq"]
    waiters = [feed.client(timeout=90) for _ in range(100)]
    with ThreadPoolExecutor(120) as pool:
        try:
            held = [pool.submit(w.changes, seq, wait=60) for w in waiters]
            started = threading.Barrier(11)

            def subscriber() -> list[Change | Reset]:
                with feed.client() as c:
                    stream = c.subscribe(seq)
                    started.wait(30)
                    got: list[Change | Reset] = []
                    for item in stream:
                        got.append(item)
                        if isinstance(item, Reset) or item["seq"] >= last_seq[0]:
                            return got
                    return got

            last_seq = [1 << 62]
            subs = [pool.submit(subscriber) for _ in range(10)]
            started.wait(30)
            wait_for(lambda: feed.held() == 100, timeout=30)
            for n, path in enumerate(feed.files[:10]):
                path.rename(path.with_name(f"renamed-{n}.txt"))
            for n in range(10):
                (feed.tree / f"new-{n}.txt").write_text(str(n))
            with feed.client() as c:
                c.sync()
                journal = c.changes(seq, limit=10_000)["changes"]
            last_seq[0] = journal[-1]["seq"]
            (feed.tree / "last.txt").write_text("wakes a subscriber that read everything")
            streams = [s.result(60) for s in subs]
            assert all(h.result(60)["changes"] for h in held)
        finally:
            for w in waiters:
                w.close()
    want = [e["seq"] for e in journal]
    assert len(want) >= 20
    for stream in streams:
        assert [e["seq"] for e in stream if not isinstance(e, Reset)][: len(want)] == want


def test_a_subscription_filters_resumes_across_a_restart_and_ends_with_a_reset(
    feed: Feed,
) -> None:
    with feed.client() as c:
        status = c.status()
    seq, instance = status["seq"], status["instance"]
    (feed.tree / "fresh.txt").write_text("new")
    with feed.client() as c:
        c.sync()  # the new file's entry comes first
    feed.files[0].rename(feed.tree / "moved.txt")
    with feed.client() as c:
        top = c.sync()
    with feed.client() as c:
        first = next(c.subscribe(seq, kinds=["move"]))  # the new file's entry is left out
    assert not isinstance(first, Reset)
    assert (first["kind"], first["path"]) == ("move", str(feed.tree / "moved.txt"))
    # The daemon goes away: the subscription ends; a new one resumes from its cursor.
    got: list[Change | Reset] = []
    with feed.client() as c:
        with pytest.raises(Unreachable):
            for item in c.subscribe(seq, instance=instance):
                got.append(item)
                if not isinstance(item, Reset) and item["seq"] == top:
                    assert feed.proc.stop() == 0
    (feed.tree / "while-down.txt").write_text("down")
    feed.proc = feed.setup.start()
    feed.proc.wait_event("sweep.finish")
    with feed.client() as c:
        top = c.sync()
    cursor = got[-1]["seq"]  # type: ignore[index]
    got += follow(feed, cursor, top, instance=instance)
    with feed.client() as c:
        journal = [e["seq"] for e in c.changes(seq, limit=10_000)["changes"]]
    assert [e["seq"] for e in got if not isinstance(e, Reset)] == journal
    assert "while-down.txt" in {
        Path(e["path"]).name for e in got if not isinstance(e, Reset) and e["path"]
    }
    # Another instance's cursor: a reset, and the stream ends.
    (reset,) = follow(feed, top, top + 1, instance="0" * 36)
    assert isinstance(reset, Reset) and reset.reason == "another instance"


def test_a_subscriber_that_stops_reading_is_dropped(feed: Feed) -> None:
    with feed.client() as c:
        seq = c.status()["seq"]
    lazy = socket.socket(socket.AF_UNIX)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(str(feed.sock))
    try:
        lazy.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                                 "params": {"since": seq}}).encode() + b"\n")  # fmt: skip
        wait_for(lambda: feed.status_socket()["subscribers"] == 1, timeout=30)
        make_files(feed.tree / "storm", 3000, per_dir=1000)  # far more than it will read
        with feed.client() as c:
            c.sync()
        # Its answers stopped draining: dropped after client_request_timeout (1 s here).
        wait_for(lambda: feed.status_socket()["subscribers"] == 0, timeout=60)
    finally:
        lazy.close()


def test_a_subscription_whose_cursor_compaction_passed_gets_a_reset_and_goes_on_after_a_relist(
    feed: Feed,
) -> None:
    with feed.client() as c:
        since = c.status()["seq"]
    feed.files[2].rename(feed.tree / "a.txt")
    with feed.client() as c:
        c.sync()
    feed.files[3].rename(feed.tree / "b.txt")  # a file's latest entry is kept; its older ones go
    (feed.tree / "a.txt").rename(feed.tree / "c.txt")
    with feed.client() as c:
        top = c.sync()
    conn = apsw.Connection(str(feed.setup.state_dir / "catalog.db"))
    try:
        conn.set_busy_timeout(10_000)
        with conn:
            assert catalog.compact_journal(conn, time.time() + 1) > 0
    finally:
        conn.close()
    (reset,) = follow(feed, since, top)
    assert isinstance(reset, Reset) and reset.reason == "compacted" and reset.seq >= top
    # Re-listed, the subscriber goes on from the reset's seq and misses nothing after it.
    with feed.client() as c:
        listed = {f["path"]: f["id"] for f in c.iter_files()}
    assert str(feed.tree / "c.txt") in listed
    (feed.tree / "after.txt").write_text("after")
    with feed.client() as c:
        newest = c.sync()
    later = follow(feed, reset.seq, newest)
    assert [(e["kind"], e["path"]) for e in later if not isinstance(e, Reset)] == [
        ("new", str(feed.tree / "after.txt"))
    ]
