"""A property test of the identity rules: whatever everyday tools do, no id lands on the wrong file.

A hypothesis state machine creates, renames, deletes, copies, edits in
place, touches, archives and restores files (restoring hands out freed
inode numbers again on ext4, with the archived mtimes), and stops and
starts the daemon, on a loop-mounted ext4. All files have one size and
most one mtime, so that size, mtime and a reused inode number say nothing.

The model follows each physical file (a rename keeps it, an edit changes
its content, a copy or a restore is another file) and what the rules allow:
an annotation set on a file may later sit on a file at a path that file
was at (same path) or with content it had (same content), nowhere else,
and follows the file on which the rules may have put it through its later
renames and edits (a copy that took a deleted original's id, a file
renamed over an annotated one: the path keeps its id). A
present file's hash, when set, is its content's hash. The catalog equals
the disk after every `sync`.

CI runs 500 examples of up to 8 steps; ``FILEWARDEN_PROPERTY_EXAMPLES`` and
``FILEWARDEN_PROPERTY_STEPS`` make it larger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from filewarden import catalog
from filewarden import config as config_mod
from filewarden.client import Client
from filewarden.daemon import Daemon
from tests.conftest import wait_for

SIZE = 512  # every file: equal sizes make the inode and content rules work hardest
T0 = 1_700_000_000  # the mtime nearly every file has
NAMES = ["a.jpg", "b.jpg", "c.jpg", "sub/a.jpg", "sub/d.jpg", "new/e.jpg"]
EXAMPLES = int(os.environ.get("FILEWARDEN_PROPERTY_EXAMPLES", "500"))
STEPS = int(os.environ.get("FILEWARDEN_PROPERTY_STEPS", "8"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a loop ext4 image")


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ext4 (freed inode numbers come straight back), loop-mounted."""
    base = tmp_path_factory.mktemp("ext4")
    image, mount = base / "fs.img", base / "fs"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@dataclass
class Lineage:
    """Where one annotated file has been and what it has held: what the rules allow its id."""

    paths: set[str] = field(default_factory=set)
    contents: set[bytes] = field(default_factory=set)


class Places:
    """Where the examples live: a new directory on the ext4 each time, a state dir off it."""

    ext4: Path
    state: Path
    count = 0


class IdentityMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        Places.count += 1
        n = Places.count
        self.root = Places.ext4 / f"ex{n}" / "root"
        self.root.mkdir(parents=True)
        self.state = Places.state / f"ex{n}"
        self.config = config_mod.parse(
            {
                "daemon": {"state_dir": str(self.state), "socket": str(self.state / "fw.sock")},
                "sweep": {"interval": "never", "quick_interval": "never"},
                "watch": {"backend": "watchdog"},
                "root": [{"path": str(self.root)}],
            }
        )
        self.daemon: Daemon | None = None
        self.client: Client | None = None
        self.serial = 0
        # Path on disk → the labels the rules let the file there carry: its own, and,
        # after a rename over an annotated file, that file's (the path keeps its id).
        self.holder: dict[str, set[str]] = {}
        self.lineage: dict[str, Lineage] = {}
        self.archive: dict[str, tuple[bytes, int]] | None = None

    # -- the daemon ------------------------------------------------------------------

    def _start(self) -> None:
        self.daemon = Daemon(self.config)
        self.daemon.start()
        self.client = Client(self.config.daemon.socket, timeout=60)

    def _stop(self) -> None:
        assert self.daemon is not None and self.client is not None
        self.client.close()
        self.daemon.stop()
        self.daemon = self.client = None

    def _call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self.client is not None
        return self.client.call(method, params)

    def _sync(self) -> None:
        assert self._call("sync", {"timeout_s": 60}) is not None

    def teardown(self) -> None:
        if self.daemon is not None:
            self._stop()
        shutil.rmtree(self.root.parent, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)

    # -- files -------------------------------------------------------------------------

    def _content(self) -> bytes:
        self.serial += 1
        stamp = f"{self.root.parent.name}/{self.serial}:".encode()
        return (stamp * (SIZE // len(stamp) + 1))[:SIZE]

    def _write(self, rel: str, content: bytes, mtime: int = T0) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))

    def _on_disk(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    @initialize()
    def begin(self) -> None:
        self._start()

    @rule(rel=st.sampled_from(NAMES))
    def create(self, rel: str) -> None:
        if self._on_disk(rel):
            return
        content = self._content()
        self._write(rel, content)
        self.holder[rel] = set()
        if self.daemon is not None:
            self._sync()
            rec = self._call("lookup", {"path": str(self.root / rel)})
            assert rec is not None and rec["state"] == "present", rec
            label = f"L{self.serial}"
            self._call("annotate", {"id": rec["id"], "key": "label", "value": label})
            self.lineage[label] = Lineage({rel}, {content})
            self.holder[rel] = {label}

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src: str, dst: str) -> None:
        if src == dst or not self._on_disk(src):
            return
        (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
        content = (self.root / src).read_bytes()
        labels = self._may_carry(src) | (self._may_carry(dst) if self._on_disk(dst) else set())
        os.rename(self.root / src, self.root / dst)
        self.holder.pop(src)
        self.holder[dst] = labels
        for label in labels:
            self.lineage[label].paths.add(dst)
            self.lineage[label].contents.add(content)

    def _may_carry(self, rel: str) -> set[str]:
        """The labels the rules may have put on the file at ``rel`` by now.

        Its own; any label whose file was at this path (same path); any whose
        file had this content (same content: a copy that took a deleted
        original's id). A rename carries them all along.
        """
        content = (self.root / rel).read_bytes()
        return self.holder[rel] | {
            label
            for label, seen in self.lineage.items()
            if rel in seen.paths or content in seen.contents
        }

    @rule(rel=st.sampled_from(NAMES))
    def delete(self, rel: str) -> None:
        if self._on_disk(rel):
            os.unlink(self.root / rel)
            self.holder.pop(rel)

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def copy(self, src: str, dst: str) -> None:
        """cp -p: another file, with the same content and mtime."""
        if src == dst or not self._on_disk(src) or self._on_disk(dst):
            return
        (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.root / src, self.root / dst)
        self.holder[dst] = set()

    @rule(rel=st.sampled_from(NAMES))
    def edit_in_place(self, rel: str) -> None:
        """Rewrite the file's bytes through the same inode (same size), mtime put back as tools do."""
        if not self._on_disk(rel):
            return
        labels = self._may_carry(rel)
        content = self._content()
        with open(self.root / rel, "r+b") as f:
            f.write(content)
        os.utime(self.root / rel, ns=(T0 * 10**9, T0 * 10**9))
        for label in labels:
            self.lineage[label].contents.add(content)

    @rule(rel=st.sampled_from(NAMES))
    def touch(self, rel: str) -> None:
        if self._on_disk(rel):
            os.utime(self.root / rel, ns=((T0 + 3600) * 10**9, (T0 + 3600) * 10**9))

    @rule()
    def archive_all(self) -> None:
        """tar -c: remember every file's content and mtime."""
        self.archive = {
            rel: ((self.root / rel).read_bytes(), (self.root / rel).stat().st_mtime_ns // 10**9)
            for rel in self.holder
        }

    @precondition(lambda self: self.archive is not None)
    @rule()
    def restore_archive(self) -> None:
        """tar -x: the archived files that are gone come back as new files, old mtimes and all."""
        assert self.archive is not None
        for rel, (content, mtime) in sorted(self.archive.items()):
            if not self._on_disk(rel):
                self._write(rel, content, mtime)
                self.holder[rel] = set()

    @precondition(lambda self: self.daemon is not None)
    @rule()
    def stop(self) -> None:
        self._stop()

    @precondition(lambda self: self.daemon is None)
    @rule()
    def start(self) -> None:
        self._start()

    @precondition(lambda self: self.daemon is not None)
    @rule()
    def let_hashing_finish(self) -> None:
        """The background hasher and the content rule catch up (a deadline, not a sleep)."""
        assert self.daemon is not None
        self._sync()
        reader = catalog.connect(self.daemon.db_path, readonly=True)
        try:
            wait_for(lambda: catalog.count_unhashed(reader) == 0, timeout=30)
        finally:
            reader.close()
        self._sync()

    # -- what must hold ------------------------------------------------------------------

    @invariant()
    def no_id_on_the_wrong_file(self) -> None:
        if self.daemon is None:
            return
        self._sync()
        files: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self._call("list", {"after_id": after, "limit": 10000})
            files += page["files"]
            if page["next_after_id"] is None:
                break
            after = page["next_after_id"]
        present = {
            os.path.relpath(f["path"], self.root): f for f in files if f["state"] == "present"
        }
        assert sorted(present) == sorted(self.holder), "catalog = disk"
        seen_labels: set[str] = set()
        for rel, rec in present.items():
            content = (self.root / rel).read_bytes()
            if rec["hash"] is not None:
                assert rec["hash"] == xxhash.xxh3_128_hexdigest(content), (rel, rec)
            st_ = os.lstat(self.root / rel)
            assert (rec["size"], rec["mtime_ns"], rec["inode"]) == (
                st_.st_size,
                st_.st_mtime_ns,
                st_.st_ino,
            ), (rel, rec)
        for rec in files:
            label = rec["annotations"].get("label")
            if label is None:
                continue
            assert label not in seen_labels, f"{label} on two files"
            seen_labels.add(label)
            if rec["state"] != "present":
                continue
            rel = os.path.relpath(rec["path"], self.root)
            content = (self.root / rel).read_bytes()
            allowed = self.lineage[label]
            assert rel in allowed.paths or content in allowed.contents, (
                f"{label} (paths {sorted(allowed.paths)}) sits on {rel}, whose content it never had"
            )


@pytest.mark.timeout(max(600, EXAMPLES * STEPS // 4))
def test_no_id_ever_lands_on_the_wrong_file(ext4: Path, tmp_path: Path) -> None:
    """Create, rename, delete, copy, edit, touch, archive, restore, stop and start: the invariants hold throughout."""
    Places.ext4, Places.state = ext4, tmp_path
    started = time.monotonic()
    run_state_machine_as_test(
        IdentityMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        ),
    )
    print(f"{Places.count} examples in {time.monotonic() - started:.1f} s")
