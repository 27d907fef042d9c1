"""Live-rename latency: from ``rename()`` returning to the catalog answering at the new path.

    python bench/watch_latency.py                          # 100,000 files in 1,000 dirs, 1,000 renames, 3 runs
    python bench/watch_latency.py --backend pyinotify
    python bench/watch_latency.py --files 10000 --dirs 100 --renames 200 --runs 2

Builds (once) a tree, then in each run renames ``--renames`` random files,
one after the other, each to a new name in the same directory or in
another one (half and half), and measures three things on the same tree
and the same renames, one after the other:

* filewarden: a real daemon watching the tree; the latency is from
  ``os.rename()`` returning until ``lookup`` of the new path over the
  socket answers with the file's id (polled in a tight loop);
* raw watchdog: an ``InotifyObserver(generate_full_events=True)`` with the
  daemon's own event filter, in this process; the latency is until its
  handler receives the ``FileMovedEvent`` of the new path. This is the
  floor under the daemon's watchdog backend;
* watchman: a private watchman server (its own socket, state and log
  files) watching the tree, with ``settle`` set to ``--watchman-settle-ms``
  (1 ms by default, watchman's default is 20 ms) in a ``.watchmanconfig`` at
  the root of the tree; the latency is until a subscription PDU naming the
  new path is read from a persistent ``watchman -p -j`` client.

After each tool's renames the files are renamed back, so every tool and
every run sees the same tree. The daemon is stopped while the other two are
measured (and they are stopped while it is), so no tool pays for another's
events. Reported: p50 and p99 of each (median over the runs) and the
daemon's ratio to each. Hashing is off in the daemon (``--hash`` turns it
on, and then the measurement waits for the first hashing pass to end).

``--feed`` measures what an app following the feed waits for: from
``os.rename()`` to the ``move`` notification on a ``subscribe`` connection,
beside watchman's subscription PDU in the same run. ``--crowd`` keeps 100
clients holding ``changes`` calls and 9 more subscribed (all following the
journal) while the renames are measured: 109 threads of the client library
in a process of their own. ``--lean-crowd`` is the same crowd as one thread
over raw sockets and epoll, as an event-driven app server holds its
connections: the crowd's own CPU then weighs less on the shared cores.

``--importing`` (hashing on) renames while the hasher works: before the
renames, a fresh import (10,000 small files and ``--import-large`` 2 MB
ones) is made beside the tree and moved into it at once, as a downloaded
album is, and recorded by a ``sync``. Each run also reports how many of its
files were still to hash when the renames ended (``unhashed_at_end``: above
0, the hasher was busy throughout) and the seconds from deleting the import
to ``sync`` returning (``delete_import_s``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import _args
import _tree
from _measure import (
    LimitWatch,
    connect,
    daemon_setup,
    inotify_limits,
    percentile,
    require_watched,
    start,
    stop,
)
from _watchman import WatchmanServer
from filewarden.client import Client, Reset, Unreachable
from filewarden.testing import DaemonProcess, Setup
from filewarden.watch.limits import count_dirs, own_watches
from filewarden.watch.watchdog_backend import EVENT_FILTER

Renames = list[tuple[str, str]]


def plan_renames(tree: Path, count: int, seed: int) -> Renames:
    """``count`` distinct random files, each to a new name here or in another directory."""
    dirs = sorted(str(d) for top in tree.iterdir() if top.is_dir() for d in top.iterdir())
    rng = random.Random(seed)
    chosen: set[str] = set()
    out: Renames = []
    listing: dict[str, list[str]] = {}
    while len(out) < count:
        d = rng.choice(dirs)
        names = listing.setdefault(d, sorted(n for n in os.listdir(d) if n.startswith("file")))
        src = f"{d}/{rng.choice(names)}"
        if src in chosen:
            continue
        chosen.add(src)
        dst_dir = d if rng.random() < 0.5 else rng.choice(dirs)
        out.append((src, f"{dst_dir}/moved{len(out):06d}.dat"))
    return out


def undo(renames: Renames) -> None:
    for src, dst in reversed(renames):
        os.rename(dst, src)


def undo_leftovers(renames: Renames) -> None:
    """After a failure: put back whatever is still renamed, so the tree stays the same."""
    for src, dst in reversed(renames):
        if os.path.lexists(dst) and not os.path.lexists(src):
            os.rename(dst, src)


# -- raw watchdog -------------------------------------------------------------------


def measure_watchdog(tree: Path, renames: Renames, timeout: float) -> list[float]:
    from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    class Recorder(FileSystemEventHandler):
        def __init__(self) -> None:
            self.want = b""
            self.at = 0.0
            self.done = threading.Event()

        def dispatch(self, event: FileSystemEvent) -> None:
            if isinstance(event, FileMovedEvent) and event.dest_path == self.want:
                self.at = time.perf_counter()
                self.done.set()

    rec = Recorder()
    observer = InotifyObserver(generate_full_events=True)
    observer.start()
    before = own_watches()
    # bytes, as the daemon schedules it
    observer.schedule(rec, os.fsencode(tree), recursive=True, event_filter=EVENT_FILTER)  # type: ignore[arg-type]
    lat = []
    try:
        added, needed = own_watches() - before, count_dirs(os.fsencode(tree))
        if added < needed:  # watchdog swallows ENOSPC below the root
            raise SystemExit(
                f"watchdog: only {added} of {needed} directories watched; "
                f"fs.inotify: {inotify_limits()}"
            )
        for src, dst in renames:
            rec.want = os.fsencode(dst)
            rec.done.clear()
            os.rename(src, dst)
            t0 = time.perf_counter()
            if not rec.done.wait(timeout):
                raise SystemExit(f"watchdog: no move event for {dst} within {timeout} s")
            lat.append(rec.at - t0)
        # drain: the last undo's event marks all of them delivered
        rec.want = os.fsencode(renames[0][0])
        rec.done.clear()
        undo(renames)
        rec.done.wait(timeout)
    finally:
        observer.stop()
        observer.join(10)
        undo_leftovers(renames)
    return lat


# -- watchman -----------------------------------------------------------------------


class Watchman:
    """A private watchman server and one persistent subscription to the tree."""

    def __init__(self, work: Path, tree: Path, settle_ms: int) -> None:
        self.tree = tree
        (tree / ".watchmanconfig").write_text(json.dumps({"settle": settle_ms}))
        self.server = WatchmanServer(work / "watchman")
        subprocess.run(
            self.server.client("watch-project", str(tree)),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.sub = subprocess.Popen(
            # One JSON line per PDU. Not --server-encoding=json: with it the
            # 4.9 client holds the PDUs back when its stdout is a pipe.
            self.server.client("--output-encoding=json", "-p", "-j"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.sub.stdin is not None
        query = {
            "expression": ["type", "f"],
            "fields": ["name", "exists"],
        }
        self.sub.stdin.write(json.dumps(["subscribe", str(tree), "bench", query]).encode())
        self.sub.stdin.close()
        self.want = ""
        self.at = 0.0
        self.done = threading.Event()
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(600):
            raise SystemExit("watchman: no answer to subscribe")

    def _read(self) -> None:
        assert self.sub.stdout is not None
        for line in self.sub.stdout:
            t = time.perf_counter()
            pdu = json.loads(line)
            if "subscribe" in pdu:
                self.ready.set()  # answered after the root's crawl
            if "subscription" not in pdu or pdu.get("is_fresh_instance"):
                continue
            for f in pdu.get("files", ()):
                if f.get("exists") and f.get("name") == self.want:
                    self.at = t
                    self.done.set()

    def measure(self, renames: Renames, timeout: float) -> list[float]:
        prefix = len(str(self.tree)) + 1
        lat = []
        for src, dst in renames:
            self.want = dst[prefix:]
            self.done.clear()
            os.rename(src, dst)
            t0 = time.perf_counter()
            if not self.done.wait(timeout):
                raise SystemExit(f"watchman: no PDU for {dst} within {timeout} s")
            lat.append(self.at - t0)
        self.want = renames[0][0][prefix:]
        self.done.clear()
        undo(renames)
        self.done.wait(timeout)
        return lat

    def close(self) -> None:
        self.sub.terminate()
        self.sub.wait(10)
        self.server.close()


# -- the daemon -----------------------------------------------------------------------


IMPORT_SMALL = 10_000  # small files of a fresh import (--importing); --import-large: 2 MB ones
SMALL_BYTES, LARGE_BYTES = 600, 2_000_000


def make_import(where: Path, seed: int, large: int) -> None:
    """A fresh import: 10,000 small files in 100 directories and ``large`` large ones, all new content."""
    rng = random.Random(seed)
    for i in range(IMPORT_SMALL):
        d = where / f"album{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"small{i:05d}.dat").write_bytes(rng.randbytes(SMALL_BYTES))
    big = where / "large"
    big.mkdir(parents=True, exist_ok=True)
    for i in range(large):
        (big / f"large{i:03d}.dat").write_bytes(rng.randbytes(LARGE_BYTES))


def measure_daemon(
    setup: Setup,
    tree: Path,
    backend: str,
    renames: Renames,
    timeout: float,
    hash_enabled: bool,
    importing: int = 0,
    feed: bool = False,
    load: bool = False,
    lean: bool = False,
) -> tuple[list[float], dict[str, float]]:
    daemon = start(setup)
    imported = tree / "import"
    crowd: Crowd | None = None
    try:
        daemon.wait_event("sweep.finish", timeout=1800)
        with connect(daemon) as c:
            require_watched(c, [tree], backend)
            if hash_enabled:
                while c.call("status")["hashing"]["pending"]:
                    time.sleep(0.5)
            unhashed_at_end = 0
            if importing:
                # Made beside the tree and moved in at once, as a downloaded album is:
                # recorded by the sync, then hashed in the background while we rename.
                staging = tree.parent / "import-staging"
                shutil.rmtree(staging, ignore_errors=True)
                make_import(staging, seed=len(renames), large=importing)
                staging.rename(imported)
                c.call("sync", {"timeout_s": 300})
            ids = {}
            for src, _ in renames:
                rec = c.call("lookup", {"path": src})
                assert rec is not None, src
                ids[src] = rec["id"]
            lat: list[float] = []
            wrong = late = 0
            seq = int(c.call("status")["seq"])
            if load:
                crowd = Crowd(daemon, seq, lean=lean)
            if feed:
                lat, late, wrong = measure_feed(daemon, seq, renames, ids, timeout)
            for src, dst in [] if feed else renames:
                os.rename(src, dst)
                t0 = time.perf_counter()
                deadline = t0 + timeout
                while True:
                    rec = c.call("lookup", {"path": dst})
                    now = time.perf_counter()
                    if rec is not None and rec["id"] == ids[src]:
                        lat.append(now - t0)
                        break
                    if now > deadline:
                        late += 1
                        if rec is not None:
                            wrong += 1
                        break
            if crowd is not None:
                crowd.stop()
            delete_import_s = 0.0
            if importing:
                unhashed_at_end = int(c.call("status")["hashing"]["pending"])
                # Deleting the fresh import: every file a departure to weigh for a copy.
                t0 = time.perf_counter()
                shutil.rmtree(imported)
                c.call("sync", {"timeout_s": 600})
                delete_import_s = round(time.perf_counter() - t0, 3)
            undo(renames)
            c.call("sync", {"timeout_s": 300})
            moved_back = sum(
                1
                for src, _ in renames
                if (c.call("lookup", {"path": src}) or {}).get("id") == ids[src]
            )
        logged = list(daemon.records())
        moves = sum(1 for r in logged if r.get("event") == "file.move")
        overflows = sum(1 for r in logged if r.get("event") == "watcher.overflow")
    finally:
        if crowd is not None:
            crowd.stop()
        stop(daemon)
        undo_leftovers(renames)
        shutil.rmtree(imported, ignore_errors=True)
    extra = crowd.counts() if crowd is not None else {}
    return lat, {
        **extra,
        # With --importing: files the hasher had still to do when the renames ended
        # (above 0: it was busy throughout).
        "unhashed_at_end": unhashed_at_end,
        # With --importing: seconds from deleting the import to the catalog agreeing.
        "delete_import_s": delete_import_s,
        "late": late,
        "wrong_id": wrong,
        "file_move_events": moves,
        "overflows": overflows,
        "ids_back_at_start": moved_back,
    }


def measure_feed(
    daemon: DaemonProcess, seq: int, renames: Renames, ids: dict[str, int], timeout: float
) -> tuple[list[float], int, int]:
    """Rename -> the ``move`` notification of a subscription (``subscribe``): what an app
    following the feed waits for."""
    lat: list[float] = []
    late = wrong = 0
    assert daemon.socket is not None
    sub = Client(daemon.socket, timeout=timeout)
    try:
        stream = sub.subscribe(seq, kinds=["move"])
        for src, dst in renames:
            os.rename(src, dst)
            t0 = time.perf_counter()
            entry = next(stream)
            now = time.perf_counter()
            if isinstance(entry, Reset) or entry["path"] != dst or entry["id"] != ids[src]:
                wrong += 1
            elif now - t0 > timeout:
                late += 1
            else:
                lat.append(now - t0)
    finally:
        sub.close()
    return lat, late, wrong


class Crowd:
    """100 clients holding ``changes`` calls and 9 more subscribed, all following the
    journal while the renames are measured: in a process of their own, so that their
    reading costs the measuring client nothing."""

    def __init__(
        self,
        daemon: DaemonProcess,
        seq: int,
        waiting: int = 100,
        subscribed: int = 9,
        lean: bool = False,
    ) -> None:
        assert daemon.socket is not None
        ctx = multiprocessing.get_context("spawn")
        self.halt = ctx.Event()
        self.results: Any = ctx.Queue()
        self.proc = ctx.Process(
            target=_lean_crowd if lean else _crowd,
            args=(str(daemon.socket), seq, waiting, subscribed, self.halt, self.results),
        )
        self.proc.start()
        self.got: dict[str, float] = {}
        with Client(daemon.socket) as c:  # every one of them in place before the first rename
            while True:
                sock = c.call("status")["socket"]
                if sock["waiting"] >= waiting and sock["subscribers"] >= subscribed:
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        if self.halt.is_set():
            return
        self.halt.set()
        self.got = self.results.get(timeout=60)
        self.proc.join(30)

    def counts(self) -> dict[str, float]:
        return self.got


def _crowd(sock: str, seq: int, waiting: int, subscribed: int, halt: Any, results: Any) -> None:
    """The crowd's process: its threads follow the journal until ``halt``."""
    lock = threading.Lock()
    counts = {"crowd_changes_answers": 0, "crowd_notifications": 0}
    subs: list[Client] = []

    def wait(since: int) -> None:
        with Client(sock, timeout=60) as c:
            while not halt.is_set():
                since = c.changes(since, wait=2)["seq"]
                with lock:
                    counts["crowd_changes_answers"] += 1

    def follow(since: int) -> None:
        sub = Client(sock)
        with lock:
            subs.append(sub)
        try:
            for _ in sub.subscribe(since):
                with lock:
                    counts["crowd_notifications"] += 1
        except (Unreachable, OSError, ValueError):
            pass  # interrupted at the end

    threads = [threading.Thread(target=wait, args=(seq,)) for _ in range(waiting)]
    threads += [threading.Thread(target=follow, args=(seq,)) for _ in range(subscribed)]
    for t in threads:
        t.start()
    halt.wait()
    for sub in subs:
        sub.interrupt()
    for t in threads:
        t.join(10)
    results.put(counts)


