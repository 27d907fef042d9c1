"""The pyinotify backend (Linux): what watchdog hides, reported explicitly.

pyinotify gives queue overflows (IN_Q_OVERFLOW) and unmounts (IN_UNMOUNT)
as events, pairs moves by cookie across every watch of its one inotify
instance (so a move between two roots is one move), and raises when a
watch cannot be added instead of leaving a tree partly watched.

Its last release (0.9.6, 2015) decodes names strictly as UTF-8 in two
places: reading events (one non-UTF-8 name raises inside the notifier
thread and ends it) and adding watches. Both are done here with
``surrogateescape``, the way every other path in filewarden is handled.
Imported only when chosen; on Python ≥ 3.12 it needs the ``pyasyncore`` shim.
"""

from __future__ import annotations

import array
import fcntl
import os
import struct
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

import pyinotify

from filewarden import logs
from filewarden.watch.hints import Hint, Kind

log = logs.get("filewarden.watch")

MASK = (
    pyinotify.IN_CREATE
    | pyinotify.IN_DELETE
    | pyinotify.IN_MOVED_FROM
    | pyinotify.IN_MOVED_TO
    | pyinotify.IN_CLOSE_WRITE
    | pyinotify.IN_ATTRIB
    | pyinotify.IN_DELETE_SELF
    | pyinotify.IN_MOVE_SELF
    | pyinotify.IN_UNMOUNT
    | pyinotify.IN_Q_OVERFLOW
    | pyinotify.IN_DONT_FOLLOW
)
UNPAIRED_AFTER = (
    0.5  # seconds an IN_MOVED_FROM waits for its IN_MOVED_TO before it counts as moved out
)


def _encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class _Notifier(pyinotify.ThreadedNotifier):  # type: ignore[misc]
    def read_events(self) -> None:
        """pyinotify's reader with names decoded by surrogateescape instead of strictly."""
        size = array.array("i", [0])
        fcntl.ioctl(self._fd, termios.FIONREAD, size, True)
        queue_size = size[0]
        if queue_size < self._threshold:
            return
        data = os.read(self._fd, queue_size)
        offset = 0
        while offset < queue_size:
            wd, mask, cookie, length = struct.unpack("iIII", data[offset : offset + 16])
            raw = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
            self._eventq.append(
                pyinotify._RawEvent(wd, mask, cookie, raw.decode("utf-8", "surrogateescape"))
            )
            offset += 16 + length


class _Handler(pyinotify.ProcessEvent):  # type: ignore[misc]
    def my_init(
        self,
        *,
        emit: Callable[[Hint], None],
        moves: dict[int, tuple[bytes, bool, float]],
        lock: threading.RLock,
    ) -> None:
        self.emit = emit
        self.moves = moves
        self.lock = lock

    def process_IN_Q_OVERFLOW(self, event: Any) -> None:
        # ProcessEvent has its own handler for this (it only logs): override it.
        self.process_default(event)

    def process_default(self, event: Any) -> None:
        try:
            # Held while translating, so a move-out reported by the expiry
            # thread can never be ordered after a later event.
            with self.lock:
                self._translate(event)
        except Exception as exc:  # the notifier thread must survive whatever one event brings
            log.error("watcher.error", error=f"{type(exc).__name__}: {exc}")

    def flush_moves(self, older_than: float | None = None) -> None:
        """Report pending IN_MOVED_FROM without a partner as moves out of the tree."""
        now = time.monotonic()
        with self.lock:
            expired = [
                (c, v)
                for c, v in self.moves.items()
                if older_than is None or now - v[2] > older_than
            ]
            for cookie, (path, is_dir, _) in expired:
                del self.moves[cookie]
                self.emit(Hint(Kind.DIR_MOVED if is_dir else Kind.MOVED, path, b""))

    def _translate(self, event: Any) -> None:
        mask = event.mask
        if mask & pyinotify.IN_Q_OVERFLOW:
            self.emit(Hint(Kind.OVERFLOW, b""))
            return
        path = _encode(event.pathname)
        if b"-unknown-path" in path:
            return  # a watch left behind by a directory moved out of the tree
        if not (mask & pyinotify.IN_MOVED_TO and event.cookie in self.moves):
            # The kernel queues a rename's IN_MOVED_TO right after its
            # IN_MOVED_FROM: any other event in between means the move left
            # every watch. Reporting it now keeps the order (a sync cookie
            # must never overtake it).
            self.flush_moves()
        if mask & pyinotify.IN_UNMOUNT:
            self.emit(Hint(Kind.UNMOUNT, path))
        elif mask & pyinotify.IN_MOVED_FROM:
            with self.lock:
                self.moves[event.cookie] = (path, bool(event.dir), time.monotonic())
        elif mask & pyinotify.IN_MOVED_TO:
            with self.lock:
                self.moves.pop(event.cookie, None)
            src = getattr(event, "src_pathname", None)
            if src is not None:
                self.emit(Hint(Kind.DIR_MOVED if event.dir else Kind.MOVED, _encode(src), path))
            elif event.dir:
                self.emit(
                    Hint(Kind.DIR_SCAN, path)
                )  # moved in from outside: nobody lists it for us
            else:
                self.emit(Hint(Kind.MOVED, b"", path))
        elif mask & pyinotify.IN_CREATE:
            # A new directory is listed by us, in order: pyinotify's own
            # simulated events for its contents are queued behind events
            # already read (a sync cookie could overtake them).
            self.emit(Hint(Kind.DIR_CREATED if event.dir else Kind.CREATED, path))
        elif mask & pyinotify.IN_CLOSE_WRITE:
            self.emit(Hint(Kind.CLOSED, path))
        elif mask & pyinotify.IN_ATTRIB:
            if not event.dir:
                self.emit(Hint(Kind.ATTRIB, path))
        elif mask & pyinotify.IN_DELETE:
            self.emit(Hint(Kind.DIR_DELETED if event.dir else Kind.DELETED, path))


