"""Bulk live changes: a huge directory renamed, and create storms beside watchman.

    python bench/watch_bulk.py                      # 100,000 files, 3 runs, hashing on
    python bench/watch_bulk.py --files 50000 --runs 5
    python bench/watch_bulk.py --backend pyinotify --no-hash --on tmpfs

One real daemon, in its default configuration (hashing on), watches three
roots: a tree on disk holding one directory of ``--files`` files, and an
empty directory for storms on each filesystem (``--on``): a tmpfs mounted
for the run, and the work dir's disk, whose writeback here swings a bare
create loop from 1 s to 26 s, so the tmpfs figure is the one to compare.

* directory rename: the directory is renamed (to another name and back
  again in the next run). Timed from ``rename()`` returning until
  ``lookup`` of its last file, at its new path, answers with its id; then
  ``list`` checks that every file's path changed and every id stayed, and
  the log that the daemon logged one ``dir.move`` with all the files;
* create storm, on each filesystem, three ways in turn:

  - **alone**: ``--files`` files (open, write 100 bytes, close) are made in
    a directory nobody watches, the loop timed: the creating program's
    speed without a watcher;
  - **filewarden**: the same loop in a watched directory, then ``sync``.
    Reported: the loop's time (and its slowdown against *alone*), files
    per second from the first create until ``sync`` returns, the daemon's
    CPU over that time (in cores), and ``status`` totals, which must grow
    by exactly ``--files``: lost 0;
  - **watchman**: a private watchman server watching a directory beside
    them; the same loop, then a query with ``sync_timeout`` (watchman's
    cookie, like ``sync``) until it lists every file. Reported the same
    way, with watchman's CPU.

  Kernel queue overflows (each answered by the daemon with a sweep) are
  counted from the log. Between runs the files are deleted and purged, so
  each run starts from the same catalog.

Each figure is the median over ``--runs`` runs, with the ratios that
matter: filewarden's files/s against watchman's, and each loop's slowdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import _args
import _tree
from _measure import (
    LimitWatch,
    connect,
    cpu_seconds,
    daemon_setup,
    require_watched,
    start,
    stop,
)
from _watchman import WatchmanServer
from filewarden.client import Client
from filewarden.testing import DaemonProcess, files


def root_files(c: Client, prefix: str) -> dict[int, str]:
    return {r["id"]: r["path"] for r in files(c, "present") if r["path"].startswith(prefix)}


def dir_rename(
    daemon: DaemonProcess, c: Client, parent: Path, src: str, dst: str, timeout: float
) -> dict[str, float]:
    before = root_files(c, f"{parent}/{src}/")
    names = sorted(os.listdir(parent / src))
    last_old, last_new = f"{parent}/{src}/{names[-1]}", f"{parent}/{dst}/{names[-1]}"
    want = c.call("lookup", {"path": last_old})["id"]
    daemon.records()  # skip the log so far
    t_syscall = time.perf_counter()
    os.rename(parent / src, parent / dst)
    t0 = time.perf_counter()
    while True:
        rec = c.call("lookup", {"path": last_new})
        now = time.perf_counter()
        if rec is not None and rec["id"] == want:
            break
        if now - t0 > timeout:
            raise SystemExit(f"directory rename: {last_new} not in the catalog after {timeout} s")
    seconds = now - t0
    after = root_files(c, f"{parent}/{dst}/")
    moved_ok = sum(
        1
        for fid, path in before.items()
        if after.get(fid) == f"{parent}/{dst}/{path.rsplit('/', 1)[1]}"
    )
    events = [r for r in daemon.records() if r.get("event") == "dir.move"]
    return {
        "seconds": seconds,
        "rename_syscall_s": t0 - t_syscall,
        "files_before": len(before),
        "moved_with_id": moved_ok,
        "left_behind": len(root_files(c, f"{parent}/{src}/")),
        "dir_move_events": len(events),
        "dir_move_files": sum(int(e.get("files", 0)) for e in events),
    }


FLAGS = os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
PAYLOAD = b"x" * 100


def create_loop(batch: Path, files: int) -> float:
    """Make ``files`` small files in ``batch``; the loop's seconds."""
    base = os.fsencode(batch) + b"/new%07d.dat"
    t0 = time.perf_counter()
    for i in range(files):
        fd = os.open(base % i, FLAGS, 0o644)
        os.write(fd, PAYLOAD)
        os.close(fd)
    return time.perf_counter() - t0


