"""Three hosts, one PostgreSQL: `filewarden ship` and `filewarden fleet`, end to end.

Each host is a real daemon with its own state directory and roots, and its
own shipper process; the server is a private PostgreSQL (initdb in a
temporary directory, run as an unprivileged user). After each ordeal the
fleet's tables are compared row by row with the three local catalogs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import pytest

from filewarden import catalog
from filewarden.client import Client
from filewarden.testing import DaemonProcess, Postgres, Setup, write_config
from filewarden.testing._postgres import bin_dir
from tests.conftest import wait_for

psycopg = pytest.importorskip("psycopg")

pytestmark = [
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root only)"),
]


@dataclass
class Host:
    name: str
    base: Path
    setup: Setup
    daemon: DaemonProcess
    client: Client
    dsn: str
    shipper: DaemonProcess | None = None
    roots: list[Path] = field(default_factory=list)
    fleet_uuid: str | None = None  # [ship] host, where it is set

    def ship(self) -> DaemonProcess:
        self.shipper = DaemonProcess(
            self.base, "--config", str(self.setup.path), command="ship", socket=self.setup.socket
        )
        return self.shipper

    def shipping(self) -> DaemonProcess:
        """A shipper, once it has placed its cursor and carries on (``ship.start``)."""
        shipper = self.ship()
        shipper.wait_event("ship.start", timeout=60)
        return shipper

    @property
    def uuid(self) -> str:
        """The host's UUID in the fleet: its catalog's, unless [ship] host says another."""
        return self.fleet_uuid or str(self.client.status()["host"])

    def settled(self) -> int:
        """Wait until the catalog holds what is on disk and the hasher is idle; the seq."""
        self.client.sync(120)
        return int(
            wait_for(
                lambda: (s := self.client.status())["hashing"]["pending"] == 0 and s["seq"],
                timeout=120,
            )
        )


def cursor(pg: Any, host: Host) -> int:
    row = pg.execute("SELECT cursor FROM filewarden.hosts WHERE host = %s", (host.uuid,)).fetchone()
    return int(row[0]) if row else -1


def caught_up(pg: Any, host: Host, timeout: float = 120) -> int:
    """Wait until the host's cursor in PostgreSQL is the journal's last seq, and stays it."""

    def done() -> int | None:
        seq = host.settled()
        if cursor(pg, host) != seq:
            return None
        return seq if host.client.status()["seq"] == seq else None

    return int(wait_for(done, timeout=timeout, interval=0.1))


def local_files(host: Host) -> dict[int, tuple[Any, ...]]:
    out = {}
    after: int | None = 0
    while after is not None:
        page, after = host.client.list_files(limit=10_000, after_id=after)
        for r in page:
            out[r["id"]] = (
                r["root"],
                r["path"],
                r["state"],
                r["size"],
                r["mtime_ns"],
                r["hash"],
                r["first_seen"],
                r["missing_since"],
                r["missing_reason"],
                (r["fingerprint"] or {"value": None})["value"],
                tuple(sorted(r["annotations"].items())),
            )
    return out


MS = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def fleet_files(pg: Any, host: Host) -> dict[int, tuple[Any, ...]]:
    rows = pg.execute(
        "SELECT f.id, r.path, f.path, f.state, f.size, f.mtime_ns, encode(f.hash, 'hex'),"
        f" to_char(f.first_seen AT TIME ZONE 'UTC', '{MS}'),"
        f" to_char(f.missing_since AT TIME ZONE 'UTC', '{MS}'), f.missing_reason, f.fingerprint,"
        " coalesce((SELECT array_agg(ARRAY[a.key, a.value] ORDER BY a.key)"
        "  FROM filewarden.annotations a WHERE a.host = f.host AND a.file = f.id), '{}')"
        " FROM filewarden.files f JOIN filewarden.roots r ON r.id = f.root WHERE f.host = %s",
        (host.uuid,),
    ).fetchall()
    return {row[0]: (*row[1:10], row[10], tuple(tuple(kv) for kv in row[11])) for row in rows}


def local_journal(host: Host, since: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    while True:
        answer = host.client.changes(since, limit=10_000)
        assert answer["reset_required"] is None
        out += [(e["seq"], e["kind"], e["id"], e["path"], e["old_path"]) for e in answer["changes"]]
        if not answer["changes"]:
            return out
        since = answer["changes"][-1]["seq"]


def fleet_journal(pg: Any, host: Host) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in pg.execute(
            "SELECT seq, kind, id, path, old_path FROM filewarden.journal WHERE host = %s"
            " ORDER BY seq",
            (host.uuid,),
        ).fetchall()
    ]


def resync_seq(pg: Any, host: Host) -> int:
    row = pg.execute(
        "SELECT resync_seq FROM filewarden.hosts WHERE host = %s", (host.uuid,)
    ).fetchone()
    return int(row[0])


def assert_matches(pg: Any, host: Host) -> None:
    """The fleet's rows of this host are its catalog, and its journal since the last resync."""
    caught_up(pg, host)
    assert fleet_files(pg, host) == local_files(host)
    assert fleet_journal(pg, host) == local_journal(host, resync_seq(pg, host))
    # Each root's counts, kept by triggers as the rows change, are the daemon's own.
    counts = {
        path: (present, missing, offline)
        for path, present, missing, offline in pg.execute(
            "SELECT path, present, missing, offline FROM filewarden.roots WHERE host = %s",
            (host.uuid,),
        ).fetchall()
    }
    status = host.client.status()
    for root in status["roots"]:
        files = root["files"]
        assert counts[root["path"]] == (files["present"], files["missing"], files["offline"])