class PyinotifyBackend:
    """One inotify instance, recursive auto-adding watches per root."""

    name = "pyinotify"

    def __init__(self, emit: Callable[[Hint], None]) -> None:
        self._emit = emit
        self._moves: dict[int, tuple[bytes, bool, float]] = {}
        self._lock = threading.RLock()
        self._wm = pyinotify.WatchManager()
        # Watch paths are encoded strictly by pyinotify: encode them the way we decode them.
        wrapper = self._wm._inotify_wrapper
        libc_add = getattr(wrapper, "_libc", None)
        if libc_add is not None:
            import ctypes

            wrapper._inotify_add_watch = lambda fd, p, m: libc_add.inotify_add_watch(
                fd, ctypes.create_string_buffer(_encode(p)), m
            )
        self._handler = _Handler(emit=emit, moves=self._moves, lock=self._lock)
        self._notifier = _Notifier(self._wm, self._handler, timeout=200)
        self._wdds: dict[bytes, dict[str, int]] = {}
        self._stop = threading.Event()
        self._pairing = threading.Thread(
            target=self._expire_moves, name="filewarden-pyinotify-moves", daemon=True
        )

    def start(self) -> None:
        self._notifier.start()
        self._pairing.start()

    def watch(self, path: bytes) -> None:
        try:
            wdd = self._wm.add_watch(os.fsdecode(path), MASK, rec=True, auto_add=True, quiet=False)
        except pyinotify.WatchManagerError as exc:
            for wd in (exc.wmd or {}).values():
                if wd > 0:
                    self._wm.rm_watch(wd, quiet=True)
            raise OSError(
                28, f"inotify watch limit reached under {os.fsdecode(path)}: {exc}"
            ) from None
        self._wdds[path] = wdd

    def unwatch(self, path: bytes) -> None:
        wdd = self._wdds.pop(path, None)
        if wdd:
            self._wm.rm_watch([wd for wd in wdd.values() if wd > 0], quiet=True)

    def alive(self) -> bool:
        return self._notifier.is_alive() and self._pairing.is_alive()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        try:
            self._notifier.stop()
        except Exception as exc:  # stopping a broken notifier must not stop the daemon
            log.warning("watcher.error", error=f"stop: {type(exc).__name__}: {exc}")
        self._pairing.join(timeout)

    def _expire_moves(self) -> None:
        """A lone IN_MOVED_FROM with no event after it: moved out, once its partner cannot come."""
        while not self._stop.wait(0.1):
            self._handler.flush_moves(older_than=UNPAIRED_AFTER)
