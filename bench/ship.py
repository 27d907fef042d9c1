"""Shipping into PostgreSQL: the first load of a big catalog beside COPY from CSV, and the
lag under a create storm.

    python bench/ship.py                              # 1,000,000 files, a 20,000-file storm, 3 runs
    python bench/ship.py --files 100000 --storm 5000 --runs 3

A private PostgreSQL server (initdb in a temporary directory, as in the
tests) and real daemons. Both parts run ``filewarden ship`` as a process of
its own, as the systemd unit does.

* **first load**: a catalog of ``--files`` files (rows written straight into
  SQLite, a tenth of them with an annotation, every one with a hash; its root
  is offline, so no sweep or hasher touches it) is shipped into an empty
  fleet: ``list`` page by page into ``COPY``, timed by the shipper's
  ``ship.resync`` (list, copy, commit). In the same run, paired: the same
  rows (exported once with ``\\copy ... TO``) loaded by ``psql``'s
  ``\\copy ... FROM`` a CSV file into the same, emptied, tables with the same
  indexes: what an operator would do by hand. Reported: each median and the
  ratio (target: within 2x), and PostgreSQL's size per million files.
* **lag under a storm**, and of a trickle: a daemon (hashing on) watches a tmpfs; its shipper is
  caught up; ``--storm`` files are created as fast as a loop can (open,
  write 100 bytes, close). A thread polls the host's highest shipped seq
  every 2 ms; each journal entry's lag is from its time in the journal
  (the daemon's clock, milliseconds) to the first poll that sees it in
  PostgreSQL. Reported: p50, p99 and max over every entry (``new`` and
  ``hash``), entries per second shipped, and the daemon's and the server's
  CPU over the storm. Then ``--trickle`` renames, 100 ms apart: the lag of
  one change at a time.
"""

from __future__ import annotations

import datetime
import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import psycopg
from psycopg.rows import dict_row

import _args
from _measure import cpu_seconds, percentile, start, stop
from filewarden import fleet
from filewarden.client import Client
from filewarden.config import ShipConfig
from filewarden.testing import DaemonProcess, Postgres, Setup, write_config


def fill(setup: Setup, root: Path, files: int) -> None:
    """``files`` present files under ``root`` in 1,000 directories, each hashed; one in ten
    annotated."""
    conn = apsw.Connection(str(setup.catalog))
    rng = random.Random(1)
    now = time.time()
    root_id = conn.execute("SELECT id FROM roots WHERE path = ?", (bytes(root),)).fetchall()[0][0]
    with conn:
        conn.executemany(
            "INSERT INTO files(id, root, dir, name, size, mtime_ns, ctime_ns, device, inode,"
            " state, first_seen, last_seen, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, 'present', ?, ?, ?)",
            (
                (
                    i + 1,
                    root_id,
                    b"album%04d" % (i % 1000),
                    b"track%07d.flac" % i,
                    rng.randrange(1, 50_000_000),
                    int((now - rng.random() * 3e7) * 1e9),
                    int(now * 1e9),
                    i + 1,
                    now - 200 * 86400 + i // 1000,  # found a thousand at a time, as sweeps do
                    now - 100 * 86400 + i // 1000,
                    rng.randbytes(16),
                )
                for i in range(files)
            ),
        )
        conn.executemany(
            "INSERT INTO annotations(file, key, value) VALUES (?, 'rating', ?)",
            ((i + 1, str(i % 5 + 1)) for i in range(0, files, 10)),
        )
        conn.execute("UPDATE roots SET present = ? WHERE id = ?", (files, root_id))
    conn.close()


