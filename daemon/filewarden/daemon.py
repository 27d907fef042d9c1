"""The daemon's lifecycle: build and wire the parts, then start, run, reload and stop them.

Every part gets what it needs handed in (a narrow Protocol, the RootSet,
the writer); none of them knows the daemon. Signal handlers only set
flags; a second SIGINT forces the exit. Stopping has a deadline: the writer
finishes its open transaction and the process exits 0 within five seconds
of SIGTERM.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import threading
import time
from functools import partial
from types import FrameType

import apsw

from filewarden import __version__, catalog, logs
from filewarden import config as config_mod
from filewarden.api import Api
from filewarden.availability import Availability
from filewarden.config import Config, RootConfig
from filewarden.errors import ConfigError, FilewardenError
from filewarden.hasher import Hasher
from filewarden.health import Health, pin_malloc_threshold
from filewarden.identity import Relinker
from filewarden.jobs import JobTable
from filewarden.live import Planner
from filewarden.metrics import Metrics
from filewarden.notify import Notifier, listen_socket
from filewarden.purge import Retention
from filewarden.roots import Root, RootSet
from filewarden.scheduler import Scheduler
from filewarden.server import AdminCheck, Server, bind_unix_socket
from filewarden.watch import Watcher
from filewarden.watch.sync import Syncer
from filewarden.web import Web
from filewarden.writer import Writer

log = logs.get("filewarden.daemon")

STOP_DEADLINE = 4.0  # seconds from SIGTERM to exit, leaving a margin under 5 s


class Daemon:
    """The long-running process: builds the parts, starts them, reloads them, stops them."""

    def __init__(
        self,
        config: Config,
        *,
        fixed_roots: bool = False,
        fixed_log: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.fixed_roots = fixed_roots  # roots came from --root: a reload keeps them
        self.fixed_log = fixed_log or {}  # --log-format/--log-level: a reload keeps them
        self.db_path = config.daemon.state_dir / "catalog.db"
        self.stopping = threading.Event()
        # Set once every root is watched (or offline) and its start-up sweep queued.
        self.started = threading.Event()
        self.roots = RootSet()
        self.writer = Writer(self.db_path)
        self.jobs = JobTable()
        self.watcher = Watcher(
            self, Planner(self, self.writer, self.roots), config.watch.backend, self.roots
        )
        self.relinker = Relinker(self.writer, self.roots.snapshot, config.identity.match_window)
        self.hasher = Hasher(
            self.writer,
            self.roots.snapshot,
            max_bytes_per_s=config.hash.max_mb_per_s * 1e6,
            stop=self.stopping,
        )
        self.availability = Availability(
            self, self.roots, self.writer, config.sweep.mount_check_interval, self.stopping
        )
        self.scheduler = Scheduler(
            roots=self.roots,
            jobs=self.jobs,
            writer=self.writer,
            checks=self.availability,
            relinker=self.relinker,
            mode_of=self.watcher.mode_of,
            after_sweep=self.hasher.poke,
            config=config.sweep,
            stop=self.stopping,
        )
        self.retention = Retention(self.writer, config.retention, config.identity, self.stopping)
        self.health = Health(
            roots=self.roots,
            jobs=self.jobs,
            writer=self.writer,
            watching=self.watcher,
            catching_up=self.scheduler,
            hasher=self.hasher,
            relinker=self.relinker,
        )
        self.syncer = Syncer(
            roots=self.roots,
            jobs=self.jobs,
            sweeps=self.scheduler,
            checks=self.availability,
            cookies=self.watcher,
            started=self.started,
        )
        self.api = Api(
            writer=self.writer,
            roots=self.roots,
            jobs=self.jobs,
            sweeps=self.scheduler,
            checks=self.availability,
            syncs=self.syncer,
            status=self.health,
        )
        self.server: Server | None = None
        self.metrics: Metrics | None = None
        self.notifier = Notifier()
        self._reader: apsw.Connection | None = None
        self._signals = 0
        self._wake = threading.Event()
        self._reload_requested = False

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        pin_malloc_threshold()
        catalog.limit_memory()
        log.info(
            "daemon.start",
            version=__version__,
            pid=os.getpid(),
            catalog=str(self.db_path),
            roots=[str(r.path) for r in self.config.roots],
            config=str(self.config.source) if self.config.source else None,
        )
        self.writer.start()
        self._reader = self.writer.catalog.reader()
        for rc in self.config.roots:
            path = os.fsencode(rc.path)
            root_id = self.writer.call(partial(catalog.ensure_root, path=path))
            self.roots.add(Root.make(root_id, rc))
        self._start_server()
        self._start_metrics()
        self.relinker.start_at(catalog.last_seq(self._reader_conn()))
        self.watcher.start()
        for root in self.roots:
            self.availability.load(root, self._reader_conn())
        for root in self.roots:
            # Online ones get their watch and a first full sweep; a root coming
            # back gets the same from root_online, so both are idempotent.
            if self.availability.refresh(root, self._reader_conn()) is None:
                self.root_online(root)
        self.scheduler.start()
        self.availability.start()
        self.hasher.apply(self.config.hash)
        for trouble, part in (
            ("event aggregator stopped", self.watcher.aggregator),
            ("mount checker stopped", self.availability),
            ("sweep scheduler stopped", self.scheduler),
        ):
            self.health.needs(trouble, part.is_alive)
        self.started.set()
        log.info(
            "daemon.ready",
            roots=len(self.roots),
            socket=str(self.config.daemon.socket),
            watched=len(self.watcher.watched_roots()),
        )

    def _start_server(self) -> None:
        cfg = self.config.daemon
        passed = listen_socket()  # socket activation: systemd made it, and keeps the path
        sock = passed or bind_unix_socket(cfg.socket, cfg.socket_mode, cfg.socket_group)
        self.server = Server(
            self.api,
            sock,
            admin=AdminCheck(cfg.admin_group),
            request_timeout=cfg.client_request_timeout,
            idle_timeout=cfg.client_idle_timeout,
            owns_path=None if passed else cfg.socket,
        )
        self.server.start()
        self.health.needs("socket server stopped", self.server.alive)

    def _start_metrics(self) -> None:
        self.metrics = Metrics(self.api, self.writer.seq)
        self.api.scrape = self.metrics.text
        listen = self.config.http_listen()
        if listen is not None:
            pages = Web(self.api) if self.config.web.enabled else None
            if pages is not None and listen[0] != "unix" and not _loopback(listen[0]):
                log.warning("web.insecure", address=f"{listen[0]}:{listen[1]}")
            try:
                self.metrics.serve(*listen, pages=pages)
            except OSError as exc:
                raise FilewardenError(
                    f"[metrics] listen = {listen[0]}:{listen[1]}: {exc.strerror or exc}"
                ) from None

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
        self._install_signals()
        failure: str | None = None
        try:
            try:
                self.start()
            except FilewardenError as exc:
                failure = str(exc)
                return 1
            self.retention.start()  # at start, then every check_interval
            self.notifier.ready(self.health.status_line(self._reader_conn()))
            tick = min(1.0, (self.notifier.watchdog_interval or 2.0) / 4)
            last_status = ""
            while not self.stopping.is_set():
                self._wake.wait(tick)
                self._wake.clear()
                if self.stopping.is_set():
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload()
                if not self.writer.alive():
                    failure = "catalog writer died"
                    return 1
                self._check_watcher()
                self.scheduler.catch_up_after_write_failures()
                trouble = self.health.unhealthy(self.notifier.watchdog_interval)
                if trouble is None:
                    self.notifier.watchdog()
                elif self.notifier.watchdog_interval is not None:
                    log.error("daemon.unhealthy", reason=trouble, watchdog="not pinged")
                line = self.health.status_line(self._reader_conn())
                if line != last_status:
                    self.notifier.status(line)
                    last_status = line
        finally:
            self.stop(failure)
        return 0

    def reload(self) -> None:
        """SIGHUP: read the config file again and apply what changed; a bad file changes nothing."""
        self.notifier.reloading()
        try:
            source = self.config.source
            if source is None:
                log.warning(
                    "daemon.reload", error="started without a config file: nothing to reload"
                )
                return
            try:
                new = config_mod.load(source)
            except ConfigError as exc:
                log.error("daemon.reload", error=str(exc), kept="the running config")
                return
            if self.fixed_roots:
                new = config_mod.with_roots(new, [r.path for r in self.config.roots])
            if self.fixed_log:
                new = dataclasses.replace(new, log=dataclasses.replace(new.log, **self.fixed_log))  # type: ignore[arg-type]
            changes = self._apply(new)
            log.info("daemon.reload", config=str(source), changes=changes or ["nothing changed"])
        finally:
            self.notifier.ready(self.health.status_line(self._reader_conn()))

    def _apply(self, new: Config) -> list[str]:
        """Hand each part its new section; add, remove and change roots. Returns what changed."""
        old, changes = self.config, []
        for name in ("log", "sweep", "hash", "retention", "identity"):
            if getattr(old, name) != getattr(new, name):
                changes.append(f"[{name}] changed")
        for name in ("daemon", "watch", "metrics", "web"):
            if getattr(old, name) != getattr(new, name):
                changes.append(f"[{name}] changed: takes effect at the next restart")
        self.config = dataclasses.replace(
            new, daemon=old.daemon, watch=old.watch, metrics=old.metrics, web=old.web
        )
        if old.log != new.log:
            logs.configure(new.log)
        self.hasher.apply(new.hash)
        self.relinker.apply(new.identity)
        self.retention.apply(new.retention, new.identity)
        self.availability.apply(new.sweep)
        current = {r.config.path: r for r in self.roots}
        wanted = {rc.path: rc for rc in new.roots}
        for path, root in current.items():
            if path not in wanted or wanted[path] != root.config:
                self._remove_root(root)
                changes.append(f"root {path} {'removed' if path not in wanted else 'changed'}")
        for path, rc in wanted.items():
            if path not in current or current[path].config != rc:
                self._add_root(rc)
                if path not in current:
                    changes.append(f"root {path} added")
        self.scheduler.apply(new.sweep)  # new intervals count from now
        return changes

    def _add_root(self, rc: RootConfig) -> Root:
        path = os.fsencode(rc.path)
        root_id = self.writer.call(partial(catalog.ensure_root, path=path))
        root = Root.make(root_id, rc)
        self.roots.add(root)
        self.availability.load(root, self._reader_conn())
        if self.availability.refresh(root, self._reader_conn()) is None:
            self.root_online(root)
        return root

    def _remove_root(self, root: Root) -> None:
        self.watcher.remove(root)
        self.roots.remove(root.id)  # its due times go with the scheduler.apply() that follows

    def stop(self, failure: str | None = None) -> None:
        """Stop every part within the deadline; ``failure``: why, when it is not a clean exit."""
        # One deadline for everything: only the writer's open transaction
        # must finish; the other threads are daemons and may be left behind.
        deadline = time.monotonic() + STOP_DEADLINE
        self.notifier.stopping()
        self.stopping.set()
        self.retention.stop()
        if self.server is not None:
            self.server.stop(timeout=1.0)
        if self.metrics is not None:
            self.metrics.close()
        self.watcher.stop(timeout=1.0)
        self.hasher.poke()  # it sees the stop at once instead of after its idle wait
        self.scheduler.wake()
        if self.scheduler.is_alive():
            self.scheduler.join(max(0.0, min(1.0, deadline - time.monotonic() - 1.5)))
        if self.writer.alive():
            self.writer.stop(deadline)
        if self.hasher.is_alive():  # it may be reading a large file: never past the deadline
            self.hasher.join(max(0.0, min(0.5, deadline - time.monotonic())))
        if self._reader is not None:
            self._reader.close()
        uptime = round(time.time() - self.health.started_at, 3)
        if failure is None:
            log.info("daemon.stop", uptime_s=uptime)
        else:
            log.critical("daemon.stop", reason=failure, uptime_s=uptime)

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if signum == signal.SIGHUP:
                self._reload_requested = True
            else:
                self._signals += 1
                if signum == signal.SIGINT and self._signals > 1:
                    os._exit(130)  # the user insists
                self.stopping.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)

    def _reader_conn(self) -> apsw.Connection:
        assert self._reader is not None, "started"
        return self._reader

    # -- what the mount checker tells: availability.Host ------------------------------

    def root_online(self, root: Root) -> None:
        if root.id not in self.watcher.modes:
            self.watcher.add(root)
        self.scheduler.reschedule(root.id)
        self.scheduler.request(root, full=True)

    def root_offline(self, root: Root, reason: str) -> None:
        # A watch on an unmounted filesystem hears nothing ever again (not even
        # after a remount): drop it; root_online watches afresh.
        self.watcher.remove(root)

    # -- what the watcher tells: aggregator.Host ------------------------------------------

    def after_batch(self, reader: apsw.Connection) -> None:
        """Live changes were committed: relink what came back (rule 2), hash what is new."""
        self.relinker.catch_up(reader)
        self.hasher.poke()

    def on_overflow(self, root: Root | None) -> list[threading.Event]:
        """Events were lost: sweep what they were about (all watched roots if unknown).

        Returns the sweeps' end events; syncs wait for them.
        """
        roots = [root] if root is not None else self.watcher.watched_roots()
        ends = []
        for r in roots:
            self.health.events_lost(r)
            log.warning("watcher.overflow", root=r.display, action="full sweep")
            ends.append(self.scheduler.request(r, full=True).finished_event)
        return ends

    def on_watch_limit(self, root: Root, path: bytes) -> list[threading.Event]:
        """A directory below a watched root was refused a watch: poll the root from now on.

        Returns the end event of the full sweep that catches up; syncs wait for it.
        """
        why = (
            f"{os.fsdecode(path)} could not be watched (inotify watch limit);"
            " raise fs.inotify.max_user_watches and restart"
        )
        if not self.watcher.to_poll(root, why):
            return []
        log.error("watcher.limit", root=root.display, error=why)
        self.scheduler.reschedule(root.id)
        return [self.scheduler.request(root, full=True).finished_event]

    def on_unmount(self, path: bytes) -> None:
        for root in self.roots:
            if root.path == path or path.startswith(root.path + b"/"):
                self.availability.refresh(root, self._reader_conn())

    def on_hint_failed(self, root: Root, error: str) -> None:
        self.scheduler.request(root, full=True)

    def _check_watcher(self) -> None:
        """A dead backend is restarted (with backoff) and its roots swept: events may be lost."""
        for root in self.watcher.revive():
            self.scheduler.request(root, full=True)


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
