"""Background hashing of many small files: the daemon's hasher beside ``xxhsum -H2``.

    python bench/hash_small.py                       # 100,000 files (0-1 KiB) in 1,000 dirs, 3 runs
    python bench/hash_small.py --files 20000 --dirs 200 --runs 5

A mail, code or photo-thumbnail tree is mostly files far smaller than a
read: there, what a file costs besides its bytes (open, fstat, the read,
the hash, the catalog update) is the speed. Builds (once) a tree of small
files and reads it once into the page cache. Then in each run:

- the daemon, hashing on, indexes the tree from an empty catalog; from its
  first ``sweep.finish`` to its last ``hash.done`` (nothing left to hash),
  the files hashed in that time and the daemon's CPU time in it give its
  files/s, its share of a core and its CPU per file;
- ``xxhsum -H2`` (XXH128, the reference C tool) hashes the same files, fed
  by ``find -print0 | xargs -0``, timed whole.

Reported: medians over the runs, and the ratio of the two in files/s.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time

import _args
import _tree
from _measure import connect, cpu_seconds, daemon_setup, start, stop
from filewarden.testing import log_time


def warm(tree: object) -> None:
    """Read every file once, so that both sides hash from the page cache."""
    subprocess.run(
        f"find '{tree}' -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True
    )


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, dirs=1_000, runs=3)
    args = parser.parse_args()
    xxhsum = shutil.which("xxhsum")
    if not xxhsum:
        raise SystemExit("xxhsum not found: apt-get install xxhash")
    work = args.workdir / f"hash-small-{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    setup = daemon_setup(work, "hash-small", [tree], hash_enabled=True)
    rows: list[dict[str, float]] = []
    for run in range(args.runs):
        warm(tree)
        t0 = time.perf_counter()
        subprocess.run(
            f"find '{tree}' -type f -print0 | xargs -0 {xxhsum} -H2 > /dev/null",
            shell=True,
            check=True,
        )
        xxh_s = time.perf_counter() - t0

        setup.reset_state()
        daemon = start(setup)
        try:
            index = daemon.wait_event("sweep.finish", timeout=1800)
            with connect(daemon) as c:
                pending = int(c.call("status")["hashing"]["pending"])
                cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
                # Asked seldom: counting what is left costs the daemon too.
                while c.call("status")["hashing"]["pending"]:
                    time.sleep(0.5)
                cpu = cpu_seconds(daemon.pid) - cpu0
                wall = time.perf_counter() - t0
            done = [r for r in daemon.records(from_start=True) if r.get("event") == "hash.done"]
            seconds = log_time(done[-1]) - log_time(index)
        finally:
            stop(daemon)
        row = {
            "hashed_after_index": pending,
            "daemon_files_per_s": pending / seconds,
            "daemon_cpu_share": cpu / wall,
            "daemon_cpu_us_per_file": cpu / max(pending, 1) * 1e6,
            "xxhsum_files_per_s": args.files / xxh_s,
        }
        rows.append(row)
        print(f"run {run + 1}/{args.runs}: {json.dumps(row)}", flush=True)

    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\nhashing {args.files:,} small files, median of {args.runs} runs\n")
    print(
        f"filewarden background hasher  {med['daemon_files_per_s']:9,.0f} files/s"
        f"  ({med['daemon_cpu_share']:.0%} of a core, {med['daemon_cpu_us_per_file']:.0f} µs"
        " of daemon CPU per file)"
    )
    print(f"xxhsum -H2                    {med['xxhsum_files_per_s']:9,.0f} files/s")
    ratio = med["daemon_files_per_s"] / med["xxhsum_files_per_s"]
    print(f"\nfilewarden / xxhsum: {ratio:.2f}x (target >= 0.5)")
    print(json.dumps({"runs": rows, "median": med, "ratio": ratio}))


if __name__ == "__main__":
    main()