def psql(server: Postgres, *commands: str) -> float:
    """Run ``psql`` commands in one transaction; its wall time."""
    args = [str(server.bin / "psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", server.dsn()]
    for c in commands:
        args += ["-c", c]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def shipper(setup: Setup, log: Path) -> DaemonProcess:
    return DaemonProcess(
        setup.path.parent,
        "--config",
        str(setup.path),
        command="ship",
        socket=setup.socket,
        log=log,
    )


def first_load(args: Any, server: Postgres, work: Path) -> dict[str, Any]:
    root = work / "library"
    root.mkdir(parents=True, exist_ok=True)
    setup = write_config(
        work,
        [{"path": root, "marker": ".filewarden-library"}],  # absent: the root is offline
        name="big",
        state_dir=work / "big-state",
        socket=work / "big.sock",
        daemon={"client_idle_timeout": "1h"},
        sections={"ship": {"dsn": server.dsn(), "name": "big"}, "log": {"level": "info"}},
    )
    built = work / ".built"
    if not built.exists():
        setup.reset_state()
        daemon = start(setup)
        daemon.wait_event("daemon.ready", timeout=120)
        stop(daemon)
        t0 = time.perf_counter()
        fill(setup, root, args.files)
        print(f"catalog of {args.files:,} files written in {time.perf_counter() - t0:.1f} s")
        built.touch()
    daemon = start(setup)
    ship_s, copy_s, sizes = [], [], {}
    try:
        with daemon.connect(call_timeout=600) as c:
            totals = c.status()["totals"]
            assert totals["present"] + totals["offline"] == args.files, totals
        files_csv, notes_csv = work / "files.csv", work / "annotations.csv"
        for run in range(args.runs):
            psql(server, "DROP SCHEMA IF EXISTS filewarden CASCADE")
            proc = shipper(setup, work / "ship-big.log")
            try:
                done = proc.wait_event("ship.resync", timeout=1800, reason="initial")
                proc.wait_event("ship.start", timeout=60)
            finally:
                proc.stop(60)
            assert done["files"] == args.files, done
            ship_s.append(float(done["duration_s"]))
            if run == 0:
                queries = fleet_queries(server, root)
                with psycopg.connect(server.dsn()) as pg:
                    sizes = {
                        t: pg.execute(
                            "SELECT pg_total_relation_size(%s)", (f"filewarden.{t}",)
                        ).fetchone()[0]  # type: ignore[index]
                        for t in ("files", "annotations")
                    }
                psql(
                    server,
                    f"\\copy filewarden.files TO '{files_csv}' CSV",
                    f"\\copy filewarden.annotations TO '{notes_csv}' CSV",
                )
            psql(server, "TRUNCATE filewarden.files CASCADE")
            copy_s.append(
                psql(
                    server,
                    f"\\copy filewarden.files FROM '{files_csv}' CSV",
                    f"\\copy filewarden.annotations FROM '{notes_csv}' CSV",
                )
            )
            print(
                f"  run {run + 1}: ship {ship_s[-1]:.2f} s, psql \\copy from CSV"
                f" {copy_s[-1]:.2f} s ({ship_s[-1] / copy_s[-1]:.2f}x)"
            )
    finally:
        stop(daemon)
    return {"ship_s": ship_s, "copy_s": copy_s, "sizes": sizes, "queries": queries}


def fleet_queries(server: Postgres, root: Path) -> dict[str, float]:
    """Each `fleet` question over the loaded fleet, as the command line asks it: the
    median of 5, in milliseconds."""
    path = str(root / "album0500" / "track0500500.flac")
    with psycopg.connect(server.dsn(), row_factory=dict_row) as pg:
        row = pg.execute("SELECT encode(hash, 'hex') AS h FROM filewarden.files LIMIT 1")
        digest = str(row.fetchone()["h"])  # type: ignore[index]
        questions: dict[str, Callable[[], object]] = {
            "fleet status": lambda: fleet.status(pg),
            "fleet missing (none missing)": lambda: fleet.missing(pg),
            "fleet find PATH": lambda: fleet.find(pg, path),
            "fleet find HASH": lambda: fleet.find(pg, digest),
        }
        out = {}
        for name, ask in questions.items():
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                ask()
                times.append((time.perf_counter() - t0) * 1e3)
            out[name] = statistics.median(times)
        plan = pg.execute("EXPLAIN " + fleet.FIND_PATH, {"path": path}).fetchall()
        scans = [str(next(iter(r.values()))) for r in plan]
        print("  fleet find PATH's plan: " + "; ".join(t.strip() for t in scans if "Scan" in t))
    return out


class Poller(threading.Thread):
    """The host's highest shipped seq, every 2 ms: ``(time, seq)`` each time it moves."""

    def __init__(self, dsn: str, host: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.host = dsn, host
        self.seen: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as pg:
            last = -1
            while not self.halt.is_set():
                row = pg.execute(
                    "SELECT cursor FROM filewarden.hosts WHERE host = %s", (self.host,)
                ).fetchone()
                now = time.time()
                if row and row[0] != last:
                    last = int(row[0])
                    self.seen.append((now, last))
                self.halt.wait(0.002)

    def arrival(self, seq: int) -> float | None:
        for when, top in self.seen:
            if top >= seq:
                return when
        return None


def storm(args: Any, server: Postgres, work: Path) -> dict[str, Any]:
    disk = work / "storm-fs"
    disk.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(disk)], check=True)
    lags: list[float] = []
    rates, daemon_cores, server_cores = [], [], []
    try:
        setup = write_config(
            work,
            [disk],
            name="storm",
            state_dir=work / "storm-state",
            socket=work / "storm.sock",
            daemon={"client_idle_timeout": "1h"},
            sections={
                "ship": {"dsn": server.dsn(), "name": "storm", "batch": args.batch},
                "log": {"level": "info"},
            },
        )
        setup.reset_state()
        daemon = start(setup)
        proc = shipper(setup, work / "ship-storm.log")
        try:
            c = daemon.connect(call_timeout=600)
            proc.wait_event("ship.start", timeout=60)
            host = c.status()["host"]
            for run in range(args.runs):
                target = disk / f"run{run}"
                target.mkdir()
                seq0 = caught_up(c, server, host)
                poller = Poller(server.dsn(), host)
                poller.start()
                cpu0, pg0, t0 = cpu_seconds(daemon.pid), server_cpu(server), time.perf_counter()
                for i in range(args.storm):
                    with open(target / f"f{i:06d}", "wb") as f:
                        f.write(b"x" * 100)
                top = caught_up(c, server, host)
                wall = time.perf_counter() - t0
                daemon_cores.append((cpu_seconds(daemon.pid) - cpu0) / wall)
                server_cores.append((server_cpu(server) - pg0) / wall)
                poller.halt.set()
                poller.join()
                entries = journal(c, seq0)
                run_lags = []
                for seq, at in entries:
                    arrived = poller.arrival(seq)
                    assert arrived is not None, seq
                    run_lags.append(arrived - at)
                lags += run_lags
                rates.append(len(entries) / wall)
                print(
                    f"  run {run + 1}: {len(entries):,} entries (seq {seq0}..{top}) shipped at"
                    f" {rates[-1]:,.0f}/s; lag p50 {statistics.median(run_lags) * 1e3:.0f} ms,"
                    f" p99 {percentile(run_lags, 0.99) * 1e3:.0f} ms"
                )
            # A trickle: one rename every 100 ms, each shipped on its own.
            target = disk / "trickle"
            target.mkdir()
            (target / "t0").write_bytes(b"t")
            seq0 = caught_up(c, server, host)
            poller = Poller(server.dsn(), host)
            poller.start()
            for i in range(args.trickle):
                (target / f"t{i}").rename(target / f"t{i + 1}")
                time.sleep(0.1)  # pacing, not waiting for anything
            caught_up(c, server, host)
            poller.halt.set()
            poller.join()
            trickle = []
            for seq, at in journal(c, seq0):
                arrived = poller.arrival(seq)
                assert arrived is not None, seq
                trickle.append(arrived - at)
            with psycopg.connect(server.dsn()) as pg:
                journal_bytes = pg.execute(
                    "SELECT pg_total_relation_size('filewarden.journal')"
                ).fetchone()[0]  # type: ignore[index]
                journal_rows = pg.execute("SELECT count(*) FROM filewarden.journal").fetchone()[0]  # type: ignore[index]
        finally:
            proc.stop(60)
            stop(daemon)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return {
        "trickle": trickle,
        "lags": lags,
        "rates": rates,
        "daemon_cores": daemon_cores,
        "server_cores": server_cores,
        "journal_bytes_per_entry": journal_bytes / max(journal_rows, 1),
    }


