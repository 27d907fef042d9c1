"""Shared fixtures: real trees under tmp_path, a real catalog, real sweeps."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from structlog.testing import capture_logs

from filewarden import catalog, logs
from filewarden.config import LogConfig, RootConfig
from filewarden.listing import Tally
from filewarden.roots import Root, RootSet
from filewarden.sweep import Sweep
from filewarden.testing import Setup, write_config
from filewarden.walk import WalkProcess
from filewarden.writer import Writer

logs.configure(LogConfig(format="json", level="warning"))

T = TypeVar("T")


class Harness:
    """A catalog with its writer and one root, swept on demand in the test's thread."""

    def __init__(
        self, state: Path, root_dir: Path, away: WalkProcess | None = None, **root_options: object
    ) -> None:
        self.away = away  # where full sweeps walk (see filewarden.walk); None: here
        self.db_path = state / "catalog.db"
        self.writer = Writer(self.db_path)
        self.writer.start()
        self.reader = catalog.connect(self.db_path, readonly=True)
        self.root_dir = root_dir
        self.root = self.add_root(root_dir, **root_options)
        self.stop = threading.Event()

    def add_root(self, path: Path, **options: object) -> Root:
        root_id = self.writer.call(lambda c: catalog.ensure_root(c, os.fsencode(path)))
        return Root.make(root_id, RootConfig(path=path, **options))  # type: ignore[arg-type]

    def sweep(self, *, full: bool = True, root: Root | None = None, **kw: object) -> Tally:
        kw.setdefault("away", self.away)
        return Sweep(root or self.root, self.writer, full=full, stop=self.stop, **kw).run()  # type: ignore[arg-type]

    def at(self, path: Path | bytes) -> catalog.FileRow | None:
        rel = os.path.relpath(os.fsencode(path), os.fsencode(self.root_dir))
        return catalog.file_at(self.reader, self.root.id, rel)

    def files(self, state: str | None = None) -> list[catalog.FileRow]:
        return [
            f
            for f in catalog.iter_files(self.reader, self.root.id)
            if state is None or f.state == state
        ]

    def counts(self) -> tuple[int, int, int]:
        row = catalog.get_root(self.reader, self.root.id)
        assert row is not None
        return row.present, row.missing, row.offline

    def close(self) -> None:
        self.reader.close()
        self.writer.stop(time.monotonic() + 10)
        if self.away is not None:
            self.away.close()


def roots_of(*roots: Root) -> RootSet:
    """A root set holding these roots."""
    found = RootSet()
    for root in roots:
        found.add(root)
    return found


@pytest.fixture(autouse=True)
def _log_catalogue_kept() -> Iterator[None]:
    """Whatever a test does in-process, every event it logs is in the catalogue (log_events.py)."""
    seen = len(logs.UNCATALOGUED)
    yield
    wrong = logs.UNCATALOGUED[seen:]
    del logs.UNCATALOGUED[seen:]
    assert not wrong, f"logged outside the catalogue: {wrong}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def harness(tmp_path: Path, tree: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "state", tree)
    yield h
    h.close()


def api_config(
    tmp: Path,
    roots: list[Path],
    *,
    backend: str = "poll",
    socket: Path | None = None,
    **daemon: object,
) -> Setup:
    """The socket and CLI tests' config: short client timeouts, more ``[daemon]`` keys.

    They default to the poll backend: what they check (lookup with verify,
    scan counts) must not race a watcher that got there first. The hasher is
    off: its ``hash`` entries would land, whenever it got to each file, among
    the journal entries these tests count (it has tests of its own).
    """
    timeouts = {"client_request_timeout": "1s", "client_idle_timeout": "3s"}
    return write_config(
        tmp,
        roots,
        backend=backend,
        socket=socket,
        daemon={**timeouts, **daemon},
        sections={"hash": {"enabled": False}},
    )


def make_files(base: Path, count: int, per_dir: int = 10) -> list[Path]:
    """``count`` small files with distinct content, ``per_dir`` per directory."""
    paths = []
    for i in range(count):
        d = base / f"d{i // per_dir:04d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:05d}.txt"
        p.write_bytes(b"content %d\n" % i)
        paths.append(p)
    return paths


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m filewarden ARGS`` as a user would, and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "filewarden", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
    )


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextmanager
def logged(level: int = logging.DEBUG) -> Iterator[list[MutableMapping[str, Any]]]:
    """The log events emitted meanwhile, at ``level`` and above (every level by default; the
    suite logs at warning otherwise)."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        with capture_logs() as events:
            logs.reconfigured()
            yield events
    finally:
        structlog.configure(wrapper_class=wrapper)
        logs.reconfigured()


def in_child(work: Callable[[], T], become: Callable[[], None] = lambda: None) -> T:
    """Run ``work()`` in a forked child after ``become()`` (another user, fewer capabilities).

    Its result comes back pickled, or its error as a failure here. A forked
    child runs the same code as this process (mutants too).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            try:
                become()
                out = pickle.dumps(("ok", work()))
            except BaseException:
                out = pickle.dumps(("error", traceback.format_exc()))
            with os.fdopen(write, "wb") as f:
                f.write(out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        status, value = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert status == "ok", value
    result: T = value
    return result


def rss_kib(pid: int) -> int:
    """The resident set size of a process, from /proc/PID/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
