"""A real daemon started in the test's own process, talked to over its real socket.

Only code run in this process is the code under test for mutation testing
(a daemon process imports the installed package), so the tests of purge,
retention and the CLI's exit codes use this rather than a process started
by ``filewarden.testing``; they share its config and its socket client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest

from filewarden import catalog, config, logs
from filewarden.client import Client
from filewarden.daemon import Daemon
from filewarden.protocol import RpcError
from filewarden.testing import write_config
from tests.conftest import T, in_child


class Live:
    """A started daemon with two roots: ``tree``, and ``other`` (online while its marker is there)."""

    def __init__(
        self,
        tmp: Path,
        tree: Path,
        sock: Path,
        *sections: str,
        admin_group: str = "",
        other_online: bool = True,
        hashing: bool = False,
    ) -> None:
        self.tree, self.other, self.sock = tree, tmp / "other", sock
        self.other.mkdir()
        if other_online:
            (self.other / ".online").write_text("")
        (self.other / "elsewhere.txt").write_text("on a removable disk")
        setup = write_config(
            tmp,
            [tree, {"path": self.other, "marker": ".online"}],
            socket=sock,
            daemon={"socket_mode": "0666", "admin_group": admin_group},
            sections={"hash": {"enabled": hashing}},
            extra="".join(f"{line}\n" for line in sections),
        )
        self.config = setup.path
        self.d = Daemon(config.load(setup.path))
        self.d.start()
        self.reader = catalog.connect(self.d.db_path, readonly=True)
        self.client = Client(sock, timeout=60)
        assert self.d.syncer.sync(30)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.call(method, params)

    def refused(self, method: str, params: dict[str, Any]) -> tuple[int, str]:
        with pytest.raises(RpcError) as caught:
            self.call(method, params)
        return caught.value.code, caught.value.message

    def id_of(self, path: Path) -> int:
        record = self.call("lookup", {"path": str(path)})
        assert record is not None, path
        return int(record["id"])

    def record(self, file_id: int) -> dict[str, Any]:
        return dict(self.call("file", {"id": file_id}))

    def remove(self, *paths: Path) -> None:
        """Delete these files and wait until the catalog has them missing."""
        for p in paths:
            p.unlink()
        assert self.d.syncer.sync(30)

    def take_other_offline(self) -> None:
        (self.other / ".online").unlink()
        self.call("scan", {"wait": True})
        assert self.root_counts(self.other)["state"] == "offline"

    def root_counts(self, path: Path) -> dict[str, Any]:
        for r in self.call("status")["roots"]:
            if r["path"] == str(path):
                return {"state": r["state"], **r["files"]}
        raise AssertionError(f"no root {path}")

    def write(self, sql: str, *params: object) -> None:
        """Change the catalog through the daemon's own writer (to age it)."""
        self.d.writer.call(lambda c: c.execute(sql, params))

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.reader.execute(sql, params)]

    def journal(self) -> list[dict[str, Any]]:
        """Every entry the journal holds, as ``changes`` shapes them (read from its start,
        which after a compaction no cursor may do: the feed would ask for a reset)."""
        entries = catalog.journal_since(self.reader, 0, 1 << 30)
        return [self.d.api._change(e) for e in entries]

    @contextmanager
    def writes_blocked(self) -> Iterator[Callable[[], None]]:
        """Another program holds the catalog's write lock (an admin's sqlite3 session).

        The daemon's writer waits for it; reads go on. Yields a function that
        lets go early (from any thread).
        """
        # apsw, as the daemon: POSIX locks do not conflict within one process,
        # so only SQLite's own bookkeeping, shared by one library, makes this wait.
        other = apsw.Connection(str(self.d.db_path))
        other.set_busy_timeout(10_000)
        other.execute("BEGIN IMMEDIATE")
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                other.execute("ROLLBACK")

        try:
            yield release
        finally:
            release()
            other.close()

    def close(self) -> None:
        """Stop the daemon (again is a no-op)."""
        if self.d.stopping.is_set():
            return
        self.client.close()
        self.reader.close()
        self.d.stop()
        logs.configure(config.LogConfig(format="json", level="warning"))


Start = Callable[..., Live]


def starting(tmp_path: Path, tree: Path) -> Iterator[Start]:
    """For a test file's fixture: starts Live daemons (extra config lines, Live's options), stops them after."""
    started: list[Live] = []

    def go(*sections: str, sock: Path | None = None, **options: Any) -> Live:
        live = Live(tmp_path, tree, sock or tmp_path / "fw.sock", *sections, **options)
        started.append(live)
        return live

    yield go
    for live in started:
        live.close()


@contextmanager
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (tmp_path is root's alone), for a socket others use."""
    public = Path("/tmp") / f"fw-public-{os.getpid()}"
    public.mkdir(mode=0o755)
    try:
        yield public
    finally:
        for p in public.iterdir():
            p.unlink()
        public.rmdir()


def as_user(gid: int, work: Callable[[], T]) -> T:
    """Run ``work`` in a child that has become uid 65534 with group ``gid`` only; its result."""

    def become() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(65534)

    return in_child(work, become)
