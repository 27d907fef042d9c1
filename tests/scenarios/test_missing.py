"""Managing missing files: filters, purge (never offline or present), retention, journal compaction, exact counts."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from filewarden import catalog
from filewarden.protocol import RpcError
from filewarden.testing import Live
from tests.conftest import wait_for
from tests.scenarios.conftest import live_daemon

DAY = 86400


def age(tmp: Path, file_ids: list[int], seconds: float) -> None:
    """Make files missing ``seconds`` longer: catalog time moved back, as if days had passed."""
    conn = catalog.connect(tmp / "state" / "catalog.db")
    with conn:
        for file_id in file_ids:
            conn.execute(
                "UPDATE files SET missing_since = missing_since - ?, last_seen = last_seen - ? WHERE id = ?",
                (seconds, seconds, file_id),
            )
    conn.close()


def make_missing(live: Live, names: list[str], root: int = 0) -> list[int]:
    ids = []
    for name in names:
        p = live.roots[root] / name
        p.write_text(name)
        live.sync()
        ids.append(live.id_of(p))
        p.unlink()
    live.sync()
    return ids


def test_list_filters_by_state_root_and_age(tmp_path: Path) -> None:
    """list filters missing files by root and by how long they are missing."""
    with live_daemon(tmp_path, "watchdog") as live:
        old, recent = make_missing(live, ["old.jpg", "recent.jpg"])
        [other_root] = make_missing(live, ["elsewhere.jpg"], root=1)
        age(tmp_path, [old], 40 * DAY)

        def ids(**p: object) -> set[int]:
            return {f["id"] for f in live.call("list", {"state": "missing", **p})["files"]}

        assert ids() == {old, recent, other_root}
        assert ids(root=str(live.roots[0])) == {old, recent}
        assert ids(older_than="30d") == {old}
        assert ids(newer_than="1d") == {recent, other_root}
        assert ids(older_than=10, root=str(live.roots[1])) == set()


def test_purge_mix_removes_only_missing(tmp_path: Path) -> None:
    """A purge of present, offline and missing ids removes the missing ones and says why not for the others."""

    def fill(roots: list[Path]) -> None:
        for root in roots:
            (root / ".library").write_text("")
        (roots[1] / "on-the-drive.jpg").write_text("d")

    with live_daemon(
        tmp_path, "watchdog", before_start=fill, root_options={"marker": ".library"}
    ) as live:
        [missing] = make_missing(live, ["gone.jpg"])
        (live.roots[0] / "here.jpg").write_text("h")
        live.sync()
        present = live.id_of(live.roots[0] / "here.jpg")
        offline = live.id_of(live.roots[1] / "on-the-drive.jpg")
        live.call("annotate", {"id": missing, "key": "rating", "value": "3"})
        (live.roots[1] / ".library").unlink()  # the drive's marker is gone: offline
        wait_for(lambda: live.call("file", {"id": offline})["state"] == "offline", timeout=10)
        result = live.call("purge", {"ids": [present, offline, missing]})
        assert result["purged"] == 1
        reasons = {r["id"]: r["reason"] for r in result["refused"]}
        assert set(reasons) == {present, offline}
        assert "present" in reasons[present] and "offline" in reasons[offline]
        assert live.call("file", {"id": present})["state"] == "present"
        assert live.call("file", {"id": offline})["state"] == "offline"
        with pytest.raises(RpcError) as gone:
            live.call("file", {"id": missing})
        assert gone.value.code == -32002
        assert live.call("purge", {"all": True})["purged"] == 0  # offline files are never purged
        assert live.call("file", {"id": offline})["state"] == "offline"
        history = live.call("changes", {"since": 0, "limit": 10000})["changes"]
        assert [c["kind"] for c in history if c["id"] == missing][-1] == "purge"


def test_purge_older_than_respects_missing_since(tmp_path: Path) -> None:
    """purge older_than removes only the files missing for longer than that."""
    with live_daemon(tmp_path, "watchdog") as live:
        old, recent = make_missing(live, ["a.jpg", "b.jpg"])
        age(tmp_path, [old], 31 * DAY)
        assert live.call("purge", {"older_than": "30d"})["purged"] == 1
        assert live.call("file", {"id": recent})["state"] == "missing"
        assert {f["id"] for f in live.files("missing")} == {recent}


def test_retention_purges_on_schedule(tmp_path: Path) -> None:
    """purge_missing_after is applied by the daemon on its own schedule, journaled and logged; recent and offline files stay."""
    retention = {"retention": {"purge_missing_after": "7d", "check_interval": "200ms"}}
    with live_daemon(tmp_path, "watchdog", sections=retention) as live:
        old, recent = make_missing(live, ["old.flac", "recent.flac"])
        age(tmp_path, [old], 8 * DAY)
        event = live.proc.wait_event("file.purge", timeout=10)
        assert event["id"] == old and event["by"] == "retention"
        assert {f["id"] for f in live.files("missing")} == {recent}
        assert [
            c["kind"]
            for c in live.call("changes", {"since": 0, "limit": 10000})["changes"]
            if c["id"] == old
        ][-1] == "purge"


def test_journal_compaction_keeps_each_files_latest_entry(tmp_path: Path) -> None:
    """Journal entries older than journal_keep go, except each file's latest; a reader from before is told."""
    retention = {"retention": {"journal_keep": "30d", "check_interval": "200ms"}}
    with live_daemon(tmp_path, "watchdog", sections=retention) as live:
        p = live.roots[0] / "x.txt"
        p.write_text("1")
        live.sync()
        file_id = live.id_of(p)
        for i in range(5):
            q = live.roots[0] / f"x{i}.txt"
            p.rename(q)
            p = q
        live.sync()
        before = live.call("file", {"id": file_id})["history"]
        assert len(before) == 6
        conn = catalog.connect(tmp_path / "state" / "catalog.db")
        with conn:
            conn.execute("UPDATE journal SET time = time - ?", (60 * DAY,))
        conn.close()
        wait_for(lambda: len(live.call("file", {"id": file_id})["history"]) == 1, timeout=10)
        [latest] = live.call("file", {"id": file_id})["history"]
        assert (latest["seq"], latest["kind"], latest["path"]) == (
            before[-1]["seq"],
            "move",
            str(p),
        )
        changes = live.call("changes", {"since": 0})
        assert changes["truncated"] is True and changes["oldest_seq"] > 1
        assert live.call("changes", {"since": changes["oldest_seq"] - 1})["truncated"] is False


