"""Sweep benchmark: filewarden's index and sweeps beside find and updatedb on the same tree.

    python bench/sweep.py                      # 1,000,000 files in 10,000 dirs, 5 runs
    python bench/sweep.py --files 100000 --dirs 1000 --runs 3

Each run times, in this order and on a warm cache: ``find -printf '%i %s
%T@ %p\\n'``, filewarden's first index (fresh catalog), an unchanged full
re-sweep, a quick sweep, then plocate's ``updatedb`` from scratch and again
on its own database (its incremental mode, the quick sweep's counterpart).
filewarden runs in a child process through the daemon's own writer and
sweep code, so its peak RSS is its own (its walker process's is shown
beside it). Reported: the median of each over the runs, and ratios to ``find`` (and to the incremental ``updatedb`` for
the quick sweep). Medians and ratios, never a lone time: the machine is shared.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import _args
import _tree
from _measure import catalog_bytes, find_command, timed

HERE = Path(__file__).resolve().parent


def filewarden_sweep(db: Path, tree: Path, kind: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(HERE / "_sweep_once.py"), str(db), str(tree), kind],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def main() -> None:
    parser = _args.parser(__doc__, files=1_000_000, dirs=10_000, runs=5)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args()

    work = args.workdir / f"{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    db = work / "catalog.db"
    updatedb = shutil.which("updatedb")
    plocate_db = work / "plocate.db"
    find_cmd = find_command(tree)
    updatedb_cmd = [
        updatedb or "updatedb",
        "-U",
        str(tree),
        "-o",
        str(plocate_db),
        "-l",
        "no",
        "--prunepaths",
        "",
        "--prunefs",
        "",
        "--prunenames",
        "",
    ]
    timed(find_cmd)  # warm the cache

    results: dict[str, list[float]] = {
        k: []
        for k in (
            "find",
            "first_index",
            "full_resweep",
            "quick_sweep",
            "updatedb_full",
            "updatedb_incremental",
            "rss_first_index_mb",
            "rss_walker_mb",
            "rss_resweep_mb",
            "catalog_mb",
        )
    }
    for run in range(args.runs):
        results["find"].append(timed(find_cmd))
        remove_db(db)
        first = filewarden_sweep(db, tree, "full")
        assert first["tally"]["new"] == args.files, first  # type: ignore[index]
        results["first_index"].append(first["seconds"])  # type: ignore[arg-type]
        results["rss_first_index_mb"].append(first["maxrss_kb"] / 1024)  # type: ignore[operator]
        results["rss_walker_mb"].append(first["walker_maxrss_kb"] / 1024)  # type: ignore[operator]
        results["catalog_mb"].append(catalog_bytes(db) / 2**20)
        again = filewarden_sweep(db, tree, "full")
        assert again["tally"]["new"] == 0 and again["tally"]["changed"] == 0, again  # type: ignore[index]
        results["full_resweep"].append(again["seconds"])  # type: ignore[arg-type]
        results["rss_resweep_mb"].append(again["maxrss_kb"] / 1024)  # type: ignore[operator]
        # Listings made within 2 s of a change are stored dirty (the racy
        # rule); the tree is older than that after its first build.
        quick = filewarden_sweep(db, tree, "quick")
        results["quick_sweep"].append(quick["seconds"])  # type: ignore[arg-type]
        if updatedb:
            plocate_db.unlink(missing_ok=True)
            results["updatedb_full"].append(timed(updatedb_cmd))
            results["updatedb_incremental"].append(timed(updatedb_cmd))
        print(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{k}={v[-1]:.3f}" for k, v in results.items() if v),
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in results.items() if v}
    find = med["find"]
    print(f"\n{args.files:,} files in {args.dirs:,} directories, median of {args.runs} runs\n")
    print(f"{'what':28} {'median':>10} {'ratio':>22}")
    rows = [
        ("find -printf", "find", f"{1:.2f}x find"),
        (
            "filewarden first index",
            "first_index",
            f"{med['first_index'] / find:.2f}x find (target <= 2.0)",
        ),
        (
            "filewarden full re-sweep",
            "full_resweep",
            f"{med['full_resweep'] / find:.2f}x find (target <= 1.2)",
        ),
        ("filewarden quick sweep", "quick_sweep", f"{med['quick_sweep'] / find:.2f}x find"),
    ]
    if "updatedb_incremental" in med:
        rows += [
            (
                "updatedb (new database)",
                "updatedb_full",
                f"{med['updatedb_full'] / find:.2f}x find",
            ),
            (
                "updatedb (incremental)",
                "updatedb_incremental",
                f"{med['updatedb_incremental'] / find:.2f}x find",
            ),
        ]
        rows.append(
            (
                "quick sweep / updatedb incr.",
                "quick_sweep",
                f"{med['quick_sweep'] / med['updatedb_incremental']:.2f}x (target <= 1.5)",
            )
        )
    else:
        print("(updatedb not found: apt-get install plocate)")
    for label, key, ratio in rows:
        print(f"{label:28} {med[key]:>9.3f}s {ratio:>22}")
    print(
        f"{'peak RSS, first index':28} {med['rss_first_index_mb']:>8.1f}MB {'(target <= 120 MB)':>22}"
    )
    print(f"{'peak RSS, walker process':28} {med['rss_walker_mb']:>8.1f}MB")
    print(f"{'peak RSS, re-sweep':28} {med['rss_resweep_mb']:>8.1f}MB")
    print(f"{'catalog on disk':28} {med['catalog_mb']:>8.1f}MB")
    if args.json:
        print(json.dumps({"files": args.files, "dirs": args.dirs, "runs": results, "median": med}))


if __name__ == "__main__":
    main()