def fleet_cli(dsn: str, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "filewarden", "fleet", *args, "--dsn", dsn, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode in (0, 5), out.stderr  # 5: find found nothing
    return json.loads(out.stdout) if out.stdout.strip() else []


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Postgres, list[Host]]]:
    server = Postgres()
    hosts: list[Host] = []
    mounted: list[Path] = []
    try:
        server.start()
        for name in ("alpha", "beta", "gamma"):
            base = tmp_path / name
            base.mkdir()
            music, photos = base / "music", base / "photos"
            music.mkdir()
            photos.mkdir()
            roots: list[Any] = [music, photos]
            if name == "gamma":  # a drive that will be unplugged
                disk = base / "usb"
                disk.mkdir()
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True
                )
                mounted.append(disk)
                roots.append({"path": disk, "require_mountpoint": True})
                for i in range(20):
                    (disk / f"clip{i:02d}.mov").write_bytes(b"clip %d " % i * 100)
            for i in range(30):
                album = music / f"album{i % 3}"
                album.mkdir(exist_ok=True)
                (album / f"track{i:02d}.flac").write_bytes(
                    b"%s track %d " % (name.encode(), i) * 50
                )
            for i in range(10):
                (photos / f"img{i:02d}.jpg").write_bytes(b"%s photo %d " % (name.encode(), i) * 80)
            # The same content on every host: found on each by `fleet find`.
            (photos / "shared.bin").write_bytes(b"the same bytes everywhere " * 400)
            setup = write_config(
                base,
                roots,
                sections={
                    "ship": {"dsn": server.dsn(), "name": name, "batch": 50},
                    "sweep": {"mount_check_interval": "200ms"},
                },
            )
            daemon = setup.start()
            client = daemon.connect()
            host = Host(name, base, setup, daemon, client, server.dsn(), roots=[music, photos])
            hosts.append(host)
            host.settled()
        yield server, hosts
    finally:
        for host in hosts:
            if host.shipper is not None:
                host.shipper.kill()
            host.client.close()
            host.daemon.stop()
        for disk in mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        server.remove()


def churn(host: Host, round: int) -> None:
    """Creates, edits, renames, a directory move and deletes, as people make them."""
    music, photos = host.roots
    for i in range(5):
        (photos / f"new{round}-{i}.jpg").write_bytes(b"new %d %d " % (round, i) * 60)
    (photos / f"img0{round}.jpg").rename(photos / f"renamed{round}.jpg")
    shutil.move(str(music / f"album{round}"), str(music / f"moved{round}"))
    (photos / f"img0{round + 5}.jpg").unlink()
    shutil.move(str(photos / f"img0{round + 2}.jpg"), str(host.base / f"away{round}.jpg"))
    with open(photos / f"new{round}-0.jpg", "ab") as f:
        f.write(b"edited")


