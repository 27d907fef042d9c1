"""Hostile names and trees under a live daemon.

Names that are not UTF-8, hold newlines or fill 255 bytes; a 4,000-byte path;
symlink loops and symlinks out of the root; FIFOs, sockets and a device node;
a directory the daemon may not read; files that vanish between a listing and
a stat. The catalog must hold exactly the regular files, at their paths, and
nothing else, and the daemon must go on answering.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filewarden.testing import regular_files
from tests.drills._support import CAPPED, report
from tests.scenarios.conftest import EXCLUDED, live_view, scenario_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes a device node, drops capabilities")


def build(root: Path, outside: Path, deep_path: int) -> dict[str, bytes]:
    """The hostile tree; returns some of its paths by role."""
    r = os.fsencode(root)
    named = {
        "latin1": r + b"/caf\xe9.jpg",
        "bad_utf8": r + b"/\xff\xfe\x80 raw.bin",
        "newline": r + b"/line\nbreak.txt",
        "only_newline": r + b"/\n",
        "controls": r + b"/tab\there\rcr\x1besc.txt",
        "name_255": r + b"/" + b"x" * 251 + b".txt",
        "utf8_255": r + b"/" + "é".encode() * 125 + b"-.txt",  # 255 bytes
    }
    assert len(os.path.basename(named["name_255"])) == 255
    assert len(os.path.basename(named["utf8_255"])) == 255
    for p in named.values():
        with open(p, "wb") as f:
            f.write(b"hostile " + p)
    # A path of about ``deep_path`` bytes: directories of 200-byte names.
    deep = r + b"/deep"
    while len(deep) + 201 + 20 < deep_path:
        deep += b"/" + b"d" * 200
    os.makedirs(deep)
    named["deep"] = deep + b"/" + b"f" * (deep_path - len(deep) - 1)
    with open(named["deep"], "wb") as f:
        f.write(b"deep")
    # Symlinks: loops, and ways out of the root. None is ever followed.
    (outside / "secret.txt").write_text("outside the root")
    (outside / "tree").mkdir(exist_ok=True)
    (outside / "tree" / "x.txt").write_text("outside the root")
    links = root / "links"
    links.mkdir()
    os.symlink("loop-b", links / "loop-a")
    os.symlink("loop-a", links / "loop-b")
    os.symlink("self", links / "self")
    os.symlink(".", links / "dot")
    os.symlink("..", links / "up")
    os.symlink(outside / "secret.txt", links / "out-file")
    os.symlink(outside / "tree", links / "out-dir")
    os.symlink("/etc", links / "etc")
    os.symlink("/dev/zero", links / "zero")
    # Special files: a FIFO (a blocking open would hang whoever opens it),
    # a listening socket, a character device (/dev/null's numbers).
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo")
    os.mknod(special / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(special / "block", 0o600 | stat.S_IFBLK, os.makedev(7, 250))
    return named


def hostile_drill(
    tmp: Path,
    *,
    churn_seconds: float = 3.0,
    locked_files: int = 20,
    deep_path: int = 4000,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    t0 = time.monotonic()
    root = tmp / "root1"
    root.mkdir()
    outside = tmp / "outside"
    outside.mkdir()
    named = build(root, outside, deep_path)
    locked = root / "locked"
    locked.mkdir()
    for i in range(locked_files):
        (locked / f"kept{i:03d}.txt").write_text(f"kept {i}")
    # Without the capabilities that override file permissions, a directory with
    # mode 000 gives the daemon a real EACCES, as it would the service's own user.
    proc = scenario_config(tmp, [root]).start(prefix=CAPPED if os.geteuid() == 0 else ())
    figures: dict[str, Any] = {}
    listener = socket.socket(socket.AF_UNIX)
    churn_stop = threading.Event()
    try:
        proc.wait_event("daemon.ready", timeout=60)
        lv = live_view(proc, [root], "watchdog")
        lv.sync()
        # More of the same while watched: a socket, a FIFO, names made live.
        listener.bind(str(root / "special" / "sock"))
        listener.listen()
        os.mkfifo(root / "special" / "fifo-live")
        live_named = os.fsencode(root) + b"/live\n\xe9\xff.txt"
        with open(live_named, "wb") as f:
            f.write(b"made while watched")
        os.symlink(root / "links", root / "links" / "live-loop")
        lv.sync()
        for role, p in {**named, "live": live_named}.items():
            rec = lv.call("lookup", {"path_b64": base64.b64encode(p).decode()})
            assert rec is not None and rec["state"] == "present", (role, rec)
            assert (
                base64.b64decode(rec.get("path_b64") or base64.b64encode(rec["path"].encode())) == p
            )
        figures["hostile_names"] = len(named) + 1
        figures["deep_path_bytes"] = len(named["deep"])
        # The daemon may no longer read this directory: its files stay as they were.
        locked.chmod(0)
        # Files vanishing between readdir and stat: a full scan amid churn.
        churn = root / "churn"
        churn.mkdir()
        churned = [0]

        def churner() -> None:
            i = 0
            while not churn_stop.is_set():
                p = churn / f"c{i % 50:02d}.tmp"
                try:
                    p.write_bytes(b"c")
                    if i % 3:
                        p.unlink()
                except FileNotFoundError:
                    pass
                i += 1
            churned[0] = i

        worker = threading.Thread(target=churner, daemon=True)
        worker.start()
        scans = 0
        deadline = time.monotonic() + churn_seconds
        while time.monotonic() < deadline or scans == 0:
            job = lv.call("scan", {"wait": True})["job"]
            assert job["state"] == "done", job
            scans += 1
        churn_stop.set()
        worker.join(30)
        figures["scans_amid_churn"] = scans
        figures["churn_ops"] = churned[0]
        unreadable = proc.wait_event("sweep.unreadable", timeout=30)
        assert unreadable["path"].endswith("locked"), unreadable
        lv.sync()
        lv.call("scan", {"wait": True})
        # Exactly the regular files (those in the locked directory kept as they were).
        disk = regular_files([root], [EXCLUDED])
        present = {os.fsencode(f["path"]): f for f in lv.files("present")}
        assert len(present) == len(lv.files("present"))
        assert {p: f["size"] for p, f in present.items()} == {p: s.st_size for p, s in disk.items()}
        everything = lv.files()
        ids = [f["id"] for f in everything]
        assert len(ids) == len(set(ids))
        for rec in everything:
            p = os.fsencode(rec["path"])
            if "path_b64" in rec:
                p = base64.b64decode(rec["path_b64"])
            assert p.startswith(os.fsencode(root) + b"/"), rec
            try:
                mode = os.lstat(p).st_mode
            except FileNotFoundError:
                assert rec["state"] == "missing", rec
                continue
            assert stat.S_ISREG(mode), (rec, oct(mode))
        for link in (root / "links").iterdir():
            assert lv.lookup(link) is None, link
        for entry in (root / "special").iterdir():
            assert lv.lookup(entry) is None, entry
        assert lv.lookup(root / "links" / "out-dir" / "x.txt") is None
        assert sum(1 for p in present if p.startswith(os.fsencode(locked) + b"/")) == locked_files
        figures["catalogued_present"] = len(present)
        figures["missing_after_churn"] = len(lv.files("missing"))
        status = lv.call("status")
        assert status["pid"] == proc.proc.pid
        figures["sweep_errors_logged"] = len(proc.seen("sweep.error"))
        figures["socket_errors"] = len(proc.seen("socket.error"))
        assert not proc.seen("socket.error")
        lv.client.close()
    finally:
        churn_stop.set()
        listener.close()
        locked.chmod(0o755)
        code = proc.stop(timeout=30)
    assert code == 0, proc.tail()
    figures["seconds"] = round(time.monotonic() - t0, 1)
    say(report("hostile", figures))
    return figures


def test_hostile_names_and_trees(tmp_path: Path) -> None:
    """Hostile names, deep paths, links, special files, EACCES and vanishing files: the catalog holds exactly the regular files."""
    print(report("hostile", hostile_drill(tmp_path)))