def alone(parent: Path, files: int) -> dict[str, float]:
    batch = parent / "alone"
    shutil.rmtree(batch, ignore_errors=True)
    batch.mkdir(parents=True)
    seconds = create_loop(batch, files)
    shutil.rmtree(batch)
    return {"create_loop_s": seconds}


def creation_burst(daemon: DaemonProcess, c: Client, batch: Path, files: int) -> dict[str, float]:
    batch.mkdir()
    c.call("sync", {"timeout_s": 600})  # the new directory is watched from here on
    present0 = c.call("status")["totals"]["present"]
    daemon.records()
    cpu0 = cpu_seconds(daemon.pid)
    t0 = time.perf_counter()
    loop = create_loop(batch, files)
    t1 = time.perf_counter()
    c.call("sync", {"timeout_s": 900})
    t2 = time.perf_counter()
    cpu = cpu_seconds(daemon.pid) - cpu0
    present1 = c.call("status")["totals"]["present"]
    logs = list(daemon.records())
    out = {
        "create_loop_s": loop,
        "to_sync_s": t2 - t0,
        "after_loop_s": t2 - t1,
        "files_per_s": files / (t2 - t0),
        "cpu_cores": cpu / (t2 - t0),
        "added": present1 - present0,
        "lost": files - (present1 - present0),
        "overflows": sum(1 for r in logs if r.get("event") == "watcher.overflow"),
        "sweeps": sum(1 for r in logs if r.get("event") == "sweep.finish"),
    }
    # back to the same catalog for the next run
    shutil.rmtree(batch)
    c.call("sync", {"timeout_s": 900})
    out["purged"] = c.call("purge", {"all": True})["purged"]
    return out


