"""A file that comes back gets its old id: by inode, by content, never by mistake."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden import catalog
from filewarden.testing import Live
from tests.conftest import make_files, wait_for
from tests.scenarios.conftest import live_daemon

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")


def hashed(live: Live, path: Path) -> str:
    """Wait (poll with a deadline) until the background hasher has hashed ``path``; its hash."""
    rec = wait_for(
        lambda: (r := live.lookup(path)) is not None and r["hash"] is not None and r, timeout=60
    )
    return str(rec["hash"])


def test_moves_while_stopped_relink_by_inode_without_hashing(tmp_path: Path) -> None:
    """1,000 files renamed and moved to other directories while the daemon is down keep their ids and annotations, with no hashing."""

    def fill(roots: list[Path]) -> None:
        make_files(roots[0] / "before", 1000, per_dir=100)

    no_hashing = {"hash": {"enabled": False}}
    with live_daemon(tmp_path, "watchdog", roots=1, sections=no_hashing, before_start=fill) as live:
        ids = {Path(f["path"]): f["id"] for f in live.files("present")}
        annotated = set(list(ids.values())[::10])
        for file_id in annotated:
            live.call("annotate", {"id": file_id, "key": "rating", "value": str(file_id % 5)})
    # Stopped: rename every file and move it to another directory.
    moved: dict[Path, int] = {}
    for n, (path, file_id) in enumerate(sorted(ids.items())):
        dest = tmp_path / "root1" / "after" / f"dir{n % 7}" / f"renamed-{n}.dat"
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
        moved[dest] = file_id
    with live_daemon(tmp_path, "watchdog", roots=1, sections=no_hashing) as live:
        live.sync()
        now = {Path(f["path"]): f for f in live.files("present")}
        assert {p: f["id"] for p, f in now.items()} == moved
        for f in now.values():
            expected = {"rating": str(f["id"] % 5)} if f["id"] in annotated else {}
            assert f["annotations"] == expected
        assert live.files("missing") == []
        hashing = live.call("status")["hashing"]
        assert hashing["hashed_to_relink"] == 0 and hashing["relinked_by_hash"] == 0
        sample = live.call("file", {"id": next(iter(moved.values()))})["history"]
        assert sample[-1]["kind"] == "move" and sample[-1]["by"] == "inode"


@pytest.fixture
def two_filesystems(tmp_path: Path) -> Iterator[Path]:
    """root1 and root2 on two different tmpfs mounts (different devices)."""
    mounted = []
    try:
        for name in ("root1", "root2"):
            p = tmp_path / name
            p.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(p)], check=True)
            mounted.append(p)
        assert os.stat(tmp_path / "root1").st_dev != os.stat(tmp_path / "root2").st_dev
        yield tmp_path
    finally:
        for p in mounted:
            subprocess.run(["umount", "-l", str(p)], check=False)


@needs_root
def test_copy_to_other_filesystem_then_delete_relinks_by_hash(two_filesystems: Path) -> None:
    """A file copied to another root on another filesystem and deleted from the first keeps its id and annotations (by hash)."""
    with live_daemon(two_filesystems, "watchdog") as live:
        src = live.roots[0] / "IMG_0001.jpg"
        src.write_bytes(os.urandom(200_000))
        live.sync()
        file_id = live.id_of(src)
        live.call("annotate", {"id": file_id, "key": "album", "value": "Holidays"})
        digest = hashed(live, src)
        dst = live.roots[1] / "IMG_0001.jpg"
        shutil.copyfile(src, dst)  # what mv does between filesystems: copy...
        src.unlink()  # ...then delete
        live.sync()
        rec = live.lookup(dst)
        assert rec is not None and rec["id"] == file_id and rec["hash"] == digest
        assert rec["annotations"] == {"album": "Holidays"} and rec["state"] == "present"
        assert live.lookup(src) is None
        history = live.call("file", {"id": file_id})["history"]
        assert history[-1]["kind"] == "relink" and history[-1]["by"] == "hash"
        assert live.call("status")["totals"] == {"present": 1, "missing": 0, "offline": 0}
        live.assert_matches_disk()


def test_identical_file_appearing_a_day_later_relinks(tmp_path: Path) -> None:
    """A deleted file whose byte-identical copy appears elsewhere a day of catalog time later gets its id back."""
    content = os.urandom(50_000)
    with live_daemon(tmp_path, "watchdog") as live:
        p = live.roots[0] / "song.flac"
        p.write_bytes(content)
        live.sync()
        file_id = live.id_of(p)
        live.call("annotate", {"id": file_id, "key": "plays", "value": "17"})
        hashed(live, p)
        p.unlink()
        live.sync()
        assert live.call("file", {"id": file_id})["state"] == "missing"
    # A day passes in the catalog.
    conn = catalog.connect(tmp_path / "state" / "catalog.db")
    with conn:
        conn.execute(
            "UPDATE files SET missing_since = missing_since - 86400, last_seen = last_seen - 86400"
            " WHERE id = ?",
            (file_id,),
        )
    conn.close()
    with live_daemon(tmp_path, "watchdog") as live:
        back = live.roots[1] / "restored" / "song (1).flac"
        back.parent.mkdir()
        back.write_bytes(content)
        live.sync()
        rec = live.lookup(back)
        assert rec is not None and rec["id"] == file_id and rec["annotations"] == {"plays": "17"}
        assert live.call("file", {"id": file_id})["history"][-1]["by"] == "hash"


def test_two_identical_copies_known_together_are_two_files(tmp_path: Path) -> None:
    """Two identical copies indexed together are two ids; deleting one leaves the other alone."""
    content = os.urandom(30_000)

    def fill(roots: list[Path]) -> None:
        (roots[0] / "a.jpg").write_bytes(content)
        (roots[0] / "copy of a.jpg").write_bytes(content)

    with live_daemon(tmp_path, "watchdog", before_start=fill) as live:
        a, b = live.roots[0] / "a.jpg", live.roots[0] / "copy of a.jpg"
        live.sync()
        ida, idb = live.id_of(a), live.id_of(b)
        assert ida != idb
        assert hashed(live, a) == hashed(live, b)
        a.unlink()
        live.sync()
        assert live.call("file", {"id": ida})["state"] == "missing"
        rec = live.lookup(b)
        assert rec is not None and rec["id"] == idb and rec["state"] == "present"
        # A third copy appearing now is the missing one back (rule 3), not the present one.
        c = live.roots[0] / "a again.jpg"
        c.write_bytes(content)
        live.sync()
        wait_for(lambda: live.lookup(c)["id"] == ida)  # type: ignore[index]
        assert live.id_of(b) == idb


def test_renamed_and_edited_while_stopped_is_a_new_file(tmp_path: Path) -> None:
    """Renamed and edited while the daemon was down (same inode, new size): a new file, the old one missing (the documented limit)."""
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        p = live.roots[0] / "notes.txt"
        p.write_text("v1")
        live.sync()
        old = live.id_of(p)
    q = tmp_path / "root1" / "notes-v2.txt"
    p.rename(q)
    with open(q, "a") as f:
        f.write(" and v2")
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        live.sync()
        rec = live.lookup(q)
        assert rec is not None and rec["id"] != old
        gone = live.call("file", {"id": old})
        assert gone["state"] == "missing" and gone["missing_reason"] == "not_found"