def test_three_hosts_ship_and_the_fleet_answers_as_their_catalogs(
    fleet: tuple[Postgres, list[Host]],
) -> None:
    server, hosts = fleet
    for host in hosts:
        host.ship().wait_event("ship.resync", timeout=60, reason="initial")
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        for host in hosts:
            assert_matches(pg, host)
        # Annotations travel, and survive a rename.
        a = hosts[0]
        first = a.client.lookup(str(a.roots[1] / "img01.jpg"))
        assert first is not None
        a.client.annotate(first["id"], "rating", "5")
        for host in hosts:
            churn(host, 1)
        # A purged file leaves the fleet with its annotations.
        a.client.sync(60)
        gone = a.client.lookup(str(a.roots[1] / "img06.jpg"))
        assert gone is not None and gone["state"] == "missing"
        a.client.annotate(gone["id"], "note", "was here")
        assert a.client.purge([gone["id"]])["purged"] == 1
        gamma = hosts[2]
        subprocess.run(["umount", str(gamma.base / "usb")], check=True)
        gamma.daemon.wait_event("root.offline", timeout=30)
        for host in hosts:
            assert_matches(pg, host)
        offline = [f for f in fleet_files(pg, gamma).values() if f[2] == "offline"]
        assert len(offline) == 20  # the unplugged drive's files: offline, not missing

        # fleet missing: every host's missing files, as each catalog lists them.
        fields = ("id", "path", "size", "hash", "missing_since", "missing_reason")
        want = sorted(
            (host.uuid, *(r[k] for k in fields))
            for host in hosts
            for r in map(dict, host.client.iter_files("missing"))
        )
        got = sorted(
            (r["host"], *(r[k] for k in fields)) for r in fleet_cli(server.dsn(), "missing")
        )
        assert got == want and len(want) == 3 * 2 - 1  # deleted and moved away; one purged
        assert not pg.execute(
            "SELECT 1 FROM filewarden.annotations WHERE host = %s AND file = %s",
            (a.uuid, gone["id"]),
        ).fetchall()
        beta_only = fleet_cli(server.dsn(), "missing", "--host", "beta")
        assert {r["host_name"] for r in beta_only} == {"beta"} and len(beta_only) == 2

        # fleet find: a path on one host, and its content on every host.
        shared = a.roots[1] / "shared.bin"
        found = fleet_cli(server.dsn(), "find", str(shared))
        want_found = sorted(
            (host.uuid, r["id"])
            for host in hosts
            for r in host.client.iter_files()
            if r["hash"] == a.client.lookup(str(shared))["hash"]  # type: ignore[index]
            or r["path"] == str(shared)
        )
        assert sorted((r["host"], r["id"]) for r in found) == want_found and len(want_found) == 3
        by_hash = fleet_cli(server.dsn(), "find", str(a.client.lookup(str(shared))["hash"]))  # type: ignore[index]
        assert sorted((r["host"], r["id"]) for r in by_hash) == want_found
        moved = a.client.lookup(str(a.roots[0] / "moved1" / "track01.flac"))
        assert moved is not None
        (hit,) = fleet_cli(server.dsn(), "find", moved["path"])
        assert (hit["host"], hit["id"], hit["state"]) == (a.uuid, moved["id"], "present")

        # fleet status: a row per host and root, counts as status says.
        status = fleet_cli(server.dsn(), "status")
        for host in hosts:
            local = host.client.status()
            rows = {r["root"]: r for r in status if r["host"] == host.uuid}
            for root in local["roots"]:
                assert (rows[root["path"]]["present"], rows[root["path"]]["missing"],
                        rows[root["path"]]["offline"]) == (
                    root["files"]["present"], root["files"]["missing"], root["files"]["offline"]
                )  # fmt: skip
            assert {r["behind"] for r in rows.values()} == {0}
            assert local["ship"]["lag_entries"] == 0 and local["ship"]["error"] is None
            scrape = host.client.metrics()
            for line in ("filewarden_ship_lag_entries 0.0", "filewarden_ship_error 0.0"):
                assert line in scrape.splitlines(), scrape[-2000:]
            assert "filewarden_ship_lag_seconds " in scrape
    for host in hosts:
        assert host.shipper is not None
        host.shipper.stop()


def test_postgres_killed_mid_stream_loses_and_doubles_nothing(
    fleet: tuple[Postgres, list[Host]],
) -> None:
    server, hosts = fleet
    host = hosts[0]
    shipper = host.shipping()
    photos = host.roots[1]
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        caught_up(pg, host)
        start = cursor(pg, host)
    for i in range(200):
        (photos / f"storm{i:03d}.jpg").write_bytes(b"storm %d " % i * 40)
        if i == 60:  # the shipper is in the middle of the stream: the server goes
            wait_for(lambda: _cursor_now(server, host) > start, timeout=60)
            server.stop("immediate")
    shipper.wait_event("ship.error", timeout=60, side="postgres")
    for i in range(0, 200, 3):
        (photos / f"storm{i:03d}.jpg").rename(photos / f"calm{i:03d}.jpg")
    # The shipper reports each attempt to the daemon: two reports with the error mean it
    # tried again while the server was down (and logged the outage once all the same).
    first = wait_for(
        lambda: (s := host.client.status()["ship"])["error"] is not None and s["reported"],
        timeout=30,
    )
    wait_for(lambda: host.client.status()["ship"]["reported"] != first, timeout=30)
    server.start()
    shipper.wait_event("ship.resumed", timeout=120, side="postgres")
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        assert_matches(pg, host)
        # Every entry once: the journal's key would refuse a double, and none is missing.
        seqs = [r[0] for r in fleet_journal(pg, host)]
        assert len(seqs) == len(set(seqs))
    assert len(shipper.seen("ship.error")) == 1  # once for the outage, not once a retry
    assert host.client.status()["ship"]["error"] is None
    shipper.stop()


