"""Live watching: which roots are watched by which backend, and which are polled.

The watcher only hints (see :mod:`filewarden.watch.hints`): what a hint
means is decided outside this package, by the planner the daemon hands in
(:mod:`filewarden.live`), and sweeps remain the truth. A root is polled
(quick sweeps on ``poll_interval``) when its mode says so, when ``mode =
"auto"`` finds a network or FUSE filesystem (inotify does not see changes
made by other clients), or when it cannot be fully watched (inotify
limits) — never silently partly watched.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from filewarden import logs, mounts
from filewarden.roots import COOKIE_PREFIX, Root, RootSet
from filewarden.watch.aggregator import Aggregator, Host, Planner
from filewarden.watch.hints import Hint
from filewarden.watch.limits import WatchLimit, check_room, own_watches

log = logs.get("filewarden.watch")


class Backend(Protocol):
    name: str

    def start(self) -> None: ...
    def watch(self, path: bytes) -> None: ...
    def unwatch(self, path: bytes) -> None: ...
    def alive(self) -> bool: ...
    def stop(self, timeout: float = 3.0) -> None: ...


def make_backend(name: str, emit: Callable[[Hint], None]) -> Backend:
    """The backend called ``name``; pyinotify is imported only when chosen."""
    if name == "watchdog":
        from filewarden.watch.watchdog_backend import WatchdogBackend

        return WatchdogBackend(emit)
    if name == "pyinotify":
        from filewarden.watch.pyinotify_backend import PyinotifyBackend

        return PyinotifyBackend(emit)
    raise ValueError(f"no watch backend {name!r}")


def decide_mode(root: Root) -> tuple[str, str | None]:
    """``("watch" | "poll", why)`` for a root from its configured mode and its filesystem."""
    if root.config.mode == "poll":
        return "poll", "mode = poll"
    if root.config.mode == "watch":
        return "watch", None
    mount = mounts.mount_of(root.path)
    if mount is not None and mounts.is_remote(mount.fstype):
        return "poll", f"{mount.fstype} filesystem: inotify does not see changes made elsewhere"
    return "watch", None


class Watcher:
    """Owns the backend, the aggregator and the per-root watch state."""

    def __init__(self, host: Host, planner: Planner, backend: str, roots: RootSet) -> None:
        self.backend_name = backend
        self.roots = roots
        self.aggregator = Aggregator(host, planner, self.watched_roots)
        self.backend: Backend | None = None
        # Root id → (mode, reason when polled); the roots themselves are the RootSet's.
        self.modes: dict[int, tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        self._cookie_seq = 0
        self._backoff = 1.0
        self._retry_at = 0.0
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.aggregator.start()
        if self.backend_name != "poll":
            self._start_backend()

    def _start_backend(self) -> None:
        try:
            self.backend = make_backend(self.backend_name, self.aggregator.put)
            self.backend.start()
        except (OSError, ImportError) as exc:
            self.backend = None
            level = log.error
            level(
                "watcher.limit" if isinstance(exc, OSError) else "watcher.error",
                backend=self.backend_name,
                error=str(exc),
                hint="raise fs.inotify.max_user_instances" if isinstance(exc, OSError) else None,
            )

    def stop(self, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        if self.backend is not None:
            self.backend.stop(timeout=timeout / 2)
        self.aggregator.stop(timeout=max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        backend_ok = self.backend is None or not self.watched_roots() or self.backend.alive()
        return backend_ok and self.aggregator.is_alive()

    def revive(self) -> list[Root]:
        """Restart a dead backend, with a backoff between tries; returns the roots it
        watches again, which need a sweep (events may have been lost meanwhile)."""
        if self.alive():
            self._backoff = 1.0
            return []
        if time.monotonic() < self._retry_at:
            return []
        log.error("watcher.error", error="watcher stopped; restarting it", backoff_s=self._backoff)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 60.0)
        return self.restart_backend()

    def restart_backend(self) -> list[Root]:
        """Replace a dead backend and watch its roots again; returns them (they need a sweep)."""
        roots = self.watched_roots()
        if self.backend is not None:
            self.backend.stop()
        self.restarts += 1
        self._start_backend()
        for root in roots:
            self.add(root)
        return roots

    # -- roots -------------------------------------------------------------------

    def add(self, root: Root) -> str:
        """Watch ``root`` if it can be fully watched, else poll it; returns the mode."""
        mode, why = decide_mode(root)
        if mode == "watch" and self.backend is None:
            mode, why = (
                "poll",
                f"no {self.backend_name} watcher"
                if self.backend_name != "poll"
                else "backend = poll",
            )
        if mode == "watch":
            assert self.backend is not None
            try:
                needed = check_room(root.path)
                before = own_watches()
                self.backend.watch(root.path)
                added = own_watches() - before
                # watchdog swallows ENOSPC below the root: count what really got a watch.
                if added < needed - max(2, needed // 1000):
                    self.backend.unwatch(root.path)
                    raise WatchLimit(
                        f"{root.display}: only {added} of {needed} directories could be watched;"
                        " raise fs.inotify.max_user_watches"
                    )
            except WatchLimit as exc:
                mode, why = "poll", str(exc)
                log.error("watcher.limit", root=root.display, error=str(exc))
            except OSError as exc:
                mode, why = "poll", f"cannot watch: {exc.strerror or exc}"
                log.error(
                    "watcher.limit" if exc.errno in (28, 24) else "watcher.error",
                    root=root.display,
                    error=why,
                )
        with self._lock:
            self.modes[root.id] = (mode, why)
        if mode == "poll":
            log.info("watcher.poll", root=root.display, reason=why)
        return mode

    def to_poll(self, root: Root, why: str) -> bool:
        """Stop watching ``root`` and poll it instead; False if it was not watched."""
        with self._lock:
            if not self.watches(root):
                return False
            self.modes[root.id] = ("poll", why)
        if self.backend is not None:
            self.backend.unwatch(root.path)
        log.info("watcher.poll", root=root.display, reason=why)
        return True

    def remove(self, root: Root) -> None:
        with self._lock:
            watched = self.watches(root)
            self.modes.pop(root.id, None)
        if watched and self.backend is not None:
            self.backend.unwatch(root.path)

    def mode_of(self, root: Root) -> str:
        return self.modes.get(root.id, ("poll", None))[0]

    def backend_of(self, root: Root) -> str:
        return self.backend_name if self.watches(root) else "poll"

    def why_polled(self, root: Root) -> str | None:
        return self.modes.get(root.id, ("poll", None))[1]

    def watches(self, root: Root) -> bool:
        return self.modes.get(root.id, ("poll", None))[0] == "watch"

    def watched_roots(self) -> list[Root]:
        return [root for root in self.roots if self.watches(root)]

    # -- sync ------------------------------------------------------------------------

    def cookie(self, root: Root) -> tuple[bytes, threading.Event] | None:
        """Drop a cookie file in a watched root; its event marks "everything before is in".

        None when the root is not watched or the cookie cannot be written
        (a read-only root): the caller sweeps instead.
        """
        if not self.watches(root):
            return None
        with self._lock:
            self._cookie_seq += 1
            name = COOKIE_PREFIX + b"%d-%d" % (os.getpid(), self._cookie_seq)
        path = root.path + b"/" + name
        done = threading.Event()
        self.aggregator.expect_cookie(path, done)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except OSError:
            self.aggregator.forget_cookie(path)
            return None
        return path, done

    def forget_cookie(self, path: bytes) -> None:
        """The sync is answered (or gave up): its cookie's event is no longer awaited."""
        self.aggregator.forget_cookie(path)
        try:
            os.unlink(path)
        except OSError:
            pass