def test_counters_equal_a_recount_after_1000_random_operations(tmp_path: Path) -> None:
    """After 1,000 random operations (create, edit, rename, move, delete, re-create, purge, scan), status counts equal a full recount."""
    rng = random.Random(20261121)
    with live_daemon(tmp_path, "watchdog") as live:
        files: list[Path] = []
        dirs = [r / f"d{i}" for r in live.roots for i in range(4)]
        for d in dirs:
            d.mkdir()
        for step in range(1000):
            op = rng.random()
            if op < 0.3 or not files:
                p = rng.choice(dirs) / f"f{step}.dat"
                p.write_bytes(os.urandom(rng.randrange(1, 64)))
                files.append(p)
            elif op < 0.45:
                p = rng.choice(files)
                with open(p, "ab") as f:
                    f.write(b"+")
            elif op < 0.65:
                p = files.pop(rng.randrange(len(files)))
                q = rng.choice(dirs) / f"r{step}.dat"
                p.rename(q)
                files.append(q)
            elif op < 0.85:
                files.pop(rng.randrange(len(files))).unlink()
            elif op < 0.9:
                live.call("purge", {"all": True})
            elif op < 0.95:
                live.call("scan", {"wait": True})
            else:
                live.sync()
            if step % 100 == 99:
                live.sync()
                check_counts(live, tmp_path)
        live.sync()
        check_counts(live, tmp_path)
        live.assert_matches_disk()


def check_counts(live: Live, tmp: Path) -> None:
    status = live.call("status")
    conn = catalog.connect(tmp / "state" / "catalog.db", readonly=True)
    try:
        by_root = {r.path: catalog.recount(conn, r.id) for r in catalog.all_roots(conn)}
    finally:
        conn.close()
    total = [0, 0, 0]
    for root in status["roots"]:
        expected = by_root[os.fsencode(root["path"])]
        files = root["files"]
        assert (files["present"], files["missing"], files["offline"]) == expected
        total = [a + b for a, b in zip(total, expected, strict=True)]
    assert list(status["totals"].values()) == total
