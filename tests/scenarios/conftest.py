"""End-to-end stories: a real daemon, real files, `sync` instead of sleeps, answers from the socket."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from filewarden.client import Client
from tests.daemon_proc import DaemonProcess

BACKENDS = ["watchdog", "poll"] + (["pyinotify"] if importlib.util.find_spec("pyinotify") else [])


class Live:
    """A running daemon over ``roots`` and a client to ask it."""

    def __init__(
        self,
        tmp: Path,
        roots: list[Path],
        outside: Path,
        proc: DaemonProcess,
        sock: Path,
        backend: str,
    ):
        self.tmp, self.roots, self.outside, self.proc, self.sock, self.backend = (
            tmp,
            roots,
            outside,
            proc,
            sock,
            backend,
        )
        self.client = Client(sock, timeout=120)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.call(method, params)

    def sync(self) -> int:
        return int(self.call("sync", {"timeout_s": 120})["seq"])

    def lookup(self, path: Path | bytes) -> dict[str, Any] | None:
        return self.call("lookup", {"path": os.fsdecode(path)})  # type: ignore[no-any-return]

    def id_of(self, path: Path | bytes) -> int:
        rec = self.lookup(path)
        assert rec is not None and rec["state"] == "present", (path, rec)
        return int(rec["id"])

    def files(self, state: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after_id": after, "limit": 10000}
            if state:
                params["state"] = state
            page = self.call("list", params)
            out += page["files"]
            if page["next_after_id"] is None:
                return out
            after = page["next_after_id"]

    def assert_matches_disk(self, excluded: tuple[str, ...] = ("excluded",)) -> None:
        """Every regular file on disk is present at its path, once; nothing present is gone."""
        on_disk: dict[bytes, int] = {}
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
                dirnames[:] = [d for d in dirnames if os.fsdecode(d) not in excluded]
                for name in filenames:
                    p = os.path.join(dirpath, name)
                    st = os.lstat(p)
                    if stat.S_ISREG(st.st_mode) and not name.startswith(b".filewarden-sync-"):
                        on_disk[p] = st.st_size
        present = self.files("present")
        catalog = {os.fsencode(f["path"]): f["size"] for f in present}
        assert len(present) == len(catalog), "two present files share a path"
        assert catalog == on_disk
        ids = [f["id"] for f in self.files()]
        assert len(ids) == len(set(ids))
        status = self.call("status")
        assert status["totals"]["present"] == len(on_disk)

    def close(self) -> int:
        self.client.close()
        return self.proc.stop()


@contextmanager
def live_daemon(
    tmp: Path,
    backend: str,
    *,
    roots: int = 2,
    extra: str = "",
    before_start: Any = None,
    root_options: str = "",
) -> Iterator[Live]:
    root_paths = [tmp / f"root{i}" for i in range(1, roots + 1)]
    for r in root_paths:
        r.mkdir(exist_ok=True)
    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    if before_start is not None:
        before_start(root_paths)
    sock = tmp / "run" / "fw.sock"
    lines = [
        "[daemon]",
        f'state_dir = "{tmp / "state"}"',
        f'socket = "{sock}"',
        "[sweep]",
        'interval = "never"',
        'quick_interval = "never"',
        'poll_interval = "1h"',
        "[watch]",
        f'backend = "{backend}"',
    ]
    for r in root_paths:
        lines += ["[[root]]", f'path = "{r}"', 'exclude = ["excluded"]', root_options]
    cfg = tmp / "config.toml"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    proc = DaemonProcess(tmp, "--config", str(cfg))
    try:
        for _ in root_paths:
            proc.wait_event("sweep.finish", timeout=120)
        live = Live(tmp, root_paths, outside, proc, sock, backend)
    except BaseException:
        proc.kill()
        raise
    try:
        yield live
    finally:
        code = live.close()
        assert code == 0, "".join(proc.raw[-20:])


@pytest.fixture(params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    with live_daemon(tmp_path, request.param) as d:
        yield d