def _lean_crowd(
    sock: str, seq: int, waiting: int, subscribed: int, halt: Any, results: Any
) -> None:
    """The crowd as one thread over raw sockets and epoll, as an event-driven app
    server would hold its connections: its own CPU (and the wake-ups of a hundred
    threads) then stands less for the daemon's."""
    import selectors
    import socket

    counts = {"crowd_changes_answers": 0, "crowd_notifications": 0}
    sel = selectors.DefaultSelector()

    def ask(conn: socket.socket, since: int) -> None:
        params = {"since": since, "wait": 2}
        line = {"jsonrpc": "2.0", "id": 1, "method": "changes", "params": params}
        conn.sendall(json.dumps(line).encode() + b"\n")

    conns: dict[int, socket.socket] = {}
    for i in range(waiting + subscribed):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock)
        if i < waiting:
            ask(conn, seq)
        else:
            request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"since": seq}}
            conn.sendall(json.dumps(request).encode() + b"\n")
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, [i < waiting, b""])
        conns[conn.fileno()] = conn
    while not halt.is_set():
        for key, _ in sel.select(0.2):
            conn, state = conns[key.fd], key.data
            try:
                data = conn.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(conn)
                continue
            lines = (state[1] + data).split(b"\n")
            state[1] = lines.pop()
            for line in lines:
                if state[0]:
                    counts["crowd_changes_answers"] += 1
                    ask(conn, json.loads(line)["result"]["seq"])
                else:
                    counts["crowd_notifications"] += 1
    for conn in conns.values():
        conn.close()
    results.put(counts)


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, dirs=1_000, runs=3, backend=True, hashing=True)
    parser.add_argument("--renames", type=int, default=1_000)
    parser.add_argument("--watchman-settle-ms", type=int, default=1)
    parser.add_argument("--no-watchman", action="store_true")
    parser.add_argument(
        "--importing",
        action="store_true",
        help="rename while the hasher works on a fresh import (10,000 small and --import-large"
        " 2 MB files); implies --hash",
    )
    parser.add_argument(
        "--import-large",
        type=int,
        default=200,
        help="2 MB files in the import (default 200): enough that unhashed_at_end stays above 0",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds one rename may take to show"
    )
    parser.add_argument(
        "--feed",
        action="store_true",
        help="filewarden's latency is rename -> its `move` notification on a subscription",
    )
    parser.add_argument(
        "--crowd",
        action="store_true",
        help="while measuring, 100 clients hold `changes` calls and 9 more are subscribed",
    )
    parser.add_argument(
        "--lean-crowd",
        action="store_true",
        help="the crowd as one epoll thread over raw sockets, not 109 threads of the client",
    )
    args = parser.parse_args()
    args.hash = args.hash or args.importing

    work = args.workdir / f"watch-{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    leftovers = list(tree.glob("*/*/moved*.dat"))
    if leftovers:
        raise SystemExit(
            f"{len(leftovers)} files of an interrupted run are still renamed: "
            f"remove {work / '.bench-tree.json'} to rebuild the tree"
        )
    watchman = None if args.no_watchman else shutil.which("watchman")
    setup = daemon_setup(
        work,
        f"latency-{args.backend}",
        [tree],
        backend=args.backend,
        hash_enabled=args.hash,
        exclude=(".watchmanconfig",),
    )
    setup.reset_state()  # the same catalog every time: a first index of this tree
    limits = LimitWatch()
    tools = ["filewarden", "watchdog"] + (["watchman"] if watchman else [])
    p50: dict[str, list[float]] = {t: [] for t in tools}
    p99: dict[str, list[float]] = {t: [] for t in tools}
    checks = []
    for run in range(args.runs):
        renames = plan_renames(tree, args.renames, seed=run + 1)
        got: dict[str, list[float]] = {}
        got["watchdog"] = measure_watchdog(tree, renames, args.timeout)
        if watchman:
            wm = Watchman(work, tree, args.watchman_settle_ms)
            try:
                got["watchman"] = wm.measure(renames, args.timeout)
            finally:
                wm.close()
                undo_leftovers(renames)
        got["filewarden"], check = measure_daemon(
            setup,
            tree,
            args.backend,
            renames,
            args.timeout,
            args.hash,
            args.import_large if args.importing else 0,
            feed=args.feed,
            load=args.crowd or args.lean_crowd,
            lean=args.lean_crowd,
        )
        lowered = limits.take()
        if lowered:
            check["inotify_limits_lowered_by_another_process"] = lowered  # type: ignore[assignment]
        checks.append(check)
        for t in tools:
            p50[t].append(percentile(got[t], 0.5) * 1e3)
            p99[t].append(percentile(got[t], 0.99) * 1e3)
        print(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{t} p50={p50[t][-1]:.3f} p99={p99[t][-1]:.3f} ms" for t in tools)
            + f"; {check}",
            flush=True,
        )

    med50 = {t: statistics.median(v) for t, v in p50.items()}
    med99 = {t: statistics.median(v) for t, v in p99.items()}
    print(
        f"\nlive rename latency, {args.files:,} files in {args.dirs:,} dirs, "
        f"{args.renames:,} renames one after the other, median of {args.runs} runs\n"
    )
    print(f"{'what':42} {'p50':>10} {'p99':>10}")
    labels = {
        "filewarden": f"filewarden ({args.backend}), rename -> "
        + ("notification" if args.feed else "lookup")
        + (", lean crowd" if args.lean_crowd else ", crowd" if args.crowd else ""),
        "watchdog": "raw watchdog, rename -> handler",
        "watchman": f"watchman (settle {args.watchman_settle_ms} ms), rename -> PDU",
    }
    for t in tools:
        print(f"{labels[t]:42} {med50[t]:>7.3f} ms {med99[t]:>7.3f} ms")
    fw50, fw99 = med50["filewarden"], med99["filewarden"]
    print(f"\nfilewarden p50 {fw50:.3f} ms (target <= 3), p99 {fw99:.3f} ms (target <= 10)")
    for t in tools[1:]:
        print(f"filewarden / {t}: p50 {fw50 / med50[t]:.2f}x, p99 {fw99 / med99[t]:.2f}x")
    late = sum(c["late"] for c in checks)
    if late:
        print(f"WARNING: {late} renames not answered within {args.timeout} s: {checks}")
    if any("inotify_limits_lowered_by_another_process" in c for c in checks):
        print(
            f"WARNING: fs.inotify limits (start: {limits.start_values}) were lowered during "
            "a run by another process; those runs are not representative"
        )
    print(json.dumps({"p50_ms": p50, "p99_ms": p99, "checks": checks}))


if __name__ == "__main__":
    main()
