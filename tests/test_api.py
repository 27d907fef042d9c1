"""The socket methods in-process: an ``Api`` over real parts, no daemon and no socket.

The parts are the real ones (writer, catalog, scheduler, mount checker,
watcher, health), built but not started, so what a method queues or records
can be read back at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from filewarden import catalog
from filewarden.api import Api, Peer
from filewarden.availability import Availability
from filewarden.config import SweepConfig
from filewarden.hasher import Hasher
from filewarden.health import Health
from filewarden.identity import Relinker
from filewarden.jobs import JobTable
from filewarden.live import Planner
from filewarden.protocol import INVALID_PARAMS, NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE, RpcError
from filewarden.roots import Root
from filewarden.scheduler import Scheduler
from filewarden.watch import Watcher
from filewarden.watch.sync import Syncer
from tests.conftest import Harness, logged, make_files, roots_of

USER = Peer(pid=1, uid=1000, gid=1000, admin=False)
ADMIN = Peer(pid=1, uid=0, gid=0, admin=True)


class _Told:
    """The daemon as the parts below the Api would tell it things; here nothing is told."""

    def root_offline(self, root: Root, reason: str) -> None:
        pass

    def root_online(self, root: Root) -> None:
        pass

    def after_batch(self, reader: apsw.Connection) -> None:
        pass

    def on_overflow(self, root: Root | None) -> list[threading.Event]:
        raise AssertionError("no watcher runs here")

    def on_watch_limit(self, root: Root, path: bytes) -> list[threading.Event]:
        raise AssertionError("no watcher runs here")

    def on_unmount(self, path: bytes) -> None:
        raise AssertionError("no watcher runs here")

    def on_hint_failed(self, root: Root, error: str) -> None:
        raise AssertionError(error)


class Parts:
    """An Api over one swept root and a second one that is offline (its marker is absent)."""

    def __init__(self, harness: Harness, tmp_path: Path) -> None:
        (tmp_path / "away").mkdir()
        self.away = harness.add_root(tmp_path / "away", marker=".here")
        self.roots = roots_of(harness.root, self.away)
        self.jobs = JobTable()
        self.started = threading.Event()
        stop = threading.Event()
        told = _Told()
        writer = harness.writer
        self.watcher = Watcher(told, Planner(told, writer, self.roots), "poll", self.roots)
        relinker = Relinker(writer, self.roots.snapshot)
        self.checks = Availability(told, self.roots, writer, 30.0, stop)
        self.scheduler = Scheduler(
            roots=self.roots,
            jobs=self.jobs,
            writer=writer,
            checks=self.checks,
            relinker=relinker,
            mode_of=self.watcher.mode_of,
            after_sweep=lambda: None,
            config=SweepConfig(),
            stop=stop,
        )
        self.api = Api(
            writer=writer,
            roots=self.roots,
            jobs=self.jobs,
            sweeps=self.scheduler,
            checks=self.checks,
            syncs=Syncer(
                roots=self.roots,
                jobs=self.jobs,
                sweeps=self.scheduler,
                checks=self.checks,
                cookies=self.watcher,
                started=self.started,
            ),
            status=Health(
                roots=self.roots,
                jobs=self.jobs,
                writer=writer,
                watching=self.watcher,
                catching_up=self.scheduler,
                hasher=Hasher(writer, self.roots.snapshot, stop=stop),
                relinker=relinker,
            ),
        )

    def call(self, method: str, params: dict[str, Any] | None = None, peer: Peer = USER) -> Any:
        return self.api.methods[method](params or {}, peer)

    def refused(self, method: str, params: dict[str, Any], peer: Peer = USER) -> tuple[int, str]:
        with pytest.raises(RpcError) as caught:
            self.call(method, params, peer)
        return caught.value.code, caught.value.message


@pytest.fixture
def parts(harness: Harness, tmp_path: Path) -> Iterator[Parts]:
    make_files(harness.root_dir, 3)
    harness.sweep()
    p = Parts(harness, tmp_path)
    yield p
    p.api.close_reader()


def path_of(harness: Harness, rel: str) -> str:
    return str(harness.root_dir / rel)


def test_lookup_finds_a_file_by_its_path_and_nothing_outside_the_roots(
    parts: Parts, harness: Harness, tmp_path: Path
) -> None:
    """lookup answers the record at a path, None outside every root and for a root itself."""
    row = harness.at(harness.root_dir / "d0000" / "f00001.txt")
    assert row is not None
    record = parts.call("lookup", {"path": path_of(harness, "d0000/../d0000/f00001.txt")})
    assert (record["id"], record["path"], record["state"]) == (
        row.id,
        path_of(harness, "d0000/f00001.txt"),
        "present",
    )
    assert record["root"] == str(harness.root_dir) and record["annotations"] == {}
    assert parts.call("lookup", {"path": str(tmp_path / "elsewhere.txt")}) is None
    assert parts.call("lookup", {"path": str(harness.root_dir)}) is None
    assert parts.refused("lookup", {"path": "d0000/f00001.txt"}) == (
        INVALID_PARAMS,
        "path must be absolute",
    )


def test_lookup_with_verify_records_what_is_on_disk_now(parts: Parts, harness: Harness) -> None:
    """verify: a file deleted since the sweep is answered missing; an offline root is refused."""
    gone = harness.root_dir / "d0000" / "f00002.txt"
    gone.unlink()
    before = parts.call("lookup", {"path": str(gone)})
    assert before["state"] == "present"
    after = parts.call("lookup", {"path": str(gone), "verify": True})
    assert (after["id"], after["state"]) == (before["id"], "missing")
    code, message = parts.refused(
        "lookup", {"path": str(parts.away.path.decode() + "/x"), "verify": True}
    )
    assert code == UNAVAILABLE and message.endswith("is offline: marker .here is missing")


def test_scan_queues_one_full_sweep_per_root_and_shares_a_queued_one(parts: Parts) -> None:
    """scan of every root queues a full sweep each; a second scan of a root shares its queued job."""
    answer = parts.call("scan")
    assert [(j["kind"], j["root"], j["state"]) for j in answer["jobs"]] == [
        ("full", root.display, "queued") for root in parts.roots
    ]
    again = parts.call("scan", {"root": parts.roots.snapshot()[1].display})
    assert again["job"]["id"] == answer["jobs"][0]["id"]
    assert [j["id"] for j in parts.call("jobs")] == [j["id"] for j in answer["jobs"]]


def test_scan_of_an_offline_or_unknown_root_is_refused(parts: Parts, tmp_path: Path) -> None:
    code, message = parts.refused("scan", {"root": parts.away.display})
    assert code == UNAVAILABLE and "is offline: marker .here is missing" in message
    assert parts.refused("scan", {"root": str(tmp_path / "nowhere")})[0] == NOT_FOUND
    assert parts.jobs.all() == []


def test_annotate_sets_and_removes_a_key(parts: Parts, harness: Harness) -> None:
    row = harness.files()[0]
    record = parts.call("annotate", {"id": row.id, "key": "rating", "value": "5"})
    assert record["annotations"] == {"rating": "5"}
    assert catalog.get_annotations(harness.reader, row.id) == {"rating": "5"}
    record = parts.call("annotate", {"id": row.id, "key": "rating", "value": None})
    assert record["annotations"] == {}
    assert parts.refused("annotate", {"id": row.id, "key": "rating"})[0] == INVALID_PARAMS
    assert parts.refused("annotate", {"id": 10**9, "key": "k", "value": "v"}) == (
        NOT_FOUND,
        f"no file with id {10**9}",
    )


def test_purge_is_for_admins_and_names_what_it_refused(parts: Parts, harness: Harness) -> None:
    """A purge purges missing files only, logs each with its path, and says why it refused others."""
    present, missing = harness.files()[:2]
    os.unlink(harness.root_dir / os.fsdecode(missing.path))
    harness.sweep()
    assert parts.refused("purge", {"ids": [missing.id]}) == (
        PERMISSION_DENIED,
        "purge is for root and members of admin_group",
    )
    with logged() as events:
        answer = parts.call("purge", {"ids": [missing.id, present.id, 10**9]}, ADMIN)
    assert answer == {
        "purged": 1,
        "refused": [
            {"id": present.id, "reason": "file is present; only missing files are purged"},
            {"id": 10**9, "reason": "no such file"},
        ],
    }
    [event] = [e for e in events if e["event"] == "file.purge"]
    assert event["id"] == missing.id and event["by_uid"] == 0
    assert event["path"] == harness.root.path + b"/" + missing.path
    assert catalog.get_file(harness.reader, missing.id) is None


def test_sync_that_cannot_finish_in_time_is_unavailable(parts: Parts) -> None:
    """Before start-up has queued its sweeps, a sync waits for it, and says so when time runs out."""
    assert parts.refused("sync", {"timeout_s": 0.05}) == (
        UNAVAILABLE,
        "not in sync within 0.05 s",
    )
    assert parts.refused("sync", {"timeout_s": 0}) == (INVALID_PARAMS, "timeout_s must be positive")


def test_sync_of_a_polled_root_is_a_quick_sweep(parts: Parts, harness: Harness) -> None:
    """A root that is not watched is synced by a quick sweep; the offline one is left alone."""
    parts.started.set()
    answered: list[Any] = []
    caller = threading.Thread(target=lambda: answered.append(parts.call("sync")), daemon=True)
    caller.start()
    parts.scheduler.start()
    caller.join(60)
    parts.scheduler.halt.set()
    parts.scheduler.wake()
    assert answered == [{"seq": catalog.last_seq(harness.reader)}]
    assert [(j.kind, j.root, j.state) for j in parts.jobs.all()] == [
        ("quick", harness.root.display, "done")
    ]


def test_status_joins_the_catalog_counts_and_the_parts_vital_signs(
    parts: Parts, harness: Harness
) -> None:
    for root in parts.roots:
        parts.checks.refresh(root, harness.reader)
    status = parts.call("status")
    assert [(r["path"], r["state"], r["mode"], r["backend"]) for r in status["roots"]] == [
        (harness.root.display, "online", "poll", "poll"),
        (parts.away.display, "offline", "poll", "poll"),
    ]
    assert status["roots"][0]["files"] == {"present": 3, "missing": 0, "offline": 0}
    assert status["totals"] == {"present": 3, "missing": 0, "offline": 0}
    assert status["hashing"]["pending"] == 3 and status["warnings"] == []
    assert status["seq"] == catalog.last_seq(harness.reader)


def test_accept_root_is_for_admins(parts: Parts) -> None:
    assert parts.refused("accept_root", {"root": parts.away.display}) == (
        PERMISSION_DENIED,
        "accept_root is for root and members of admin_group",
    )
