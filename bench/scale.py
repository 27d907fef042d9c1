"""Scale benchmark: start-up, memory and catalog size at a million files, beside find and watchman.

    python bench/scale.py                      # 1,000,000 files in 10,000 dirs, 3 runs
    python bench/scale.py --files 100000 --dirs 1000 --runs 3

The tree is bench/sweep.py's (built once). Each run measures, one tool at a
time and on a warm cache:

1. ``find -printf '%i %s %T@ %p\\n'``, the baseline (bench/sweep.py's);
2. watchman: a private server (bench/_watchman.py) is started, then timed
   from ``watchman watch TREE`` until a ``query`` with a sync cookie
   answers; watchman sees the cookie only after its crawl, so the answer
   means the crawl is complete. Then its memory once idle, and its
   inotify watches; the server is shut down;
3. filewarden's first index: a real daemon (watchdog backend, hashing off
   as in the other benchmarks) on a fresh state dir, started with
   NOTIFY_SOCKET on a datagram socket of ours, as systemd does for
   ``Type=notify``: time from its start to READY=1 and to the
   ``sweep.finish`` of its start-up full sweep (the log's timestamp). Then
   its memory once idle, with every directory watched;
4. the restart: the same daemon stopped and started again on the catalog
   it just built. Time to READY=1 (the contract's target: at most 1.5x
   ``find``) and to the start-up sweep's ``sweep.finish``; its memory at
   rest (VmRSS and the peak VmHWM from /proc/PID/status) once the sweep
   is over and the process idle; the catalog on disk (catalog.db, -wal
   and -shm) while it runs and after it stopped.

Reported: the median of each over the runs, with ratios to ``find`` and to
watchman's crawl side by side. The JSON of every run goes to stdout's last
line and to scale.json in the work dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import _args
import _tree
from _measure import (
    LimitWatch,
    catalog_bytes,
    connect,
    daemon_setup,
    find_command,
    memory_kib,
    require_watched,
    start_and_sweep,
    stop,
    timed,
    wait_idle,
)
from _watchman import WatchmanServer
from filewarden.testing import Setup
from filewarden.watch.limits import _watches_of, count_dirs


def watchman_crawl(work: Path, tree: Path) -> dict[str, Any]:
    """A fresh watchman: seconds from ``watch`` to the crawl complete, then its memory at rest."""
    server = WatchmanServer(work / "scale-watchman")
    try:
        t0 = time.monotonic()
        server.call("watch", str(tree))
        # 4.9's ``watch`` already waits for the crawl; the cookie makes sure.
        server.call("query", str(tree), {"expression": ["false"], "sync_timeout": 1_800_000})
        crawl = time.monotonic() - t0
        idle = wait_idle(server.pid)
        return {
            "crawl_s": crawl,
            "idle": idle,
            "watches": _watches_of(str(server.pid)),
            **memory_kib(server.pid),
            "own_crawl_s": own_crawl_seconds(server.log),
        }
    finally:
        server.close()


def own_crawl_seconds(log: Path) -> float | None:
    """watchman's own timing of its full crawl, from the PERF line of its log (if it wrote one)."""
    for line in log.read_text(errors="replace").splitlines():
        _, _, perf = line.partition("PERF: ")
        if perf.startswith("{"):
            sample = json.loads(perf)
            if sample.get("description") == "full-crawl":
                return float(sample["elapsed_time"])
    return None


def daemon_start(setup: Setup, tree: Path) -> dict[str, Any]:
    """Start the daemon, time READY=1 and its start-up sweep, then read its memory at rest."""
    daemon, got = start_and_sweep(setup, notify=True)
    pid = daemon.pid
    with connect(daemon) as c:
        require_watched(c, [tree], "watchdog")
        present = c.call("status")["roots"][0]["files"]["present"]
    got["idle"] = wait_idle(pid)
    got |= memory_kib(pid)
    got["watches"] = _watches_of(str(pid))
    got["present"] = present
    got["catalog_bytes_running"] = catalog_bytes(setup.catalog)
    stop(daemon)
    got["catalog_bytes_stopped"] = catalog_bytes(setup.catalog)
    return got


