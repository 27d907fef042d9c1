"""Socket abuse soak: bad, huge, stalled and greedy clients beside well-behaved ones, amid file activity and purges.

Well-behaved clients must get right answers throughout; at the end the
daemon answers, the catalog equals the disk, and its memory stayed flat.
"""

from __future__ import annotations

import json
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from filewarden.client import Client
from tests.conftest import make_files, rss_kib, wait_for
from tests.drills._support import report
from tests.scenarios.conftest import live_view, scenario_config
from tests.test_server import malformed_lines


class Memory(NamedTuple):
    at: float  # seconds into the soak
    rss_kib: int
    sqlite_kib: int
    sqlite_budget_kib: int


def memory_figures(samples: list[Memory], seconds: float) -> dict[str, int]:
    """Medians over the second quarter (warm) and the last quarter (end) of the soak.

    Medians, because a big answer being written (a ``list`` of 10,000 files)
    holds a few megabytes for a moment. "other" is the RSS less SQLite's
    memory: SQLite's page caches fill towards their budget as the catalog
    grows, and everything else must not grow once warm.
    """
    warm = [m for m in samples if seconds / 4 <= m.at < seconds / 2]
    end = [m for m in samples if m.at >= seconds * 3 / 4]
    assert warm and end, f"too few memory samples: {len(samples)}"

    def median(window: list[Memory], of: Callable[[Memory], int]) -> int:
        return int(statistics.median(of(m) for m in window))

    return {
        "rss_warm_kib": median(warm, lambda m: m.rss_kib),
        "rss_end_kib": median(end, lambda m: m.rss_kib),
        "rss_peak_kib": max(m.rss_kib for m in samples),
        "sqlite_end_kib": median(end, lambda m: m.sqlite_kib),
        "sqlite_peak_kib": max(m.sqlite_kib for m in samples),
        "sqlite_budget_kib": samples[-1].sqlite_budget_kib,
        "other_warm_kib": median(warm, lambda m: m.rss_kib - m.sqlite_kib),
        "other_end_kib": median(end, lambda m: m.rss_kib - m.sqlite_kib),
    }


