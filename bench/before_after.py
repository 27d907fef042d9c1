"""The same benchmarks on two checkouts, taking turns: did a change cost speed?

    python bench/before_after.py --before /path/to/old/checkout
    python bench/before_after.py --before ../old --rounds 5 --files 100000 --dirs 1000

Runs ``lookup.py``, ``sweep.py`` and ``watch_latency.py`` of each checkout,
with that checkout's own package first on ``PYTHONPATH`` (so its daemons
run its code), on the same tree sizes; the two take turns, and which goes
first alternates from round to round, so that a drift of the machine's load
falls on both. Each benchmark's own figures are medians of its runs; the
report is, per figure, the median over the rounds of each checkout and the
ratio after/before (above 1: slower after), flagged beyond ``--tolerance``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import _args

HERE = Path(__file__).resolve().parent.parent

# Per benchmark: extra flags, and the figures compared (all "lower is better" but rates).
BENCHES: dict[str, tuple[list[str], dict[str, str]]] = {
    "lookup": (
        ["--lookups", "5000", "--runs", "3"],
        {
            "p50_ms": "lookup p50 (ms)",
            "p99_ms": "lookup p99 (ms)",
            "one_client_per_s": "lookups/s, one client",
            "many_clients_per_s": "lookups/s, 8 clients",
        },
    ),
    "sweep": (
        ["--runs", "3", "--json"],
        {
            "first_index": "first index (s)",
            "full_resweep": "full re-sweep (s)",
            "quick_sweep": "quick sweep (s)",
        },
    ),
    "watch_latency": (
        ["--renames", "300", "--runs", "3", "--no-watchman"],
        {"p50": "rename latency p50 (ms)", "p99": "rename latency p99 (ms)"},
    ),
}
RATES = {"one_client_per_s", "many_clients_per_s"}


def figures(bench: str, last_line: str) -> dict[str, float]:
    data: dict[str, Any] = json.loads(last_line)
    if bench == "watch_latency":
        # Per run; the benchmark's own figure is their median.
        return {
            "p50": statistics.median(data["p50_ms"]["filewarden"]),
            "p99": statistics.median(data["p99_ms"]["filewarden"]),
        }
    return {k: float(v) for k, v in data["median"].items()}


def run(checkout: Path, bench: str, size: list[str]) -> dict[str, float]:
    flags, _ = BENCHES[bench]
    env = {**os.environ, "PYTHONPATH": str(checkout / "daemon")}
    done = subprocess.run(
        [sys.executable, str(checkout / "bench" / f"{bench}.py"), *size, *flags],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout} {bench} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return figures(bench, done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = _args.parser(__doc__, files=100_000, dirs=1_000)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--after", type=Path, default=HERE, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bench", choices=sorted(BENCHES), action="append")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    size = ["--files", str(args.files), "--dirs", str(args.dirs), "--workdir", str(args.workdir)]
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    got: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for bench in args.bench or list(BENCHES):
            for side in order:
                result = run(sides[side], bench, size)
                got.setdefault((bench, side), []).append(result)
                print(f"round {round_ + 1} {bench} {side}: {json.dumps(result)}", flush=True)
    print(f"\n{args.files:,} files in {args.dirs:,} directories, median of {args.rounds} rounds\n")
    print(f"{'figure':30} {'before':>12} {'after':>12} {'after/before':>13}")
    worse = []
    for bench in args.bench or list(BENCHES):
        for key, label in BENCHES[bench][1].items():
            before = statistics.median(r[key] for r in got[(bench, "before")])
            after = statistics.median(r[key] for r in got[(bench, "after")])
            ratio = after / before
            slower = 1 / ratio if key in RATES else ratio
            flag = "  <-- slower" if slower > 1 + args.tolerance else ""
            if flag:
                worse.append(label)
            print(f"{label:30} {before:>12.4g} {after:>12.4g} {ratio:>12.3f}x{flag}")
    print(json.dumps({f"{b}/{s}": v for (b, s), v in got.items()}))
    if worse:
        print(f"slower beyond {args.tolerance:.0%}: {', '.join(worse)}")


if __name__ == "__main__":
    main()