def one_run(work: Path, tree: Path, setup: Setup, files: int, watchman: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    run: dict[str, Any] = {"find_s": timed(find_command(tree))}
    if watchman:
        run["watchman"] = watchman_crawl(work, tree)
    setup.reset_state()
    run["first"] = first = daemon_start(setup, tree)
    assert first["kind"] == "full" and first["new"] == files == first["present"], first
    run["restart"] = again = daemon_start(setup, tree)
    assert again["kind"] == "full" and again["present"] == files, again
    assert again["new"] == again["changed"] == again["missing"] == 0, again
    run["loadavg"] = {"before": load_before, "after": os.getloadavg()}
    return run


def report(args: argparse.Namespace, runs: list[dict[str, Any]], dirs_in_tree: int) -> None:
    def med(*keys: str) -> float:
        values = []
        for r in runs:
            v: Any = r
            for k in keys:
                v = v[k]
            values.append(v)
        return float(statistics.median(values))

    find = med("find_s")
    crawl = med("watchman", "crawl_s") if args.watchman else None

    def ratios(t: float, target: str = "") -> str:
        out = f"{t / find:>7.2f}x"
        out += f" {t / crawl:>9.2f}x" if crawl else f" {'':>10}"
        return out + (f"  {target}" if target else "")

    print(
        f"\n{args.files:,} files in {args.dirs:,} directories, median of {args.runs} runs "
        f"(filewarden: watchdog backend, hashing off)\n"
    )
    print(f"{'what':40} {'median':>9} {'/ find':>8} {'/ watchman':>10}")
    rows: list[tuple[str, float, str]] = [("find -printf", find, "")]
    if crawl:
        rows.append(("watchman: watch -> crawl complete", crawl, ""))
    rows += [
        ("filewarden first index: READY=1", med("first", "to_ready_notify_s"), ""),
        (
            "filewarden first index: sweep.finish",
            med("first", "to_sweep_finish_s"),
            "(bench/sweep.py: <= 2.0x find)",
        ),
        (
            "filewarden restart: READY=1",
            med("restart", "to_ready_notify_s"),
            "(target <= 1.5x find)",
        ),
        (
            "filewarden restart: sweep.finish",
            med("restart", "to_sweep_finish_s"),
            "(target <= 1.5x find)",
        ),
    ]
    for label, t, target in rows:
        print(f"{label:40} {t:>8.3f}s {ratios(t, target)}")
    own = [r["watchman"]["own_crawl_s"] for r in runs if r.get("watchman", {}).get("own_crawl_s")]
    if own:
        print(f"(watchman's own full-crawl figure, from its log: {statistics.median(own):.3f} s)")

    def mb(kib: float) -> str:
        return f"{kib / 1024:>7.1f} MB"

    print(f"\n{'memory at rest, idle':40} {'VmRSS':>10} {'VmHWM':>10} {'watches':>8}")
    mem = [
        ("filewarden after the first index", "first"),
        ("filewarden after a restart", "restart"),
    ]
    if crawl:
        mem.append(("watchman after its crawl", "watchman"))
    for label, key in mem:
        print(
            f"{label:40} {mb(med(key, 'VmRSS'))} {mb(med(key, 'VmHWM'))} "
            f"{med(key, 'watches'):>8,.0f}"
        )
    if crawl:
        print(
            f"{'filewarden / watchman, at rest':40} "
            f"{med('restart', 'VmRSS') / med('watchman', 'VmRSS'):>9.2f}x "
            f"{med('restart', 'VmHWM') / med('watchman', 'VmHWM'):>9.2f}x"
        )
    print(f"(directories in the tree, the root included: {dirs_in_tree:,})")

    running, stopped = (
        med("restart", "catalog_bytes_running"),
        med("restart", "catalog_bytes_stopped"),
    )
    print(
        f"\n{'catalog on disk, daemon at rest':40} {running / 2**20:>7.1f} MB "
        f"{running / args.files:>6.0f} bytes/file"
    )
    print(
        f"{'catalog on disk, daemon stopped':40} {stopped / 2**20:>7.1f} MB "
        f"{stopped / args.files:>6.0f} bytes/file"
    )
    loads = [x for r in runs for x in (*r["loadavg"]["before"], *r["loadavg"]["after"])]
    print(
        f"\nload average (1/5/15 min) over the runs: {min(loads):.2f} to {max(loads):.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    if not all(r["first"]["idle"] and r["restart"]["idle"] for r in runs):
        print("WARNING: the daemon was not idle within the deadline; memory read anyway")


def main() -> None:
    parser = _args.parser(__doc__, files=1_000_000, dirs=10_000, runs=3)
    parser.add_argument("--no-watchman", dest="watchman", action="store_false")
    args = parser.parse_args()
    if args.watchman and not shutil.which("watchman"):
        raise SystemExit("watchman not found: apt-get install watchman, or --no-watchman")

    work = args.workdir / f"{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    dirs_in_tree = count_dirs(os.fsencode(tree))
    setup = daemon_setup(work, "scale", [tree])
    limits = LimitWatch()
    timed(find_command(tree))  # warm the cache

    runs = []
    for n in range(args.runs):
        run = one_run(work, tree, setup, args.files, args.watchman)
        lowered = limits.take()
        if lowered:
            run["inotify_limits_lowered_by_another_process"] = lowered
        runs.append(run)
        wm = run.get("watchman", {})
        print(
            f"run {n + 1}/{args.runs}: find {run['find_s']:.3f} s"
            + (f", watchman crawl {wm['crawl_s']:.3f} s" if wm else "")
            + f", first index READY {run['first']['to_ready_notify_s']:.3f} s"
            f" sweep.finish {run['first']['to_sweep_finish_s']:.3f} s"
            f", restart READY {run['restart']['to_ready_notify_s']:.3f} s"
            f" sweep.finish {run['restart']['to_sweep_finish_s']:.3f} s"
            f", loadavg {run['loadavg']['before'][0]:.2f}->{run['loadavg']['after'][0]:.2f}",
            flush=True,
        )

    report(args, runs, dirs_in_tree)
    if any("inotify_limits_lowered_by_another_process" in r for r in runs):
        print("WARNING: fs.inotify limits were lowered during a run by another process")
    result = {"files": args.files, "dirs": args.dirs, "runs": runs}
    (work / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
