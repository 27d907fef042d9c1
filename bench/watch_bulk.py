"""Bulk live changes: a huge directory renamed, and a burst of file creations.

    python bench/watch_bulk.py                      # 100,000 files, 3 runs
    python bench/watch_bulk.py --files 10000 --runs 2
    python bench/watch_bulk.py --backend pyinotify

One real daemon watches two roots under the work dir:

* directory rename: a directory holding ``--files`` files is renamed (to
  another name and back again in the next run). Timed from ``rename()``
  returning until ``lookup`` of the last file of the directory, at its new
  path, answers with its id (polled in a tight loop); then ``list`` checks
  that every file's path changed and every id stayed, and the log that
  the daemon logged one ``dir.move`` with all the files;
* creation burst: ``--files`` files are created as fast as this script can
  (open, write 100 bytes, close) in an empty, already watched directory,
  then ``sync`` is called. Reported: the time of the creation loop alone,
  the time from the first create until ``sync`` returns, and files per
  second over the latter; ``status`` totals must grow by exactly
  ``--files`` (none lost). Kernel queue overflows (each answered by the
  daemon with a sweep) are counted from the log. Between runs the files are
  deleted and purged, so each run starts from the same catalog.

Each figure is the median over ``--runs`` runs. The ``rename()`` system
call itself is shown beside the directory rename: it is one call, so what
the daemon adds is everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import _args
import _tree
from _measure import LimitWatch, connect, daemon_setup, require_watched, start, stop
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


def creation_burst(daemon: DaemonProcess, c: Client, batch: Path, files: int) -> dict[str, float]:
    batch.mkdir()
    c.call("sync", {"timeout_s": 600})  # the new directory is watched from here on
    present0 = c.call("status")["totals"]["present"]
    daemon.records()
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
    payload = b"x" * 100
    base = os.fsencode(batch) + b"/new%07d.dat"
    t0 = time.perf_counter()
    for i in range(files):
        fd = os.open(base % i, flags, 0o644)
        os.write(fd, payload)
        os.close(fd)
    t1 = time.perf_counter()
    c.call("sync", {"timeout_s": 900})
    t2 = time.perf_counter()
    present1 = c.call("status")["totals"]["present"]
    logs = list(daemon.records())
    out = {
        "create_loop_s": t1 - t0,
        "to_sync_s": t2 - t0,
        "after_loop_s": t2 - t1,
        "files_per_s": files / (t2 - t0),
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


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, runs=3, backend=True, hashing=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    work = args.workdir / f"bulk-{args.files}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work / "dirmove", args.files, 1)  # one directory with every file
    parent = tree / "top000"
    if not (parent / "dir00000").exists():  # an interrupted run left it renamed
        os.rename(parent / "renamed", parent / "dir00000")
    create_root = work / "create"
    shutil.rmtree(create_root, ignore_errors=True)
    create_root.mkdir()
    setup = daemon_setup(
        work,
        f"bulk-{args.backend}",
        [tree, create_root],
        backend=args.backend,
        hash_enabled=args.hash,
    )
    setup.reset_state()
    limits = LimitWatch()
    daemon = start(setup)
    renames, bursts = [], []
    try:
        daemon.wait_event("sweep.finish", timeout=1800, root=str(tree))
        with connect(daemon) as c:
            c.call("sync", {"timeout_s": 600})
            require_watched(c, [tree, create_root], args.backend)
            if args.hash:
                while c.call("status")["hashing"]["pending"]:
                    time.sleep(0.5)
            for run in range(args.runs):
                src, dst = ("dir00000", "renamed") if run % 2 == 0 else ("renamed", "dir00000")
                renames.append(dir_rename(daemon, c, parent, src, dst, args.timeout))
                bursts.append(creation_burst(daemon, c, create_root / f"batch{run}", args.files))
                lowered = limits.take()
                if lowered:
                    bursts[-1]["inotify_limits_lowered_by_another_process"] = lowered  # type: ignore[assignment]
                print(
                    f"run {run + 1}/{args.runs}: rename {renames[-1]}\n    create {bursts[-1]}",
                    flush=True,
                )
            if args.runs % 2:
                os.rename(parent / "renamed", parent / "dir00000")
                c.call("sync", {"timeout_s": 600})
    finally:
        stop(daemon)

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(
        f"\nbulk live changes, {args.files:,} files, {args.backend} backend, median of {args.runs} runs\n"
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
    print(
        f"{'creation loop alone':40} {med(bursts, 'create_loop_s'):8.3f} s  "
        f"({args.files / med(bursts, 'create_loop_s'):,.0f} files/s)"
    )
    print(
        f"{'first create -> sync returned':40} {med(bursts, 'to_sync_s'):8.3f} s  "
        f"({med(bursts, 'files_per_s'):,.0f} files/s; "
        f"{med(bursts, 'to_sync_s') / med(bursts, 'create_loop_s'):.2f}x the loop)"
    )
    print(f"{'  sync after the loop ended':40} {med(bursts, 'after_loop_s'):8.3f} s")
    lost = sum(b["lost"] for b in bursts)
    print(f"{'  lost files (all runs)':40} {lost:8d}")
    print(f"{'  queue overflows (all runs)':40} {sum(b['overflows'] for b in bursts):8d}")
    if any("inotify_limits_lowered_by_another_process" in b for b in bursts):
        print(
            f"WARNING: fs.inotify limits (start: {limits.start_values}) were lowered during "
            "a run by another process; those runs are not representative"
        )
    print(json.dumps({"renames": renames, "bursts": bursts}))


if __name__ == "__main__":
    main()
