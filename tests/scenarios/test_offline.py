"""An unplugged drive never makes a file missing: real mounts, a real daemon."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from filewarden.client import Client
from filewarden.testing import DaemonProcess, Live
from tests.conftest import make_files, wait_for
from tests.scenarios.conftest import live_daemon
from tests.scenarios.drives import Volume, make_volume

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts filesystems")


def root_state(live: Live, root: Path) -> dict[str, object]:
    return next(r for r in live.call("status")["roots"] if r["path"] == str(root))


def test_unmount_makes_files_offline_within_2s_and_remount_restores_ids(
    tmp_path: Path, drive: Volume
) -> None:
    """Unmounting a watched drive makes its files offline within 2 s, none missing; remounting brings the same ids back."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0] / "photos", 300, per_dir=50)

    with live_daemon(tmp_path, "watchdog", roots=1, before_start=fill) as live:
        ids = {f["path"]: f["id"] for f in live.files("present")}
        assert len(ids) == 300
        some = next(iter(ids.values()))
        live.call("annotate", {"id": some, "key": "rating", "value": "5"})
        drive.unmount(lazy=True)
        t0 = time.monotonic()
        wait_for(lambda: root_state(live, drive.mount_point)["state"] == "offline", timeout=2)
        assert time.monotonic() - t0 <= 2
        status = live.call("status")
        assert status["totals"] == {"present": 0, "missing": 0, "offline": 300}
        assert root_state(live, drive.mount_point)["reason"]
        event = live.proc.wait_event("root.offline")
        assert event["files"] == 300
        assert live.files("missing") == []
        offline = live.call("list", {"state": "offline"})["files"]
        assert {f["id"] for f in offline} <= set(ids.values())
        drive.mount()
        wait_for(lambda: live.call("status")["totals"]["present"] == 300, timeout=10)
        live.sync()
        assert {f["path"]: f["id"] for f in live.files("present")} == ids
        assert live.call("file", {"id": some})["annotations"] == {"rating": "5"}
        assert live.call("status")["totals"] == {"present": 300, "missing": 0, "offline": 0}
        # Watched again after the remount: a rename is followed live.
        old = next(p for p, i in ids.items() if i == some)
        os.rename(old, old + ".renamed")
        live.sync()
        assert live.id_of(Path(old + ".renamed")) == some


def test_empty_mount_point_at_start_with_require_mountpoint(tmp_path: Path, drive: Volume) -> None:
    """A daemon started while the drive is not mounted (require_mountpoint) keeps its files offline, none missing."""
    make_files(drive.mount_point / "music", 40)
    with live_daemon(
        tmp_path, "watchdog", roots=1, root_options={"require_mountpoint": True}
    ) as live:
        assert live.call("status")["totals"]["present"] == 40
    drive.unmount()
    proc = DaemonProcess(tmp_path, "--config", str(tmp_path / "config.toml"))
    try:
        event = proc.wait_event("root.offline")
        assert "mount point" in event["reason"]
        proc.wait_event("daemon.ready")
        with Client(tmp_path / "run" / "fw.sock") as c:
            c.call("sync")
            assert c.call("status")["totals"] == {"present": 0, "missing": 0, "offline": 40}
            drive.mount()
            wait_for(lambda: c.call("status")["totals"]["present"] == 40, timeout=10)
            c.call("sync")
            assert c.call("status")["totals"] == {"present": 40, "missing": 0, "offline": 0}
    finally:
        assert proc.stop() == 0


def test_marker_removed_makes_root_offline(tmp_path: Path) -> None:
    """A root whose marker file disappears goes offline; its files are offline, not missing."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0], 20)
        (roots[0] / ".library").write_text("")

    with live_daemon(
        tmp_path, "watchdog", roots=1, before_start=fill, root_options={"marker": ".library"}
    ) as live:
        assert live.call("status")["totals"]["present"] == 20  # the marker is not catalogued
        (live.roots[0] / ".library").unlink()
        wait_for(lambda: root_state(live, live.roots[0])["state"] == "offline", timeout=10)
        assert "marker" in str(root_state(live, live.roots[0])["reason"])
        assert live.call("status")["totals"] == {"present": 0, "missing": 0, "offline": 20}
        (live.roots[0] / ".library").write_text("")
        wait_for(lambda: root_state(live, live.roots[0])["state"] == "online", timeout=10)
        live.sync()
        assert live.call("status")["totals"] == {"present": 20, "missing": 0, "offline": 0}


def test_different_filesystem_at_same_path_is_not_the_root(tmp_path: Path, drive: Volume) -> None:
    """Another drive mounted where the library was is not the library: offline until an admin accepts it."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0] / "lib", 30)

    other = make_volume(tmp_path, "other", tmp_path / "root1")
    with live_daemon(tmp_path, "watchdog", roots=1, before_start=fill) as live:
        ids = {f["id"] for f in live.files("present")}
        drive.unmount(lazy=True)
        wait_for(lambda: root_state(live, drive.mount_point)["state"] == "offline", timeout=5)
        other.mount()
        try:
            (drive.mount_point / "stranger.txt").write_text("not the library")
            wait_for(
                lambda: (
                    "different filesystem" in str(root_state(live, drive.mount_point)["reason"])
                ),
                timeout=10,
            )
            live.sync()
            assert live.call("status")["totals"] == {"present": 0, "missing": 0, "offline": 30}
            assert live.lookup(drive.mount_point / "stranger.txt") is None
            result = live.call("accept_root", {"root": str(drive.mount_point)})
            assert result["state"] == "online"
            live.sync()
            wait_for(lambda: live.call("status")["totals"]["missing"] == 30, timeout=30)
            missing = live.files("missing")
            assert {f["id"] for f in missing} == ids and {f["missing_reason"] for f in missing} == {
                "not_found"
            }
            assert live.lookup(drive.mount_point / "stranger.txt") is not None
        finally:
            other.unmount(lazy=True)


def test_unmount_during_a_sweep_of_100000_files_commits_no_missing(tmp_path: Path) -> None:
    """A drive unplugged in the middle of a sweep of 100,000 files: the sweep aborts, nothing is marked missing."""
    vol = make_volume(tmp_path, "big", tmp_path / "root1", size_mb=256)
    vol.mount()
    try:
        make_files(vol.mount_point / "all", 100_000, per_dir=1000)
        with live_daemon(tmp_path, "poll", roots=1) as live:
            assert live.call("status")["totals"]["present"] == 100_000
            job = live.call("scan", {})["job"]
            wait_for(
                lambda: next(j for j in live.call("jobs") if j["id"] == job["id"])["done"] > 1000,
                timeout=60,
                interval=0.005,
            )
            vol.unmount(lazy=True)
            final = wait_for(
                lambda: (
                    (j := next(j for j in live.call("jobs") if j["id"] == job["id"]))["finished"]
                    and j
                ),
                timeout=60,
            )
            assert final["state"] == "aborted", final
            assert final["done"] < 100_000
            wait_for(lambda: root_state(live, vol.mount_point)["state"] == "offline", timeout=5)
            assert live.call("status")["totals"] == {"present": 0, "missing": 0, "offline": 100_000}
            assert [e for e in live.proc.events if e["event"] == "file.missing"] == []
    finally:
        while vol.mounted:
            vol.unmount(lazy=True)
