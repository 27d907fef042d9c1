"""The watchdog backend: inotify on Linux (FSEvents on macOS), turned into hints.

Set up against the defaults that lose events (see FIELD-NOTES): an event
filter keeps open/close-nowrite/modify floods out of the kernel queue; full
move events tell a move out of the tree from a deletion; a directory move
is one event (watchdog's walk of the moved tree, one synthetic event per
descendant, is skipped), because the catalog moves the whole subtree in one
update; events go from each emitter's thread straight to the handler, not
through the observer's queue and dispatcher thread (a hop per event in a
storm); every exception in the handler is caught, because one escaping
would kill the thread it runs in while the others go on; queue
overflows, which watchdog only logs, are reported once watchdog has rebuilt
the watches; and a directory refused a watch by the limit, which watchdog
ignores, is reported.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from filewarden import logs
from filewarden.watch.hints import Hint, Kind

log = logs.get("filewarden.watch")

EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


_WANTED = tuple(EVENT_FILTER)


def _path(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else os.fsencode(value)


class _Handler(FileSystemEventHandler):
    def __init__(self, emit: Callable[[Hint], None]) -> None:
        self.emit = emit
        self.errors = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._translate(event)
        except Exception as exc:  # an escaping exception would kill watchdog's dispatcher thread
            self.errors += 1
            # Not ``event=``: structlog's own first argument has that name.
            log.error(
                "watcher.error", error=f"{type(exc).__name__}: {exc}", fs_event=repr(event)[:300]
            )

    def _translate(self, event: FileSystemEvent) -> None:
        src = _path(event.src_path)
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            if event.is_synthetic and event.src_path and event.dest_path:
                return  # a child of a moved directory: the directory's move covers it
            kind = Kind.DIR_MOVED if event.is_directory else Kind.MOVED
            self.emit(Hint(kind, src, _path(event.dest_path)))
        elif isinstance(event, FileCreatedEvent):
            self.emit(Hint(Kind.CREATED, src))
        elif isinstance(event, FileClosedEvent):
            self.emit(Hint(Kind.CLOSED, src))
        elif isinstance(event, FileDeletedEvent):
            self.emit(Hint(Kind.DELETED, src))
        elif isinstance(event, FileAttribEvent):
            self.emit(Hint(Kind.ATTRIB, src))
        elif isinstance(event, DirDeletedEvent):
            self.emit(Hint(Kind.DIR_DELETED, src))
        elif isinstance(event, DirCreatedEvent):
            # watchdog walks a new directory and reports what is in it, but
            # something moved into it before its watch was added left only an
            # unpaired move-out behind: the aggregator needs to know it is new.
            self.emit(Hint(Kind.DIR_CREATED, src))


class _LibraryLog(logging.Handler):
    """watchdog's own warnings (a watch it could not rebuild, say) become ``watcher.error``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if "overflow" not in message.lower():  # overflows are reported by _observer's Group
                log.warning("watcher.error", source=record.name, error=message)
        except Exception:
            pass


