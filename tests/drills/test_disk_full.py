"""Disk-full drill: the catalog's filesystem fills up while files keep arriving, then space comes back.

The daemon must say so (``catalog.error``, a warning in ``status``), keep
answering reads, leave a sound database, and catch up once there is room.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filewarden.protocol import RpcError
from filewarden.testing import Live
from tests.conftest import make_files, wait_for
from tests.drills._support import integrity, report
from tests.scenarios.conftest import live_view, scenario_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True
    )


def degraded(status: dict[str, Any]) -> dict[str, Any] | None:
    """The status if it carries a warning anywhere, else None."""
    if status["warnings"] or any(r["warnings"] for r in status["roots"]):
        return status
    return None


def matches(lv: Live) -> bool:
    """Whether the catalog equals the disk now."""
    try:
        lv.assert_matches_disk()
    except AssertionError:
        return False
    return True


def disk_full_drill(
    tmp: Path,
    *,
    size: str = "2m",
    batch: int = 1000,
    max_batches: int = 40,
    name_len: int = 200,
    scan_while_full: bool = False,
    catch_up_s: float = 30.0,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the drill; returns its figures. Raises AssertionError on a broken promise."""
    t0 = time.monotonic()
    root = tmp / "root1"
    first = make_files(root / "before", 50)
    state = tmp / "state"
    mount_tmpfs(state, size)
    figures: dict[str, Any] = {"tmpfs": size}
    try:
        proc = scenario_config(tmp, [root], state_dir=state).start()
        try:
            proc.wait_event("daemon.ready", timeout=60)
            lv = live_view(proc, [root], "watchdog")
            lv.sync()
            known = lv.id_of(first[7])
            created = 0
            for b in range(max_batches):
                d = root / f"burst{b:03d}"
                d.mkdir()
                for i in range(batch):
                    (d / (f"{i:06d}-" + "n" * name_len)).write_bytes(b"%d %d" % (b, i))
                created += batch
                deadline = time.monotonic() + 5
                while not proc.seen("catalog.error") and time.monotonic() < deadline:
                    time.sleep(0.05)
                if proc.seen("catalog.error"):
                    break
            figures["files_created_until_full"] = created
            errors = proc.seen("catalog.error")
            assert errors, f"no catalog.error after {created} files on a {size} tmpfs"
            assert errors[0]["level"] == "error"
            figures["first_error"] = errors[0]["error"]
            st = os.statvfs(state)
            figures["tmpfs_free_kib"] = st.f_bavail * st.f_frsize // 1024
            # Degraded, and says so (at the top, or on the root whose sweep failed).
            status = wait_for(lambda: degraded(lv.call("status")), timeout=10)
            figures["warnings"] = status["warnings"]
            figures["root_warnings"] = status["roots"][0]["warnings"]
            # Reads are still answered.
            rec = lv.lookup(first[7])
            assert rec is not None and rec["id"] == known and rec["state"] == "present"
            figures["integrity_while_full"] = integrity(state / "catalog.db")
            assert figures["integrity_while_full"] == "ok"
            assert proc.proc.poll() is None, "the daemon died of a full disk"
            if scan_while_full:
                # Let every change seen so far meet the full disk first.
                try:
                    lv.call("sync", {"timeout_s": 5})
                    figures["sync_while_full"] = "answered"
                except RpcError as exc:
                    figures["sync_while_full"] = f"error {exc.code}"
                # A full sweep now either cannot commit (it aborts, leaving nothing half
                # done), or had nothing left to write: the daemon's own catch-up after the
                # failed writes may have fitted in the log SQLite reuses. Then the catalog
                # is the disk already.
                job = lv.call("scan", {"wait": True})["job"]
                figures["scan_while_full"] = f"{job['state']}: {job['error']}"
                if job["state"] == "done":
                    assert matches(lv), (job, len(lv.files("present")), created + 50)
            # Room again.
            subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)
            t_room = time.monotonic()
            lv.sync()
            if matches(lv):
                figures["caught_up_by"] = "sync"
            else:
                present = len(lv.files("present"))
                figures["after_sync"] = f"{present} present of {created + 50} on disk"
                # Left alone, the daemon should find what it could not write by itself.
                deadline = time.monotonic() + catch_up_s
                while time.monotonic() < deadline and not matches(lv):
                    time.sleep(0.5)
                    lv.sync()
                if matches(lv):
                    figures["caught_up_by"] = "itself"
                else:
                    lv.call("scan", {"wait": True})
                    figures["caught_up_by"] = "scan"
            lv.assert_matches_disk()
            figures["caught_up_s"] = round(time.monotonic() - t_room, 1)
            # Once caught up, the degraded warning goes (polled: it clears after the sweep).
            deadline = time.monotonic() + catch_up_s
            while time.monotonic() < deadline and lv.call("status")["warnings"]:
                time.sleep(0.2)
            figures["warnings_after"] = lv.call("status")["warnings"]
            figures["catalog_errors"] = len(proc.seen("catalog.error"))
            lv.client.close()
        finally:
            code = proc.stop(timeout=30)
        assert code == 0, proc.tail()
        figures["integrity"] = integrity(state / "catalog.db")
        assert figures["integrity"] == "ok"
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    figures["seconds"] = round(time.monotonic() - t0, 1)
    say(report("disk-full", figures))
    return figures


def test_disk_full_is_reported_survived_and_caught_up(tmp_path: Path) -> None:
    """A full catalog disk is logged and warned, reads go on, the database stays sound, and the daemon catches up by itself once there is room."""
    figures = disk_full_drill(tmp_path)
    print(report("disk-full", figures))
    assert figures["caught_up_by"] in ("sync", "itself"), figures
    assert figures["warnings_after"] == [], figures


def test_writes_and_sweep_lost_to_a_full_disk_are_caught_up_without_a_scan(tmp_path: Path) -> None:
    """After a full disk made writes, a sync and a scan fail, the daemon catches up by itself once there is room."""
    figures = disk_full_drill(tmp_path, scan_while_full=True)
    print(report("disk-full", figures))
    assert figures["caught_up_by"] in ("sync", "itself"), figures
    assert figures["warnings_after"] == [], figures
