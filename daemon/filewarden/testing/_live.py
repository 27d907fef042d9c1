"""The socket of a running daemon: lists read to the end, and the catalog compared with the disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filewarden.client import Client
from filewarden.testing._process import DaemonProcess, Record

SYNC_COOKIE = b".filewarden-sync-"


def files(client: Client, state: str | None = None, *, root: Path | None = None) -> list[Record]:
    """Every file record (of this state, under this root), through ``list`` to its last page."""
    out: list[Record] = []
    params: dict[str, Any] = {"after_id": 0, "limit": 10_000}
    if state:
        params["state"] = state
    if root is not None:
        params["root"] = str(root)
    while True:
        page = client.call("list", params)
        out += page["files"]
        if page["next_after_id"] is None:
            return out
        params["after_id"] = page["next_after_id"]


def changes(client: Client, since: int = 0) -> list[Record]:
    """Every journal entry after ``since``, through ``changes`` until it has no more."""
    out: list[Record] = []
    while True:
        page = client.call("changes", {"since": since})
        if not page["changes"]:
            return out
        out += page["changes"]
        since = page["changes"][-1]["seq"]


def regular_files(
    roots: Sequence[Path], excluded: Sequence[str] = ()
) -> dict[bytes, os.stat_result]:
    """Every regular file under the roots by raw path, as a sweep sees them: no links
    followed, no ``excluded`` directory names entered, no ``sync`` cookies."""
    found: dict[bytes, os.stat_result] = {}
    skip = {os.fsencode(e) for e in excluded}
    for r in roots:
        for dirpath, dirnames, filenames in os.walk(os.fsencode(r)):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue  # removed since it was listed
                if stat.S_ISREG(st.st_mode) and not name.startswith(SYNC_COOKIE):
                    found[p] = st
    return found


class Live:
    """A running daemon over ``roots`` and a client to ask it."""

    def __init__(
        self,
        proc: DaemonProcess,
        roots: Sequence[Path],
        *,
        backend: str = "watchdog",
        excluded: Sequence[str] = (),
        timeout: float = 60,
    ) -> None:
        self.proc, self.roots, self.backend = proc, list(roots), backend
        self.excluded = tuple(excluded)
        self.client = proc.connect(timeout)
        assert proc.socket is not None
        self.sock = proc.socket

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.call(method, params)

    def sync(self) -> int:
        """Wait until every change made on disk so far is in the catalog; the journal's seq."""
        return int(self.call("sync", {"timeout_s": 120})["seq"])

    def lookup(self, path: Path | bytes) -> Record | None:
        record: Record | None = self.call("lookup", {"path": os.fsdecode(path)})
        return record

    def id_of(self, path: Path | bytes) -> int:
        rec = self.lookup(path)
        assert rec is not None and rec["state"] == "present", (path, rec)
        return int(rec["id"])

    def files(self, state: str | None = None) -> list[Record]:
        return files(self.client, state)

    def changes(self, since: int = 0) -> list[Record]:
        return changes(self.client, since)

    def assert_matches_disk(self, excluded: Sequence[str] | None = None) -> None:
        """Every regular file on disk is present at its path, once; nothing present is gone."""
        on_disk = {
            p: st.st_size
            for p, st in regular_files(
                self.roots, self.excluded if excluded is None else excluded
            ).items()
        }
        present = self.files("present")
        catalog = {os.fsencode(f["path"]): f["size"] for f in present}
        assert len(present) == len(catalog), "two present files share a path"
        assert catalog == on_disk
        ids = [f["id"] for f in self.files()]
        assert len(ids) == len(set(ids))
        status = self.call("status")
        assert status["totals"]["present"] == len(on_disk)

    def close(self) -> int:
        """Stop the daemon; its exit code."""
        self.client.close()
        return self.proc.stop()
