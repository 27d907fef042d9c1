"""Lookup benchmark: `lookup` over the socket on a big catalog, beside the alternatives.

    python bench/lookup.py                     # 1,000,000-file catalog, 20,000 lookups
    python bench/lookup.py --files 100000 --dirs 1000 --lookups 5000

Builds (once) the same synthetic tree as bench/sweep.py, starts a real
daemon on it and waits for its start-up sweep, then looks up random paths:
one client after another request (latency p50/p99), and several clients at
once (throughput). Side by side, in the same run and on the same paths: a
plain ``os.stat`` (what a program does without a catalog) and the same
query on an in-process read connection (what the socket adds on top of
SQLite). Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import _args
import _tree
from _measure import daemon_setup, percentile, start, stop
from filewarden import catalog
from filewarden.client import Client


def sample_paths(tree: Path, count: int, seed: int) -> list[str]:
    dirs = [d for top in sorted(tree.iterdir()) for d in sorted(top.iterdir())]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        d = rng.choice(dirs)
        names = os.listdir(d)
        out.append(str(d / rng.choice(names)))
    return out


def run_once(sock: Path, db: Path, paths: list[str], clients: int) -> dict[str, float]:
    out: dict[str, float] = {}
    # os.stat on the same paths
    t0 = time.perf_counter()
    for p in paths:
        os.stat(p)
    out["stat_us"] = (time.perf_counter() - t0) / len(paths) * 1e6
    # in-process SQLite
    conn = catalog.connect(db, readonly=True)
    root_id = catalog.all_roots(conn)[0].id
    prefix = len(str(Path(paths[0]).parents[2])) + 1
    rel = [os.fsencode(p[prefix:]) for p in paths]
    t0 = time.perf_counter()
    for r in rel:
        catalog.file_at(conn, root_id, r)
    out["sqlite_us"] = (time.perf_counter() - t0) / len(paths) * 1e6
    conn.close()
    # socket, one client, latency per request
    lat = []
    with Client(sock) as c:
        for p in paths:
            t = time.perf_counter()
            rec = c.call("lookup", {"path": p})
            lat.append(time.perf_counter() - t)
            assert rec is not None and rec["path"] == p
    out["p50_ms"] = percentile(lat, 0.5) * 1e3
    out["p99_ms"] = percentile(lat, 0.99) * 1e3
    out["one_client_per_s"] = len(paths) / sum(lat)
    # socket, several clients at once
    chunks = [paths[i::clients] for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(chunk: list[str]) -> None:
        with Client(sock) as c:
            barrier.wait()
            for p in chunk:
                c.call("lookup", {"path": p})

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in chunks]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    out["many_clients_per_s"] = len(paths) / (time.perf_counter() - t0)
    return out


def main() -> None:
    parser = _args.parser(__doc__, files=1_000_000, dirs=10_000, runs=3)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    work = args.workdir / f"{args.files}-{args.dirs}"
    work.mkdir(parents=True, exist_ok=True)
    tree = _tree.build(work, args.files, args.dirs)
    paths = sample_paths(tree, args.lookups, seed=7)
    setup = daemon_setup(work, "lookup-bench", [tree])
    daemon = start(setup)
    try:
        daemon.wait_event("sweep.finish", timeout=1800)
        runs = [
            run_once(setup.socket, setup.catalog, paths, args.clients) for _ in range(args.runs)
        ]
    finally:
        stop(daemon)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"\nlookup over the socket, {args.files:,}-file catalog, {args.lookups:,} random paths, "
        f"median of {args.runs} runs\n"
    )
    print(
        f"{'socket lookup, one client':34} p50 {med['p50_ms']:.3f} ms   p99 {med['p99_ms']:.3f} ms   "
        f"{med['one_client_per_s']:,.0f}/s"
    )
    print(
        f"{'socket lookup, ' + str(args.clients) + ' clients':34} {med['many_clients_per_s']:,.0f}/s"
    )
    print(
        f"{'in-process SQLite query':34} {med['sqlite_us']:.1f} us each  "
        f"(socket p50 = {med['p50_ms'] * 1e3 / med['sqlite_us']:.0f}x)"
    )
    print(
        f"{'os.stat of the same paths':34} {med['stat_us']:.1f} us each  "
        f"(socket p50 = {med['p50_ms'] * 1e3 / med['stat_us']:.0f}x)"
    )
    print(json.dumps({"median": med}))


if __name__ == "__main__":
    main()