def caught_up(c: Client, server: Postgres, host: str) -> int:
    """Wait until the catalog has the disk, the hasher is idle and PostgreSQL has it all."""
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        while True:
            c.sync(600)
            status = c.status()
            row = pg.execute(
                "SELECT cursor FROM filewarden.hosts WHERE host = %s", (host,)
            ).fetchone()
            if status["hashing"]["pending"] == 0 and row and row[0] == status["seq"]:
                return int(status["seq"])
            time.sleep(0.05)


def journal(c: Client, since: int) -> list[tuple[int, float]]:
    """``(seq, time)`` of every entry after ``since``."""
    out: list[tuple[int, float]] = []
    while True:
        answer = c.changes(since, limit=10_000)
        if not answer["changes"]:
            return out
        for e in answer["changes"]:
            at = datetime.datetime.fromisoformat(str(e["time"]).replace("Z", "+00:00"))
            out.append((int(e["seq"]), at.timestamp()))
        since = int(answer["changes"][-1]["seq"])


def server_cpu(server: Postgres) -> float:
    """CPU seconds of every process of the server's user (the postmaster and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != server.uid:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    parser = _args.parser(__doc__, files=1_000_000, runs=3)
    parser.add_argument("--storm", type=int, default=20_000, help="files a storm, default 20,000")
    parser.add_argument("--only", choices=("load", "storm"), help="one part only")
    parser.add_argument(
        "--batch", type=int, default=ShipConfig().batch, help="[ship] batch of the storm's shipper"
    )
    parser.add_argument(
        "--trickle", type=int, default=100, help="renames 100 ms apart, default 100"
    )
    args = parser.parse_args()
    work = args.workdir / f"ship-{args.files}"
    work.mkdir(parents=True, exist_ok=True)
    server = Postgres()
    try:
        server.start()
        load = lag = None
        if args.only != "storm":
            print(f"first load of {args.files:,} files, {args.runs} runs")
            load = first_load(args, server, work)
        if args.only != "load":
            print(f"lag under a {args.storm:,}-file create storm, {args.runs} runs")
            lag = storm(args, server, work)
    finally:
        server.remove()
    if load is not None:
        report_load(args, load)
    if lag is not None:
        report_storm(args, lag)


def report_load(args: Any, load: dict[str, Any]) -> None:
    ship, copy = statistics.median(load["ship_s"]), statistics.median(load["copy_s"])
    per_million = {t: b / args.files * 1e6 / 2**20 for t, b in load["sizes"].items()}
    print(f"\nfirst load of {args.files:,} files (medians of {args.runs})")
    print(
        f"  filewarden ship (list -> COPY):      {ship:8.2f} s  {args.files / ship:>10,.0f} files/s"
    )
    print(
        f"  psql \\copy from CSV, same rows:      {copy:8.2f} s  {args.files / copy:>10,.0f} files/s"
    )
    print(f"  ratio {ship / copy:.2f}x (target <= 2x)")
    print(
        "  PostgreSQL size per million files: "
        + ", ".join(f"{t} {mib:.0f} MiB" for t, mib in per_million.items())
    )
    print("  over it: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in load["queries"].items()))


def report_storm(args: Any, lag: dict[str, Any]) -> None:
    lags, trickle = lag["lags"], lag["trickle"]
    print(f"\nlag of {len(trickle)} renames 100 ms apart (no storm)")
    print(
        f"  entry in the journal -> in PostgreSQL: p50 {statistics.median(trickle) * 1e3:.0f} ms,"
        f" p99 {percentile(trickle, 0.99) * 1e3:.0f} ms"
    )
    print(
        f"\nlag under a {args.storm:,}-file create storm ({len(lags):,} entries, {args.runs} runs)"
    )
    print(
        f"  entry in the journal -> in PostgreSQL: p50 {statistics.median(lags) * 1e3:.0f} ms,"
        f" p99 {percentile(lags, 0.99) * 1e3:.0f} ms, max {max(lags) * 1e3:.0f} ms"
    )
    print(
        f"  shipped {statistics.median(lag['rates']):,.0f} entries/s (median); daemon"
        f" {statistics.median(lag['daemon_cores']):.2f} cores, PostgreSQL"
        f" {statistics.median(lag['server_cores']):.2f} cores over the storm; the journal"
        f" table {lag['journal_bytes_per_entry']:.0f} bytes an entry"
    )


if __name__ == "__main__":
    main()
