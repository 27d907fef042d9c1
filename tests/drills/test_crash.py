"""Crash drill: a storm of changes while the daemon is SIGKILLed at random moments and restarted.

After each restart that is given time to settle, and at the end, the catalog
must equal the disk; every annotation set along the way must still be on its
id; a file never edited since it was annotated must still be found at its
path under that id; and the catalog must pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filewarden import catalog
from filewarden.testing import regular_files
from filewarden.walk import SweepAborted
from tests.conftest import Harness, make_files
from tests.drills._support import integrity, report
from tests.scenarios.conftest import EXCLUDED, live_view, scenario_config

ORPHANS = (
    "files left present under a directory the catalog no longer lists: a listing recorded after "
    "its directory moved, or a sweep stopped between forgetting a vanished directory and marking "
    "its files missing"
)


class Orphans(AssertionError):
    """Present files at paths that do not exist, under directories the catalog no longer lists."""


def check_catalog(lv: Any, db: Path) -> None:
    """The catalog equals the disk; orphaned files (see ORPHANS) are named as such."""
    try:
        lv.assert_matches_disk()
    except AssertionError:
        disk = regular_files(lv.roots, [EXCLUDED])
        present = {os.fsencode(f["path"]): f for f in lv.files("present")}
        missing_from_catalog = [p for p in disk if p not in present]
        extra = [p for p in present if p not in disk]
        wrong_size = [p for p in disk if p in present and present[p]["size"] != disk[p].st_size]
        conn = catalog.connect(db, readonly=True)
        try:
            listed = {bytes(r[0]) for r in conn.execute("SELECT path FROM dirs")}
        finally:
            conn.close()
        root = os.fsencode(lv.roots[0]) + b"/"
        unlisted = [p for p in extra if os.path.dirname(p[len(root) :]) not in listed]
        if extra and not missing_from_catalog and not wrong_size and unlisted == extra:
            raise Orphans(f"{ORPHANS}: {len(extra)}, e.g. {extra[:3]}") from None
        raise


class Storm:
    """A seeded model of a tree, changed for real: creates, renames, directory moves, edits, deletes."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.files: dict[Path, int] = {}  # path -> token (one per file ever created)
        self.dirs: list[Path] = [root]
        self.edits: dict[int, int] = {}  # token -> edits so far
        self.deleted: list[Path] = []  # paths whose file was deleted (for re-creations)
        self.tokens = 0
        self.ops = 0
        self.lock = threading.Lock()

    def _new_name(self, prefix: str) -> str:
        self.tokens += 1
        return f"{prefix}{self.tokens:06d}"

    def create(self, path: Path | None = None) -> None:
        if path is None:
            path = self.rng.choice(self.dirs) / (self._new_name("f") + ".dat")
        else:
            self.tokens += 1
        token = self.tokens
        path.write_bytes(b"file %d\n" % token * self.rng.randrange(1, 50))
        self.files[path] = token

    def step(self) -> None:
        rng = self.rng
        op = rng.choices(
            ["create", "recreate", "mkdir", "rename", "dirmove", "edit", "delete"],
            [30, 4, 5, 20, 4, 15, 15],
        )[0]
        if op in ("rename", "edit", "delete") and not self.files:
            op = "create"
        if op == "create":
            self.create()
        elif op == "recreate":
            free = [p for p in self.deleted[-50:] if p not in self.files and p.parent.is_dir()]
            if free:
                self.create(rng.choice(free))
            else:
                self.create()
        elif op == "mkdir":
            d = rng.choice(self.dirs) / self._new_name("d")
            d.mkdir()
            self.dirs.append(d)
        elif op == "rename":
            src = rng.choice(list(self.files))
            dst = rng.choice(self.dirs) / (self._new_name("r") + ".dat")
            src.rename(dst)
            self.files[dst] = self.files.pop(src)
        elif op == "edit":
            path = rng.choice(list(self.files))
            token = self.files[path]
            self.edits[token] = self.edits.get(token, 0) + 1
            with open(path, "ab") as f:
                f.write(b"edit %d %d\n" % (token, self.edits[token]))
        elif op == "delete":
            path = rng.choice(list(self.files))
            path.unlink()
            del self.files[path]
            self.deleted.append(path)
        elif op == "dirmove":
            movable = self.dirs[1:]
            if not movable:
                return
            src = rng.choice(movable)
            targets = [d for d in self.dirs if d != src and not d.is_relative_to(src)]
            dst = rng.choice(targets) / self._new_name("m")
            src.rename(dst)
            self.dirs = [
                dst / d.relative_to(src) if d.is_relative_to(src) else d for d in self.dirs
            ]
            self.files = {
                (dst / p.relative_to(src) if p.is_relative_to(src) else p): t
                for p, t in self.files.items()
            }
            self.deleted = [
                dst / p.relative_to(src) if p.is_relative_to(src) else p for p in self.deleted
            ]
        self.ops += 1

    def run(self, count: int, stop: threading.Event, pace: float) -> None:
        """``count`` steps (or until ``stop``), spread out by random pauses of up to ``pace`` s."""
        for _ in range(count):
            if stop.is_set():
                return
            with self.lock:
                self.step()
            if pace:
                stop.wait(self.rng.uniform(0, pace))

    def path_of(self, token: int) -> Path | None:
        for p, t in self.files.items():
            if t == token:
                return p
        return None


