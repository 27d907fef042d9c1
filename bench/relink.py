"""Relinking at start-up: files moved while the daemon was down keep their ids.

    python bench/relink.py                         # 100,000 files in 1,000 dirs, 10,000 moved, 3 runs
    python bench/relink.py --files 20000 --dirs 200 --moves 2000 --runs 2

Builds (once) a tree, indexes it with a real daemon and stops it. Then in
each run, the daemon is started three times, each time timed from the
moment its process is started to its first ``sweep.finish`` log line (the
log's own timestamp):

1. on the unchanged tree: a plain full sweep with nothing to do (the
   baseline);
2. after ``--moves`` random files were renamed into other directories while
   it was down: the sweep must report every one as ``moved`` (found by
   inode), and ``list`` must show each at its new path with its old id;
3. after they were moved back, again while it was down (a second sample of
   the same work, checked the same way).

Reported: the medians of the baseline and of the relinking start-ups (both
directions pooled), the sweeps' own durations from the log, and the
ratios. Hashing is off (rule 1 of relinking, by inode, needs no hash;
``--hash`` turns it on).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import _args
import _tree
from _measure import connect, daemon_setup, start_and_sweep, stop
from filewarden.testing import DaemonProcess, files


def plan_moves(tree: Path, count: int, seed: int) -> list[tuple[str, str]]:
    dirs = sorted(str(d) for top in tree.iterdir() if top.is_dir() for d in top.iterdir())
    if len(dirs) < 2:
        raise SystemExit("need at least two directories to move files between")
    rng = random.Random(seed)
    listing: dict[str, list[str]] = {}
    chosen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < count:
        d = rng.choice(dirs)
        names = listing.setdefault(d, sorted(os.listdir(d)))
        name = rng.choice(names)
        src = f"{d}/{name}"
        if src in chosen:
            continue
        chosen.add(src)
        other = rng.choice(dirs)
        while other == d:
            other = rng.choice(dirs)
        out.append((src, f"{other}/rl{len(out):06d}-{name}"))
    return out


def check_ids(
    daemon: DaemonProcess, expected: dict[str, int], moved: list[str], gone: list[str]
) -> dict[str, int]:
    """Through ``list``: every path of ``expected`` present with its id, ``gone`` paths not."""
    with connect(daemon) as c:
        now = {r["path"]: r["id"] for r in files(c, "present")}
        missing = len(files(c, "missing"))
    return {
        "moved_ids_kept": sum(1 for p in moved if now.get(p) == expected[p]),
        "all_ids_kept": sum(1 for p, i in expected.items() if now.get(p) == i),
        "old_paths_present": sum(1 for p in gone if p in now),
        "present": len(now),
        "missing": missing,
    }


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, dirs=1_000, runs=3, hashing=True)
    parser.add_argument("--moves", type=int, default=10_000)
    args = parser.parse_args()

    work = args.workdir / f"relink-{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    leftovers = list(tree.glob("*/*/rl*-file*"))
    if leftovers:
        raise SystemExit(
            f"{len(leftovers)} files of an interrupted run are still moved: rebuild the tree"
        )
    setup = daemon_setup(work, "relink", [tree], hash_enabled=args.hash)
    setup.reset_state()
    daemon, first = start_and_sweep(setup)
    with connect(daemon) as c:
        ids = {r["path"]: r["id"] for r in files(c, "present")}
        if args.hash:
            while c.call("status")["hashing"]["pending"]:
                time.sleep(0.5)
    stop(daemon)
    assert len(ids) == args.files, (len(ids), first)
    print(f"first index: {first}", flush=True)

    baseline: list[dict[str, Any]] = []
    relinks: list[dict[str, Any]] = []
    checks: list[dict[str, int]] = []
    for run in range(args.runs):
        moves = plan_moves(tree, args.moves, seed=run + 1)
        # 1. unchanged
        daemon, figures = start_and_sweep(setup)
        baseline.append(figures)
        stop(daemon)
        # 2. moved while down
        for src, dst in moves:
            os.rename(src, dst)
        daemon, figures = start_and_sweep(setup)
        relinks.append(figures)
        srcs = dict(moves)
        moved_ids = {p: i for p, i in ids.items() if p not in srcs}
        moved_ids |= {dst: ids[src] for src, dst in moves}
        checks.append(check_ids(daemon, moved_ids, [d for _, d in moves], [s for s, _ in moves]))
        stop(daemon)
        # 3. moved back while down
        for src, dst in moves:
            os.rename(dst, src)
        daemon, figures = start_and_sweep(setup)
        relinks.append(figures)
        checks.append(check_ids(daemon, ids, [s for s, _ in moves], [d for _, d in moves]))
        stop(daemon)
        print(
            f"run {run + 1}/{args.runs}: unchanged {baseline[-1]}\n"
            f"    moved   {relinks[-2]} {checks[-2]}\n"
            f"    back    {relinks[-1]} {checks[-1]}",
            flush=True,
        )

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    base_t, relink_t = med(baseline, "to_sweep_finish_s"), med(relinks, "to_sweep_finish_s")
    base_s, relink_s = med(baseline, "sweep_s"), med(relinks, "sweep_s")
    print(
        f"\nrelink at start-up, {args.files:,} files in {args.dirs:,} dirs, {args.moves:,} moved "
        f"while down; median of {args.runs} runs ({len(relinks)} relinking start-ups)\n"
    )
    print(f"{'':36} {'start -> sweep.finish':>22} {'sweep alone':>12}")
    print(f"{'unchanged tree (full sweep)':36} {base_t:>20.3f} s {base_s:>10.3f} s")
    print(f"{f'{args.moves:,} files moved while down':36} {relink_t:>20.3f} s {relink_s:>10.3f} s")
    print(
        f"{'ratio relink / unchanged':36} {relink_t / base_t:>21.2f}x {relink_s / base_s:>11.2f}x"
    )
    all_moved = all(r["moved"] + r["relinked"] == args.moves for r in relinks)
    by_inode = all(r["moved"] == args.moves for r in relinks)
    all_kept = all(
        c["moved_ids_kept"] == args.moves
        and c["all_ids_kept"] == args.files
        and c["old_paths_present"] == 0
        and c["missing"] == 0
        and c["present"] == args.files
        for c in checks
    )
    print(
        f"\nsweep.finish moved = {args.moves:,} every time: {'yes' if by_inode else 'NO'}"
        + ("" if by_inode or not all_moved else " (some counted as relinked)")
    )
    print(
        "every file at its path with its old id, none missing: "
        + ("yes" if all_kept else "NO (see the checks above)")
    )
    print(json.dumps({"first": first, "baseline": baseline, "relinks": relinks, "checks": checks}))


if __name__ == "__main__":
    main()