def _observer(emit: Callable[[Hint], None], handler: _Handler) -> BaseObserver:
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import (
            InotifyFullEmitter,
            InotifyObserver,
            InotifyWatchGroup,
        )
        from watchdog.observers.inotify_c import InotifyConstants
        from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

        class Group(InotifyWatchGroup):
            """A root's watches; a kernel queue overflow is reported once they are rebuilt.

            watchdog only logs an overflow, then removes and re-adds every watch
            below the root. Reported before that (from its log line), a sync
            cookie created in between would be written while its directory had
            no watch, and never answered; reported after, the sweep that
            replaces the lost events starts once the watches are back.
            """

            def on_queue_overflow(self) -> None:
                super().on_queue_overflow()
                if self.is_active:
                    emit(Hint(Kind.OVERFLOW, self.path))

            def _add_callback(self, path: bytes) -> None:
                """watchdog's, but a subdirectory refused a watch by the limit is reported.

                watchdog swallows every error below the root, so a tree that
                outgrows ``max_user_watches`` (a directory made, or the
                watches rebuilt after an overflow) would stay partly watched
                without a word.
                """
                try:
                    wd = self._inotify_fd.add_callback(
                        path, self.event_mask, self._callback, self._id
                    )
                except OSError as exc:
                    if path == self.path:
                        raise
                    if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                        emit(Hint(Kind.LIMIT, path))
                    return  # gone or unreadable: nothing there to watch
                self._active_callbacks_by_path[path] = wd
                self._active_callbacks_by_watch[wd] = path

        class Emitter(InotifyFullEmitter):
            """Full move events, but a directory move is one event, not one per descendant.

            watchdog walks a moved directory and queues a synthetic moved event
            for each child (100k children: about a second of events). The
            catalog moves the whole subtree in one update, so the walk is skipped.
            """

            def on_thread_start(self) -> None:
                self._inotify = Group(
                    self._inotify_fd,
                    os.fsencode(self.watch.path),
                    is_recursive=self.watch.is_recursive,
                    event_mask=self.get_event_mask_from_filter(),
                    follow_symlink=self.watch.follow_symlink,
                )

            def get_event_mask_from_filter(self) -> Any:
                """watchdog's mask, plus IN_ATTRIB without IN_MODIFY.

                watchdog asks for IN_ATTRIB only together with IN_MODIFY (one
                event per write). An mtime set by path after the close (tar,
                unzip, rsync -t, cp -p, touch), a chmod or a new hard link is
                IN_ATTRIB alone: without it the catalog keeps a stale signature.
                """
                return super().get_event_mask_from_filter() | InotifyConstants.IN_ATTRIB

            def queue_event(self, event: FileSystemEvent) -> None:
                """Handed to the handler in this thread, not queued for the observer's.

                watchdog queues each event for its dispatcher thread (a queue
                that also compares each event with the last): in a create
                storm one more thread hop and two locks per file. The hint
                the handler makes goes to the aggregator's queue either way.
                """
                if isinstance(event, _WANTED):
                    handler.dispatch(event)

            def build_and_queue_event(self, event: Any, *, full_events: bool = True) -> None:
                if not isinstance(event, PathedInotifyEvent) and event[0].ev.is_directory:
                    move_from, move_to = event  # a paired move of a directory
                    src = self._decode_path(move_from.path)
                    self.queue_event(DirMovedEvent(src, self._decode_path(move_to.path)))
                    return
                super().build_and_queue_event(event, full_events=full_events)

        observer = InotifyObserver(generate_full_events=True)
        observer._emitter_class = Emitter  # watchdog has no public hook for it
        return observer
    from watchdog.observers import Observer

    return Observer()


class WatchdogBackend:
    """One observer (one inotify instance) with a recursive watch per root."""

    name = "watchdog"

    def __init__(self, emit: Callable[[Hint], None]) -> None:
        self._handler = _Handler(emit)
        self._log_handler = _LibraryLog()
        self._observer = _observer(emit, self._handler)
        self._watches: dict[bytes, ObservedWatch] = {}

    def start(self) -> None:
        for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
            logger = logging.getLogger(name)
            logger.addHandler(self._log_handler)
            logger.propagate = False
        self._observer.start()

    def watch(self, path: bytes) -> None:
        """Watch ``path`` recursively; raises OSError when the root itself cannot be watched."""
        # A bytes path gives bytes event paths: names that are not UTF-8 stay exact.
        self._watches[path] = self._observer.schedule(
            self._handler,
            path,  # type: ignore[arg-type]
            recursive=True,
            event_filter=EVENT_FILTER,
        )

    def unwatch(self, path: bytes) -> None:
        watch = self._watches.pop(path, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError) as exc:
                log.debug("watcher.error", error=f"unschedule {os.fsdecode(path)}: {exc}")

    def alive(self) -> bool:
        if not self._observer.is_alive():
            return False
        # On Linux one reader thread feeds every emitter: if it died, all are deaf.
        reader = getattr(self._observer, "_inotify_fd", None)
        if reader is not None and not reader.is_alive():
            return False
        return all(emitter.is_alive() for emitter in self._observer.emitters)

    def stop(self, timeout: float = 3.0) -> None:
        for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
            logging.getLogger(name).removeHandler(self._log_handler)
        try:
            self._observer.stop()
            self._observer.join(timeout)
        except Exception as exc:  # stopping a broken observer must not stop the daemon
            log.warning("watcher.error", error=f"stop: {type(exc).__name__}: {exc}")

    @property
    def handler_errors(self) -> int:
        return self._handler.errors
