"""Is a root there? Offline roots, never missing files.

A root is offline when its path is not a directory, when
``require_mountpoint`` is set and nothing is mounted there, when its
``marker`` is absent, when reading it fails (EIO, ENOTCONN, ESTALE, a hung
server), or when the filesystem there is not the one the root was first seen
on (``check_volume``): an empty mount point is a directory of the parent
filesystem, not the library. Going offline turns its present files offline
in one update; missing files stay missing. Coming back turns them present
again, and the full sweep that follows settles what really changed.

Changes are noticed within moments: /proc/self/mountinfo is polled for
POLLPRI (the kernel flags it on every mount and unmount), besides the
periodic ``mount_check_interval``, an IN_UNMOUNT from the watcher, and a
check before each sweep batch is committed.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
import time
from typing import Protocol

import apsw

from filewarden import catalog, logs, mounts
from filewarden.config import SweepConfig
from filewarden.mounts import Identity
from filewarden.roots import Root, RootSet
from filewarden.writer import Writer

log = logs.get("filewarden.availability")


class Host(Protocol):
    def root_offline(self, root: Root, reason: str) -> None: ...
    def root_online(self, root: Root) -> None: ...


class Availability(threading.Thread):
    """Checks roots, records their volume identity, flips their state, watches the mount table."""

    def __init__(
        self, host: Host, roots: RootSet, writer: Writer, interval: float, stop: threading.Event
    ) -> None:
        super().__init__(name="filewarden-mounts", daemon=True)
        self.host = host
        self.roots = roots
        self.writer = writer
        self.interval = interval
        self.halt = stop
        self._recorded: dict[int, Identity] = {}
        self._lock = threading.RLock()  # one root transition at a time
        self.checks = 0

    def apply(self, config: SweepConfig) -> None:
        """A reload: the new ``mount_check_interval``, from the next wait on."""
        self.interval = config.mount_check_interval

    def load(self, root: Root, reader: apsw.Connection) -> None:
        """The volume ``root`` was first seen on, as recorded in the catalog."""
        with self._lock:
            got = catalog.get_identity(reader, root.id)
            if got is not None:
                self._recorded[root.id] = got

    # -- checking ------------------------------------------------------------------

    def problem(self, root: Root) -> str | None:
        """Why ``root`` is unusable now, or None. No state changes; safe from any thread."""
        return self._check(root)[0]

    def _check(self, root: Root) -> tuple[str | None, Identity | None]:
        cfg = root.config
        try:
            st = os.stat(root.path)
        except FileNotFoundError:
            return "path does not exist", None
        except OSError as exc:
            return f"cannot stat the root: {exc.strerror or exc}", None
        if not stat.S_ISDIR(st.st_mode):
            return "path is not a directory", None
        table = mounts.table()
        if cfg.require_mountpoint and not mounts.is_mount_point(root.path, table):
            return "not a mount point (is the drive mounted?)", None
        if cfg.marker:
            try:
                os.lstat(root.path + b"/" + os.fsencode(cfg.marker))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return f"marker {cfg.marker} is missing", None
                return f"cannot check the marker: {exc.strerror or exc}", None
        failure = mounts.probe(root.path)
        if failure is not None:
            return f"cannot read the root: {failure}", None
        current = mounts.identity(root.path, table)
        recorded = self._recorded.get(root.id)
        if (
            cfg.check_volume
            and recorded is not None
            and current is not None
            and not recorded.same_volume(current)
        ):
            return (
                f"a different filesystem is here: was {recorded.describe()}, now {current.describe()};"
                f" `filewarden accept-root {root.display}` if it is the same library"
            ), current
        return None, current

    # -- transitions ----------------------------------------------------------------

    def refresh(self, root: Root, reader: apsw.Connection) -> str | None:
        """Check ``root`` and move it online or offline as needed; returns the problem, if any."""
        with self._lock:
            self.checks += 1
            problem, current = self._check(root)
            row = catalog.get_root(reader, root.id)
            if row is None:
                return problem
            now = time.time()
            if problem is None:
                if root.id not in self._recorded and current is not None:
                    self._record(root, current)
                if row.state != "online":
                    files = self.writer.call(lambda c: catalog.set_root_online(c, root.id, now))
                    log.info(
                        "root.online",
                        root=root.display,
                        reason="first seen" if row.state == "unknown" else "usable again",
                        files=files,
                        was=row.state,
                        volume=current.describe() if current else None,
                    )
                    self.host.root_online(root)
            elif row.state != "offline":
                files = self.writer.call(
                    lambda c: catalog.set_root_offline(c, root.id, problem, now)
                )
                log.warning("root.offline", root=root.display, reason=problem, files=files)
                self.host.root_offline(root, problem)
            elif row.state_reason != problem:
                self.writer.call(
                    lambda c: catalog.set_root_state(c, root.id, "offline", problem, now)
                )
                log.warning("root.offline", root=root.display, reason=problem, files=row.offline)
            return problem

    def accept(self, root: Root, reader: apsw.Connection) -> str | None:
        """An admin says the filesystem now at ``root`` is the library: record it, check again."""
        with self._lock:
            current = mounts.identity(root.path)
            if current is None:
                return "the root's volume cannot be identified now"
            previous = self._recorded.get(root.id)
            self._record(root, current)
            log.info(
                "root.accepted",
                root=root.display,
                volume=current.describe(),
                was=previous.describe() if previous else None,
            )
            return self.refresh(root, reader)

    def _record(self, root: Root, ident: Identity) -> None:
        self.writer.call(lambda c: catalog.set_identity(c, root.id, ident))
        self._recorded[root.id] = ident

    # -- the watch loop -------------------------------------------------------------------

    def run(self) -> None:
        reader = self.writer.catalog.reader()
        poller, table = None, None
        try:
            try:
                table = open(mounts.MOUNTINFO, "rb")
                poller = select.poll()
                poller.register(table, select.POLLPRI | select.POLLERR)
            except OSError:
                poller = None  # no mountinfo to poll: the interval alone
            # Check first, then wait: a change made before the table was opened raises no
            # POLLPRI, and the caller's own checks may be older than that.
            while not self.halt.is_set():
                for root in self.roots:
                    try:
                        self.refresh(root, reader)
                    except (
                        Exception
                    ) as exc:  # one root's trouble must not end the checks of the others
                        log.error(
                            "root.error", root=root.display, error=f"{type(exc).__name__}: {exc}"
                        )
                if poller is not None and table is not None:
                    # A change flags POLLERR|POLLPRI once: poll() itself takes note of
                    # it (the kernel's mounts_poll), so nothing needs to be read.
                    poller.poll(self.interval * 1000)
                else:
                    self.halt.wait(self.interval)
        finally:
            if table is not None:
                table.close()
            reader.close()