def watchman_burst(wm: WatchmanServer, root: Path, name: str, files: int) -> dict[str, float]:
    batch = root / name
    batch.mkdir()
    query = {"expression": ["type", "f"], "fields": ["name"], "relative_root": name}
    wm.call("query", str(root), {**query, "sync_timeout": 600_000})
    cpu0 = cpu_seconds(wm.pid)
    t0 = time.perf_counter()
    loop = create_loop(batch, files)
    seen = len(wm.call("query", str(root), {**query, "sync_timeout": 600_000})["files"])
    t2 = time.perf_counter()
    cpu = cpu_seconds(wm.pid) - cpu0
    shutil.rmtree(batch)
    wm.call("query", str(root), {**query, "sync_timeout": 600_000})
    return {
        "create_loop_s": loop,
        "to_sync_s": t2 - t0,
        "files_per_s": files / (t2 - t0),
        "cpu_cores": cpu / (t2 - t0),
        "lost": files - seen,
    }


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, runs=3, backend=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--no-hash", action="store_true", help="hashing off (the default hashes)")
    parser.add_argument("--on", choices=("both", "tmpfs", "disk"), default="both")
    parser.add_argument("--no-watchman", action="store_true")
    args = parser.parse_args()
    watchman = None if args.no_watchman else shutil.which("watchman")

    work = args.workdir / f"bulk-{args.files}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work / "dirmove", args.files, 1)  # one directory with every file
    parent = tree / "top000"
    if not (parent / "dir00000").exists():  # an interrupted run left it renamed
        os.rename(parent / "renamed", parent / "dir00000")
    renames: list[dict[str, float]] = []
    storms: dict[str, dict[str, list[dict[str, float]]]] = {}
    with contextlib.ExitStack() as stack:
        places: dict[str, Path] = {}
        if args.on in ("both", "tmpfs"):
            places["tmpfs"] = stack.enter_context(tmpfs(work / "tmpfs", "4G"))
        if args.on in ("both", "disk"):
            places["disk"] = work / "disk"
        for place in places.values():
            for sub in ("create", "watchman", "unwatched"):
                shutil.rmtree(place / sub, ignore_errors=True)
                (place / sub).mkdir(parents=True)
        roots = [tree] + [place / "create" for place in places.values()]
        setup = daemon_setup(
            work, f"bulk-{args.backend}", roots, backend=args.backend, hash_enabled=not args.no_hash
        )
        setup.reset_state()
        wm = (
            stack.enter_context(contextlib.closing(WatchmanServer(work / "wm")))
            if watchman
            else None
        )
        if wm is not None:
            for place in places.values():
                wm.call("watch", str(place / "watchman"))
        limits = LimitWatch()
        daemon = start(setup)
        try:
            daemon.wait_event("sweep.finish", timeout=1800, root=str(tree))
            with connect(daemon) as c:
                c.call("sync", {"timeout_s": 600})
                require_watched(c, roots, args.backend)
                while c.call("status")["hashing"]["pending"]:
                    time.sleep(0.5)  # the tree's first hashing is not what is measured
                for run in range(args.runs):
                    src, dst = ("dir00000", "renamed") if run % 2 == 0 else ("renamed", "dir00000")
                    renames.append(dir_rename(daemon, c, parent, src, dst, args.timeout))
                    print(f"run {run + 1}/{args.runs}: rename {renames[-1]}", flush=True)
                    for name, place in places.items():
                        got = storms.setdefault(name, {})
                        got.setdefault("alone", []).append(alone(place / "unwatched", args.files))
                        burst = creation_burst(daemon, c, place / "create" / f"b{run}", args.files)
                        lowered = limits.take()
                        if lowered:
                            burst["inotify_limits_lowered_by_another_process"] = lowered  # type: ignore[assignment]
                        got.setdefault("filewarden", []).append(burst)
                        if wm is not None:
                            got.setdefault("watchman", []).append(
                                watchman_burst(wm, place / "watchman", f"b{run}", args.files)
                            )
                        print(f"    {name}: " + json.dumps({k: v[-1] for k, v in got.items()}))
                if args.runs % 2:
                    os.rename(parent / "renamed", parent / "dir00000")
                    c.call("sync", {"timeout_s": 600})
        finally:
            stop(daemon)

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    hashing = "off" if args.no_hash else "on"
    print(
        f"\nbulk live changes, {args.files:,} files, {args.backend} backend, hashing {hashing}, "
        f"median of {args.runs} runs\n"
    )
    r_s = med(renames, "seconds")
    print(
        f"{'directory rename -> all in catalog':40} {r_s:8.3f} s  (target <= 0.5; "
        f"the rename() itself {med(renames, 'rename_syscall_s') * 1e3:.3f} ms)"
    )
    ok = all(
        r["moved_with_id"] == args.files
        and r["left_behind"] == 0
        and r["dir_move_events"] == 1
        and r["dir_move_files"] == args.files
        for r in renames
    )
    print(f"{'  every path changed, every id kept':40} {'yes' if ok else 'NO: ' + str(renames)}")
    for name, got in storms.items():
        loop = med(got["alone"], "create_loop_s")
        print(f"\ncreate storm on {name}:")
        print(
            f"{'  the loop alone, nobody watching':40} {loop:8.3f} s  ({args.files / loop:,.0f} files/s)"
        )
        for tool in ("filewarden", "watchman"):
            if tool not in got:
                continue
            rows = got[tool]
            print(
                f"  {tool + ': first create -> synced':38} {med(rows, 'to_sync_s'):8.3f} s  "
                f"({med(rows, 'files_per_s'):,.0f} files/s; loop slowed "
                f"{med(rows, 'create_loop_s') / loop:.2f}x; {med(rows, 'cpu_cores'):.2f} cores; "
                f"lost {sum(int(r['lost']) for r in rows)})"
            )
        fw = got["filewarden"]
        print(f"{'  queue overflows (all runs)':40} {sum(int(b['overflows']) for b in fw):8d}")
        if "watchman" in got:
            ratio = med(fw, "files_per_s") / med(got["watchman"], "files_per_s")
            print(f"{'  filewarden / watchman, files/s':40} {ratio:8.2f}x (target >= 0.3)")
        if any("inotify_limits_lowered_by_another_process" in b for b in fw):
            print(
                f"WARNING: fs.inotify limits (start: {limits.start_values}) were lowered during "
                "a run by another process; those runs are not representative"
            )
    print(json.dumps({"renames": renames, "storms": storms}))


if __name__ == "__main__":
    main()