def soak_drill(
    tmp: Path,
    *,
    seconds: float = 10.0,
    good_clients: int = 16,
    initial: int = 300,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    t0 = time.monotonic()
    root = tmp / "root1"
    files = make_files(root / "base", initial, per_dir=30)
    setup = scenario_config(
        tmp, [root], daemon={"client_request_timeout": "1s", "client_idle_timeout": "3s"}
    )
    sock = setup.socket
    proc = setup.start()
    stop = threading.Event()
    errors: list[str] = []
    counts = {k: 0 for k in ("good", "malformed", "oversize", "stalled", "greedy", "fs", "purged")}
    lock = threading.Lock()

    def count(kind: str, n: int = 1) -> None:
        with lock:
            counts[kind] += n

    def guarded(name: str, body: Callable[[random.Random], None]) -> Callable[[int], None]:
        def run(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    body(rng)
            except Exception as exc:  # collected, asserted at the end
                errors.append(f"{name}: {type(exc).__name__}: {exc}")

        return run

    expected: dict[str, int] = {}

    def good(rng: random.Random) -> None:
        with Client(sock, timeout=60) as c:
            for _ in range(20):
                if rng.random() < 0.2:
                    st = c.call("status")
                    assert st["pid"] == proc.proc.pid
                else:
                    p = rng.choice(list(expected))
                    rec = c.call("lookup", {"path": p})
                    assert rec is not None and rec["id"] == expected[p], (p, rec)
                count("good")

    def malformed(rng: random.Random) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            f = s.makefile("rb")
            for line in malformed_lines(200, rng.randrange(1 << 30)):
                s.sendall((line if line.strip() else b"?") + b"\n")
                answer = json.loads(f.readline())
                assert "error" in answer, (line, answer)
                count("malformed")

    def oversize(rng: random.Random) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            try:
                s.sendall(
                    b'{"jsonrpc": "2.0", "id": 1, "method": "status", "pad": "'
                    + b"x" * rng.randrange(1 << 20, 3 << 20)
                    + b'"}\n'
                )
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = json.loads(s.makefile("rb").readline())
            assert answer["error"]["code"] == -32600, answer
            count("oversize")
        stop.wait(0.2)

    def stalled(rng: random.Random) -> None:
        # Half a line, or nothing at all, then silence: dropped by the daemon.
        held = []
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock))
            if rng.random() < 0.5:
                s.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')
            held.append(s)
            count("stalled")
        stop.wait(rng.uniform(0.5, 2.0))
        for s in held:
            s.close()

    def greedy(rng: random.Random) -> None:
        # Asks for big answers and never reads them.
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        s.settimeout(5)
        try:
            for _ in range(50):
                s.sendall(
                    b'{"jsonrpc": "2.0", "id": 1, "method": "list", "params": {"limit": 10000}}\n'
                )
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the daemon gave up on us: fine
        count("greedy")
        stop.wait(rng.uniform(0.5, 1.5))
        s.close()

    def fs(rng: random.Random) -> None:
        d = root / "churn" / f"d{rng.randrange(20):02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{rng.randrange(200):03d}.txt"
        op = rng.random()
        if op < 0.5:
            p.write_bytes(b"x" * rng.randrange(1, 4000))
        elif op < 0.75 and p.exists():
            other = d.parent / f"d{rng.randrange(20):02d}"
            other.mkdir(exist_ok=True)
            p.rename(other / p.name)
        elif p.exists():
            p.unlink()
        count("fs")
        stop.wait(0.002)

    def admin(rng: random.Random) -> None:
        # Purges what the churn left missing, as an admin would: the catalog
        # stays about one size, so a growing memory is the daemon's, not
        # bigger answers about more files.
        with Client(sock, timeout=60) as c:
            count("purged", c.call("purge", {"older_than": "2s"})["purged"])
        stop.wait(1.0)

    figures: dict[str, Any] = {"seconds": seconds}
    threads: list[threading.Thread] = []
    try:
        proc.wait_event("daemon.ready", timeout=60)
        lv = live_view(proc, [root], "watchdog")
        lv.sync()
        expected.update({str(p): lv.id_of(p) for p in files})
        pid = proc.proc.pid
        figures["rss_start_kib"] = rss_kib(pid)
        kinds = [("good", good)] * good_clients + [
            ("malformed", malformed),
            ("malformed", malformed),
            ("oversize", oversize),
            ("stalled", stalled),
            ("stalled", stalled),
            ("greedy", greedy),
            ("fs", fs),
            ("admin", admin),
        ]
        for n, (name, body) in enumerate(kinds):
            t = threading.Thread(target=guarded(name, body), args=(n,), daemon=True)
            t.start()
            threads.append(t)
        # The daemon's own account (status' memory), four times a second.
        samples: list[Memory] = []
        with Client(sock, timeout=60) as monitor:
            began = time.monotonic()
            while time.monotonic() < began + seconds and not errors:
                memory = monitor.call("status")["memory"]
                samples.append(Memory(time.monotonic() - began, **memory))
                stop.wait(0.25)  # a sampling period, not a wait for anything
        stop.set()
        for t in threads:
            t.join(60)
        assert not [t for t in threads if t.is_alive()], "a client thread hung"
        assert errors == [], errors[:10]
        figures.update(memory_figures(samples, seconds))
        lv.client.close()  # idle through the soak, so dropped (client_idle_timeout)
        lv.client = Client(sock, timeout=120)
        lv.sync()
        lv.assert_matches_disk()
        status = lv.call("status")
        assert status["pid"] == pid
        figures["catalog_end"] = status["totals"]
        figures.update(counts)
        # Every abuse here is the client's doing: none is an error of the daemon's.
        figures["socket_errors"] = proc.seen("socket.error")[:5]
        lv.client.close()
    finally:
        stop.set()
        code = proc.stop(timeout=30)
    assert code == 0, proc.tail()
    assert figures["socket_errors"] == [], figures["socket_errors"]
    # SQLite's memory stays under its budget (a soft one: a little over is allowed),
    assert figures["sqlite_peak_kib"] <= figures["sqlite_budget_kib"] * 1.1, figures
    # and the rest stops growing once warm.
    assert figures["other_end_kib"] <= figures["other_warm_kib"] * 1.1 + 4096, figures
    figures["wall_s"] = round(time.monotonic() - t0, 1)
    say(report("soak", figures))
    return figures


def test_client_that_stops_reading_is_dropped_quietly(tmp_path: Path) -> None:
    """A client that never reads its answers is dropped as a socket.timeout, not logged as a socket.error."""
    root = tmp_path / "root1"
    make_files(root, 300, per_dir=30)
    setup = scenario_config(
        tmp_path, [root], daemon={"client_request_timeout": "1s", "client_idle_timeout": "3s"}
    )
    sock = setup.socket
    proc = setup.start("--log-level", "debug")
    try:
        proc.wait_event("daemon.ready", timeout=60)
        live_view(proc, [root], "watchdog").sync()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.settimeout(10)
            request = b'{"jsonrpc": "2.0", "id": 1, "method": "list", "params": {"limit": 10000}}\n'
            s.sendall(request * 50)  # about 5 MB of answers, never read
            dropped = wait_for(
                lambda: proc.seen("socket.timeout") or proc.seen("socket.error"), timeout=30
            )
        assert proc.seen("socket.error") == [], dropped
        assert dropped[0]["event"] == "socket.timeout"
    finally:
        assert proc.stop(timeout=30) == 0


def test_socket_abuse_soak(tmp_path: Path) -> None:
    """Ten seconds of malformed, oversize, stalled and greedy clients beside good ones: right answers, catalog equals disk, flat memory."""
    print(report("soak", soak_drill(tmp_path, seconds=10)))
