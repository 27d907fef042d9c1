"""The web page's missing list over a million missing files: time to the first page.

    python bench/web_missing.py                      # 1,000,000 missing files, 30 requests a view
    python bench/web_missing.py --files 100000 --requests 10

Builds (once) a catalog whose root holds ``--files`` missing files (rows
written straight into SQLite: making and deleting a million real files
would take longer than everything measured), starts a real daemon on it
with the web page on, and times each view over HTTP, one request after
another, with a reader's token: the first page (50 rows, newest first),
the same sorted by size and by path, filtered by reason, and by a part of
the path, and a deep page (offset 500,000). Beside it, in the same run:
the same first page read by an in-process SQLite query (the floor), and
``filewarden missing --json``, what a person without the page runs (it
lists every missing file). Reported: p50 and p99 per view (the issue's
target: the first page under 200 ms).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import apsw

import _args
from _measure import percentile, start, stop
from filewarden import catalog
from filewarden.client import Client
from filewarden.testing import write_config

REASONS = ("deleted", "moved_out", "gone_in_sweep")


def fill(state: Path, root: Path, files: int) -> None:
    """``files`` missing files under ``root`` in 1,000 directories, missing since the last 90 days."""
    conn = apsw.Connection(str(state / "catalog.db"))
    rng = random.Random(1)
    now = time.time()
    root_id = conn.execute("SELECT id FROM roots WHERE path = ?", (bytes(root),)).fetchall()[0][0]
    with conn:
        conn.executemany(
            "INSERT INTO files(root, dir, name, size, mtime_ns, ctime_ns, device, inode, state,"
            " first_seen, last_seen, missing_since, missing_reason)"
            " VALUES (?, ?, ?, ?, 0, 0, 1, ?, 'missing', ?, ?, ?, ?)",
            (
                (
                    root_id,
                    b"album%04d" % (i % 1000),
                    b"track%07d.flac" % i,
                    rng.randrange(1, 50_000_000),
                    i + 1,
                    now - 200 * 86400,
                    now - 100 * 86400,
                    now - rng.random() * 90 * 86400,
                    REASONS[i % len(REASONS)],
                )
                for i in range(files)
            ),
        )
        conn.execute("UPDATE roots SET missing = ? WHERE id = ?", (files, root_id))
    conn.close()


def timed(url: str, token: str, requests: int) -> list[float]:
    out = []
    for _ in range(requests):
        ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(ask, timeout=120) as r:
            body = r.read()
        out.append(time.perf_counter() - t0)
        assert r.status == 200 and b"<span id=total>" in body, url
    return out


def main() -> None:
    parser = _args.parser(__doc__, files=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--port", type=int, default=9852)
    args = parser.parse_args()
    work = args.workdir / f"web-missing-{args.files}"
    root = work / "library"
    root.mkdir(parents=True, exist_ok=True)
    setup = write_config(
        work,
        [root],
        name="web",
        state_dir=work / "web-state",
        socket=work / "web.sock",
        sections={
            "hash": {"enabled": False},
            "metrics": {"listen": f"127.0.0.1:{args.port}"},
            "web": {"enabled": True},
        },
    )
    built = work / ".built"
    if not built.exists():
        daemon = start(setup)
        daemon.wait_event("sweep.finish")
        stop(daemon)
        t0 = time.perf_counter()
        fill(work / "web-state", root, args.files)
        print(
            f"catalog of {args.files:,} missing files written in {time.perf_counter() - t0:.1f} s"
        )
        built.touch()
    daemon = start(setup)
    try:
        daemon.wait_event("sweep.finish", timeout=600)
        assert setup.socket is not None
        with Client(setup.socket) as c:
            token = c.web_token("reader", "bench")["token"]
            assert c.status()["totals"]["missing"] == args.files
        base = f"http://127.0.0.1:{args.port}/missing"
        views = {
            "first page (newest first)": base,
            "sorted by size": base + "?sort=size",
            "sorted by path": base + "?sort=path&order=asc",
            "one reason": base + "?reason=moved_out",
            "path has 'track00123'": base + "?q=track00123",
            "offset 500,000": base + f"?offset={args.files // 2}",
        }
        got = {name: timed(url, token, args.requests) for name, url in views.items()}
        reader = catalog.connect(work / "web-state" / "catalog.db", readonly=True)
        floor = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            rows = list(catalog.missing_page(reader, catalog.MissingFilter(), limit=50))
            floor.append(time.perf_counter() - t0)
            assert len(rows) == 50
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "filewarden",
                "missing",
                "--json",
                "--socket",
                str(setup.socket),
            ],
            check=True,
            capture_output=True,
        ).stdout
        cli = time.perf_counter() - t0
        assert len(json.loads(out)) == args.files
    finally:
        stop(daemon)
    print(
        f"\nthe missing list over {args.files:,} missing files, {args.requests} requests a view\n"
    )
    print(f"{'view':34} {'p50':>10} {'p99':>10}")
    for name, times in got.items():
        p50, p99 = statistics.median(times) * 1e3, percentile(times, 0.99) * 1e3
        print(f"{name:34} {p50:>7.1f} ms {p99:>7.1f} ms")
    print(f"{'SQLite in-process, first page':34} {statistics.median(floor) * 1e3:>7.1f} ms")
    print(f"{'filewarden missing --json (all)':34} {cli * 1e3:>7.0f} ms")
    first = statistics.median(got["first page (newest first)"]) * 1e3
    print(
        f"\nfirst page p50 {first:.1f} ms (target < 200 ms); {cli * 1e3 / first:.0f}x faster "
        "than listing them all with the CLI"
    )


if __name__ == "__main__":
    main()