def _cursor_now(server: Postgres, host: Host) -> int:
    with psycopg.connect(server.dsn()) as pg:
        return cursor(pg, host)


def test_a_shipper_killed_mid_batch_resumes_exactly(fleet: tuple[Postgres, list[Host]]) -> None:
    server, hosts = fleet
    host = hosts[1]
    shipper = host.shipping()
    with (
        psycopg.connect(server.dsn(), autocommit=True) as pg,
        psycopg.connect(server.dsn()) as blocker,
    ):
        caught_up(pg, host)
        shipped = fleet_journal(pg, host)
        # Hold the files table: the shipper's next batch writes its journal rows, then
        # waits on the lock for its files, in the middle of its transaction.
        blocker.execute("LOCK TABLE filewarden.files IN SHARE MODE")
        for i in range(20):
            (host.roots[1] / f"batch{i:02d}.jpg").write_bytes(b"batch %d " % i * 30)
        pid, xid = wait_for(
            lambda: pg.execute(
                "SELECT pid, backend_xid FROM pg_stat_activity"
                " WHERE application_name = 'filewarden ship' AND wait_event_type = 'Lock'"
            ).fetchone(),
            timeout=60,
        )
        assert pid and xid is not None  # in its transaction, after writing its journal rows
        shipper.kill()  # SIGKILL, mid-batch
        blocker.rollback()
        # What it had written went with its transaction.
        assert fleet_journal(pg, host) == shipped
        shipper = host.shipping()
        assert_matches(pg, host)
        assert [r[0] for r in fleet_journal(pg, host)][: len(shipped)] == [r[0] for r in shipped]
    shipper.stop()


def test_a_cursor_compacted_away_resynchronises_the_host(
    fleet: tuple[Postgres, list[Host]],
) -> None:
    server, hosts = fleet
    host = hosts[2]
    shipper = host.shipping()
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        caught_up(pg, host)
        shipper.stop()
        old = cursor(pg, host)
        churn(host, 2)
        host.settled()
        conn = apsw.Connection(str(host.setup.catalog))
        try:
            conn.set_busy_timeout(10_000)
            with conn:
                assert catalog.compact_journal(conn, time.time() + 1) > 0
            assert catalog.compacted_through(conn) > old
        finally:
            conn.close()
        shipper = host.ship()
        resync = shipper.wait_event("ship.resync", timeout=60, reason="compacted")
        assert resync["level"] == "warning" and resync["seq"] >= old
        assert_matches(pg, host)
    shipper.stop()


def test_a_catalog_made_anew_keeps_its_hosts_place_when_told(
    fleet: tuple[Postgres, list[Host]],
) -> None:
    """[ship] host names the fleet's host for a catalog made anew: its shipper sees another
    instance, drops the old journal rows (their seqs meant other entries) and loads it whole."""
    server, hosts = fleet
    host = hosts[0]
    old_uuid = host.uuid
    shipper = host.shipping()
    with psycopg.connect(server.dsn(), autocommit=True) as pg:
        caught_up(pg, host)
        shipper.stop()
        host.client.close()
        host.daemon.stop()
        host.setup.reset_state()  # the catalog is gone: ids start again
        host.setup = write_config(
            host.base,
            list(host.setup.roots),
            state_dir=host.setup.state_dir,
            socket=host.setup.socket,
            sections={"ship": {"dsn": server.dsn(), "name": host.name, "host": old_uuid}},
        )
        host.daemon = host.setup.start()
        host.client = host.daemon.connect()
        host.settled()
        assert host.client.status()["host"] != old_uuid  # a new catalog, a new UUID...
        host.fleet_uuid = old_uuid
        shipper = host.ship()
        resync = shipper.wait_event("ship.resync", timeout=60, reason="another instance")
        assert resync["host"] == old_uuid  # ...and the fleet's host as configured
        rows = pg.execute(
            "SELECT instance::text, resync_reason FROM filewarden.hosts WHERE host = %s",
            (old_uuid,),
        ).fetchone()
        assert rows == (host.client.status()["instance"], "another instance")
        assert_matches(pg, host)
    shipper.stop()