def crash_drill(
    tmp: Path,
    *,
    kills: int = 20,
    seed: int = 1,
    initial: int = 200,
    ops: tuple[int, int] = (30, 200),
    down_ops: int = 30,
    max_delay: float = 1.2,
    pace: float = 0.004,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the drill; returns its figures. Raises AssertionError on the first broken promise."""
    t0 = time.monotonic()
    root = tmp / "root1"
    root.mkdir()
    (tmp / "outside").mkdir(exist_ok=True)
    storm = Storm(root, seed)
    rng = random.Random(seed + 1)
    for i in range(initial // 10):
        d = root / f"seed{i:03d}"
        d.mkdir()
        storm.dirs.append(d)
        for _ in range(10):
            storm.create()
    setup = scenario_config(tmp, [root])
    state = setup.state_dir
    annotated: dict[int, dict[str, str]] = {}  # id -> annotations set (latest value per key)
    at_annotation: dict[int, tuple[int, int]] = {}  # id -> (token, its edits when annotated)
    figures: dict[str, Any] = {"kills": 0, "settled_checks": 0, "annotations": 0}
    mid_phase: dict[str, int] = {"settled": 0, "cold": 0}

    for cycle in range(kills):
        proc = setup.start()
        try:
            settled = rng.random() < 0.6
            if settled:
                # Let it come up and catch up, check it, annotate a few files, then storm.
                proc.wait_event("daemon.ready", timeout=60)  # the start-up full sweep is queued
                lv = live_view(proc, [root], "watchdog")
                lv.sync()
                check_catalog(lv, state / "catalog.db")
                figures["settled_checks"] += 1
                for path in rng.sample(list(storm.files), min(3, len(storm.files))):
                    rec = lv.lookup(path)
                    assert rec is not None and rec["state"] == "present", (path, rec)
                    key, value = f"k{cycle % 4}", f"cycle {cycle} token {storm.files[path]}"
                    got = lv.call("annotate", {"id": rec["id"], "key": key, "value": value})
                    assert got["annotations"][key] == value
                    annotated.setdefault(rec["id"], {})[key] = value
                    token = storm.files[path]
                    at_annotation[rec["id"]] = (token, storm.edits.get(token, 0))
                    figures["annotations"] += 1
                lv.client.close()
            mid_phase["settled" if settled else "cold"] += 1
            stop = threading.Event()
            worker = threading.Thread(
                target=storm.run, args=(rng.randrange(*ops), stop, pace), daemon=True
            )
            worker.start()
            # The kill lands at a random moment: during start-up and the first
            # sweep (cold cycles), or amid live events and their commits.
            threading.Event().wait(rng.uniform(0, max_delay))
            assert proc.proc.poll() is None, proc.tail()
            proc.kill()
            figures["kills"] += 1
            stop.set()
            worker.join(60)
            assert not worker.is_alive()
        finally:
            proc.kill()
        storm.run(rng.randrange(down_ops + 1), threading.Event(), 0)  # while nobody watches
        say(f"kill {cycle + 1}/{kills}: {storm.ops} ops, {len(storm.files)} files")

    proc = setup.start()
    try:
        proc.wait_event("daemon.ready", timeout=60)
        lv = live_view(proc, [root], "watchdog")
        lv.sync()
        check_catalog(lv, state / "catalog.db")
        figures["settled_checks"] += 1
        kept_identity = 0
        for file_id, anns in annotated.items():
            rec = lv.call("file", {"id": file_id})
            for key, value in anns.items():
                assert rec["annotations"].get(key) == value, (file_id, key, value, rec)
            token, edits = at_annotation[file_id]
            where = storm.path_of(token)
            if where is not None and storm.edits.get(token, 0) == edits:
                # Never edited since: moves alone (watched or not) keep the id.
                now = lv.lookup(where)
                if now is None or now["id"] != file_id:
                    # In full (a tuple would be cut short): both records with their history.
                    there = lv.call("file", {"id": now["id"]}) if now is not None else None
                    raise AssertionError(
                        f"id {file_id} did not follow its file to {where}:\n"
                        + json.dumps({"annotated": rec, "at_path_now": there}, indent=1)
                    )
                kept_identity += 1
        figures["annotated_ids_checked"] = len(annotated)
        figures["identity_checked"] = kept_identity
        assert lv.call("status")["totals"]["present"] == len(storm.files)
        lv.client.close()
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    figures["integrity"] = integrity(state / "catalog.db")
    assert figures["integrity"] == "ok"
    figures.update(
        ops=storm.ops,
        files=len(storm.files),
        dirs=len(storm.dirs),
        cold_kills=mid_phase["cold"],
        seconds=round(time.monotonic() - t0, 1),
    )
    say(report("crash", figures))
    return figures


def test_crash_drill(tmp_path: Path) -> None:
    """Twenty SIGKILLs amid a storm lose no file, no id and no annotation, and leave a sound catalog."""
    figures = crash_drill(tmp_path, kills=20, seed=int(os.environ.get("DRILL_SEED", "20240611")))
    print(report("crash", figures))
    assert figures["kills"] == 20


def test_sweep_interrupted_after_a_directory_vanished_loses_nothing(
    tmp_path: Path, tree: Path
) -> None:
    """A sweep aborted after it saw a directory vanish leaves the next full sweep able to mark its files missing."""
    make_files(tree / "kept", 5)
    make_files(tree / "vanished", 5)
    h = Harness(tmp_path / "state", tree)
    try:
        assert h.sweep().new == 10
        shutil.rmtree(tree / "vanished")
        checks: list[int] = []

        def root_ok(root: object) -> str | None:
            # The root is fine for the walk and its batch, then "unplugged" at the
            # final check before missing files are committed.
            checks.append(1)
            return "unplugged" if len(checks) >= 3 else None

        with pytest.raises(SweepAborted):
            h.sweep(root_ok=root_ok)
        assert h.files("missing") == [], "marked missing while the root was unplugged"
        h.sweep()  # the disk is back: a full sweep settles what is gone
        gone = [f for f in h.files() if f.dir.startswith(b"vanished")]
        assert [f.state for f in gone] == ["missing"] * 5
    finally:
        h.close()


@pytest.mark.parametrize("unplugged_at", [1, 2, 3])
def test_a_root_that_vanishes_at_any_check_of_a_sweep_marks_nothing_missing(
    tmp_path: Path, tree: Path, unplugged_at: int
) -> None:
    """Whichever of the sweep's root checks first finds the root gone (at the start, before a batch, before missing files are committed), nothing is marked missing."""
    make_files(tree / "kept", 5)
    make_files(tree / "vanished", 5)
    h = Harness(tmp_path / "state", tree)
    try:
        assert h.sweep().new == 10
        shutil.rmtree(tree / "vanished")  # what an empty mount point looks like from the walk
        checks: list[int] = []

        def root_ok(root: object) -> str | None:
            checks.append(1)
            return "unplugged" if len(checks) >= unplugged_at else None

        with pytest.raises(SweepAborted):
            h.sweep(root_ok=root_ok)
        assert h.files("missing") == [], f"marked missing after check {unplugged_at}"
        assert h.counts() == (10, 0, 0)
    finally:
        h.close()
