"""Hashing throughput: filewarden's ``hash_file`` beside ``xxhsum -H2`` on one big file.

    python bench/hash.py                  # a 1 GiB file, 5 runs
    python bench/hash.py --mib 256 --runs 3

Writes (once) a file of random bytes, reads it once so it is in the page
cache, then in each run times ``filewarden.hasher.hash_file`` (xxh3-128
through one descriptor, fstat before and after, 1 MiB reads) in this
process and ``xxhsum -H2 FILE`` (XXH128, the reference C implementation) as
a child process, alternating which goes first. Both digests must agree.
Reported: the median time and throughput of each and their ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import _args
from filewarden.hasher import hash_file


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    chunk = 16 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def main() -> None:
    parser = _args.parser(__doc__, runs=5)
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB")
    args = parser.parse_args()
    xxhsum = shutil.which("xxhsum")
    if not xxhsum:
        raise SystemExit("xxhsum not found: apt-get install xxhash")
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"hash-{args.mib}MiB.bin"
    size = args.mib << 20
    make_file(path, size)
    with open(path, "rb", buffering=0) as f:  # into the page cache
        while f.read(16 << 20):
            pass
    raw = os.fsencode(path)

    def ours() -> tuple[float, str]:
        t0 = time.perf_counter()
        got = hash_file(raw)
        seconds = time.perf_counter() - t0
        assert got is not None, "hash_file gave up on a quiet file"
        return seconds, got[0].hex()

    def theirs() -> tuple[float, str]:
        t0 = time.perf_counter()
        out = subprocess.run([xxhsum, "-H2", str(path)], check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        return seconds, out.stdout.split()[0]

    times: dict[str, list[float]] = {"filewarden": [], "xxhsum": []}
    digests: dict[str, set[str]] = {"filewarden": set(), "xxhsum": set()}
    for run in range(args.runs):
        order = [("filewarden", ours), ("xxhsum", theirs)]
        if run % 2:
            order.reverse()
        for name, fn in order:
            seconds, digest = fn()
            times[name].append(seconds)
            digests[name].add(digest)
        print(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{k}={v[-1]:.3f}s" for k, v in times.items()),
            flush=True,
        )
    same = digests["filewarden"] == digests["xxhsum"] and len(digests["xxhsum"]) == 1
    med = {k: statistics.median(v) for k, v in times.items()}
    gbs = {k: size / v / 1e9 for k, v in med.items()}
    print(f"\nxxh3-128 of a {args.mib:,} MiB file in the page cache, median of {args.runs} runs\n")
    print(f"{'filewarden hash_file':24} {med['filewarden']:7.3f} s  {gbs['filewarden']:6.2f} GB/s")
    print(f"{'xxhsum -H2':24} {med['xxhsum']:7.3f} s  {gbs['xxhsum']:6.2f} GB/s")
    print(
        f"\nthroughput ratio filewarden / xxhsum: {gbs['filewarden'] / gbs['xxhsum']:.2f}x "
        "(target >= 0.8)"
    )
    print(f"digests agree: {'yes' if same else 'NO: ' + str(digests)}")
    print(
        json.dumps({"bytes": size, "seconds": times, "median_gb_per_s": gbs, "same_digest": same})
    )


if __name__ == "__main__":
    main()
