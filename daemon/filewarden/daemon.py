"""The daemon's lifecycle: start, run, stop, as separate steps.

Signal handlers only set flags; a second SIGINT forces the exit. Stopping
has a deadline: the writer finishes its open transaction and the process
exits 0 within five seconds of SIGTERM.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import threading
import time
from functools import partial
from types import FrameType
from typing import Any

import apsw

from filewarden import __version__, catalog, logs, protocol
from filewarden import config as config_mod
from filewarden.api import Api
from filewarden.availability import Availability
from filewarden.config import Config, RootConfig
from filewarden.errors import ConfigError, FilewardenError
from filewarden.hasher import Hasher
from filewarden.identity import Relinker
from filewarden.jobs import Job, JobTable
from filewarden.live import Planner
from filewarden.notify import Notifier, listen_socket
from filewarden.roots import Root
from filewarden.scheduler import Scheduler
from filewarden.server import AdminCheck, Server, bind_unix_socket
from filewarden.sweep import Sweep, SweepAborted
from filewarden.watch import Watcher, wait_all
from filewarden.writer import Writer

log = logs.get("filewarden.daemon")

STOP_DEADLINE = 4.0  # seconds from SIGTERM to exit, leaving a margin under 5 s
PURGE_CHUNK = 5000
WRITE_RETRY_SECONDS = 10.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def pin_malloc_threshold() -> bool:
    """Keep blocks of 128 KiB and more in mappings of their own, given back when freed.

    glibc raises its threshold to the size of each such block freed, up to
    32 MiB. After the first few megabyte answers (a ``list`` of 10,000
    files, an oversize request line) later ones are carved from the heaps,
    between small blocks that live on (SQLite's pages), and the holes they
    leave are kept: the soak drill's daemon grew by about 15 MB of free heap
    per two minutes that way. Pinning the threshold stops the raising. False
    where there is no glibc ``mallopt`` (nothing changes there).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class Daemon:
    """The long-running process: catalog writer, sweeps, and (later) watcher and socket."""

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
        self.writer = Writer(self.db_path)
        self.jobs = JobTable()
        self.roots: dict[int, Root] = {}
        self.started_at = time.time()
        self.scheduler = Scheduler(self)
        self.watcher = Watcher(self, Planner(self, self.db_path), config.watch.backend)
        self.relinker = Relinker(self.writer, self.all_roots, config.identity.match_window)
        self.availability = Availability(
            self, self.writer, config.sweep.mount_check_interval, self.stopping
        )
        self.hasher = Hasher(
            self.writer,
            self.all_roots,
            max_bytes_per_s=config.hash.max_mb_per_s * 1e6,
            stop=self.stopping,
        )
        self.api = Api(self)
        self._overflows: dict[int, float] = {}  # root id → when its events were last lost
        self._watch_backoff = 1.0
        self._watch_retry_at = 0.0
        self.server: Server | None = None
        self.notifier = Notifier()
        self._reader: apsw.Connection | None = None
        self._signals = 0
        self._wake = threading.Event()
        self._reload_requested = False
        self._retaining = threading.Event()
        self._write_retry_at = 0.0
        self._failures_seen = 0
        self._catch_up: set[int] = set()  # roots to sweep fully after failed writes
        self._degraded_since: float | None = None

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
        self._reader = catalog.connect(self.db_path, readonly=True)
        for rc in self.config.roots:
            path = os.fsencode(rc.path)
            root_id = self.writer.call(partial(catalog.ensure_root, path=path))
            self.roots[root_id] = Root.make(root_id, rc)
        self._start_server()
        self.relinker.start_at(catalog.last_seq(self._reader_conn()))
        self.watcher.start()
        self.availability.load(self.roots, self._reader_conn())
        for root in self.roots.values():
            # Online ones get their watch and a first full sweep; a root coming
            # back gets the same from root_online, so both are idempotent.
            if self.availability.refresh(root, self._reader_conn()) is None:
                self.root_online(root)
        self.scheduler.start()
        self.availability.start()
        if self.config.hash.enabled:
            self.hasher.start()
        self.started.set()
        log.info(
            "daemon.ready",
            roots=len(self.roots),
            socket=str(self.config.daemon.socket),
            watched=len(self.watcher.watched),
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
            self.notifier.ready(self.status_line())
            tick = min(1.0, (self.notifier.watchdog_interval or 2.0) / 4)
            last_status = ""
            next_retention = time.monotonic()  # at start, then every check_interval
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
                self._retry_after_write_failure()
                if time.monotonic() >= next_retention and not self._retaining.is_set():
                    next_retention = time.monotonic() + self.config.retention.check_interval
                    self._retaining.set()
                    threading.Thread(
                        target=self._run_retention, name="filewarden-retention", daemon=True
                    ).start()
                trouble = self.unhealthy()
                if trouble is None:
                    self.notifier.watchdog()
                elif self.notifier.watchdog_interval is not None:
                    log.error("daemon.unhealthy", reason=trouble, watchdog="not pinged")
                line = self.status_line()
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
            self.notifier.ready(self.status_line())

    def _apply(self, new: Config) -> list[str]:
        old, changes = self.config, []
        for name in ("log", "sweep", "hash", "retention", "identity"):
            if getattr(old, name) != getattr(new, name):
                changes.append(f"[{name}] changed")
        for name in ("daemon", "watch"):
            if getattr(old, name) != getattr(new, name):
                changes.append(f"[{name}] changed: takes effect at the next restart")
        self.config = dataclasses.replace(new, daemon=old.daemon, watch=old.watch)
        if old.log != new.log:
            logs.configure(new.log)
        self.hasher.max_bytes_per_s = new.hash.max_mb_per_s * 1e6
        self.hasher.enabled = new.hash.enabled
        if new.hash.enabled and not self.hasher.is_alive() and self.hasher.ident is None:
            self.hasher.start()  # it was off at start
        self.hasher.poke()
        self.relinker.window = new.identity.match_window
        current = {r.config.path: r for r in self.roots.values()}
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
        for root_id in self.roots:
            self.scheduler.reschedule(root_id)  # new intervals count from now
        return changes

    def _add_root(self, rc: RootConfig) -> Root:
        path = os.fsencode(rc.path)
        root_id = self.writer.call(partial(catalog.ensure_root, path=path))
        root = Root.make(root_id, rc)
        # Copy on write: other threads iterate the dict they were handed.
        self.roots = {**self.roots, root_id: root}
        self.availability.add(root, self._reader_conn())
        if self.availability.refresh(root, self._reader_conn()) is None:
            self.root_online(root)
        return root

    def _remove_root(self, root: Root) -> None:
        self.watcher.remove(root)
        self.availability.remove(root)
        self.roots = {k: v for k, v in self.roots.items() if k != root.id}
        self.scheduler.reschedule(root.id)

    def unhealthy(self) -> str | None:
        """Why the service watchdog must not be pinged now, or None when all is well.

        A writer stuck in one batch, or a dead server, watcher or mount
        checker: systemd then restarts the daemon (WatchdogSec).
        """
        busy = self.writer.busy_since
        stuck_after = max(10.0, (self.notifier.watchdog_interval or 20.0) / 2)
        if busy is not None and time.monotonic() - busy > stuck_after:
            return f"catalog writer busy for {time.monotonic() - busy:.0f} s"
        if self.server is not None and not self.server.alive():
            return "socket server stopped"
        if not self.watcher.aggregator.is_alive():
            return "event aggregator stopped"
        if not self.availability.is_alive():
            return "mount checker stopped"
        if not self.scheduler.is_alive():
            return "sweep scheduler stopped"
        return None

    def status_line(self) -> str:
        """One line for systemd's STATUS=: roots, counts, what the daemon is doing."""
        rows = catalog.all_roots(self._reader_conn())
        configured = {r.id for r in self.roots.values()}
        online = sum(1 for r in rows if r.id in configured and r.state == "online")
        present, missing, offline = catalog.totals(self._reader_conn())
        doing = "idle"
        for job in self.jobs.active():
            if job.state == "running":
                total = f"/{job.total}" if job.total is not None else ""
                what = "indexing" if job.total is None else f"{job.kind} sweep"
                doing = f"{what} {job.root}: {job.done}{total}"
                break
        return (
            f"{online} of {len(configured)} roots online; {present} present, {missing} missing,"
            f" {offline} offline; {doing}"
        )

    def stop(self, failure: str | None = None) -> None:
        """Stop every part within the deadline; ``failure``: why, when it is not a clean exit."""
        # One deadline for everything: only the writer's open transaction
        # must finish; the other threads are daemons and may be left behind.
        deadline = time.monotonic() + STOP_DEADLINE
        self.notifier.stopping()
        self.stopping.set()
        if self.server is not None:
            self.server.stop(timeout=1.0)
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
        uptime = round(time.time() - self.started_at, 3)
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

    # -- work ------------------------------------------------------------

    # -- what the API asks of the daemon ------------------------------------------

    def root_problem(self, root: Root) -> str | None:
        """Why ``root`` is unusable now (offline), or None."""
        return self.availability.problem(root)

    def root_online(self, root: Root) -> None:
        if root.id not in self.watcher.modes:
            self.watcher.add(root)
        self.scheduler.reschedule(root.id)
        self.scheduler.request(root, full=True)

    def root_offline(self, root: Root, reason: str) -> None:
        # A watch on an unmounted filesystem hears nothing ever again (not even
        # after a remount): drop it; root_online watches afresh.
        self.watcher.remove(root)

    def accept_root(self, root: Root) -> str | None:
        """The filesystem now at ``root`` is the library: record it as the root's volume."""
        return self.availability.accept(root, self._reader_conn())

    def backend_of(self, root: Root) -> str:
        """How changes under a root reach the catalog: a watcher backend, or poll."""
        return self.watcher.backend_of(root)

    def mode_of(self, root: Root) -> str:
        return self.watcher.mode_of(root)

    def root_warnings(self, root: Root) -> list[str]:
        found = [
            f"last sweep {j.state}: {j.error}" for j in self.jobs.recent_failures(root.display)
        ]
        why = self.watcher.why_polled(root)
        if why and root.config.mode != "poll":
            found.append(f"polled, not watched: {why}")
        lost = self._overflows.get(root.id)
        if lost is not None and time.time() - lost < 86400:
            found.append(
                f"watcher events were lost (queue overflow) at {protocol.rfc3339(lost)}; re-swept"
            )
        return found

    # -- what the watcher asks of the daemon ---------------------------------------

    def watched_roots(self) -> list[Root]:
        return self.watcher.watched_roots()

    def all_roots(self) -> dict[int, Root]:
        return dict(self.roots)

    def after_batch(self, reader: apsw.Connection) -> None:
        """Live changes were committed: relink what came back (rule 2), hash what is new."""
        self.relinker.catch_up(reader)
        self.hasher.poke()

    def on_overflow(self, root: Root | None) -> list[threading.Event]:
        """Events were lost: sweep what they were about (all watched roots if unknown).

        Returns the sweeps' end events; syncs wait for them.
        """
        roots = [root] if root is not None else self.watcher.watched_roots()
        now = time.time()
        ends = []
        for r in roots:
            self._overflows[r.id] = now
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
        for root in self.roots.values():
            if root.path == path or path.startswith(root.path + b"/"):
                self.availability.refresh(root, self._reader_conn())

    def on_hint_failed(self, root: Root, error: str) -> None:
        self.scheduler.request(root, full=True)

    def _check_watcher(self) -> None:
        """A dead observer is restarted (with backoff) and its roots swept: events may be lost."""
        if self.watcher.alive() or time.monotonic() < self._watch_retry_at:
            if self.watcher.alive():
                self._watch_backoff = 1.0
            return
        log.error(
            "watcher.error", error="watcher stopped; restarting it", backoff_s=self._watch_backoff
        )
        self._watch_retry_at = time.monotonic() + self._watch_backoff
        self._watch_backoff = min(self._watch_backoff * 2, 60.0)
        for root in self.watcher.restart_backend():
            self.scheduler.request(root, full=True)

    @staticmethod
    def memory() -> dict[str, int | None]:
        """The process's resident memory and SQLite's share of it, in KiB (``status``'s ``memory``).

        ``rss_kib`` is None where there is no ``/proc``.
        """
        try:
            with open("/proc/self/statm", "rb") as f:
                pages = int(f.read().split()[1])
            rss: int | None = pages * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, ValueError, IndexError):
            rss = None
        sqlite, budget = catalog.memory_kib()
        return {"rss_kib": rss, "sqlite_kib": sqlite, "sqlite_budget_kib": budget}

    def hashing(self) -> dict[str, object]:
        """Background hashing progress for status."""
        h = self.hasher
        return {
            "enabled": self.config.hash.enabled,
            "hashed": h.hashed,
            "bytes": h.bytes,
            "busy": h.busy,
            "relinked_by_hash": self.relinker.relinked,
            "hashed_to_relink": self.relinker.hashed,
        }

    def warnings(self) -> list[str]:
        found = []
        if self.writer.last_error:
            found.append(f"catalog writes failing: {self.writer.last_error}")
        if self._degraded_since is not None:
            found.append(
                f"degraded since {protocol.rfc3339(self._degraded_since)}: catalog writes failed;"
                " catching up with full sweeps"
            )
        return found

    def sync(self, timeout: float) -> bool:
        """Wait until what is on disk now is in the catalog.

        A watched root gets a cookie file, and the answer waits for its event
        to be applied (with everything the watcher delivered before it); a
        polled root, or one where no cookie can be written, gets a quick
        sweep. Sweeps already queued or running for a root (after an
        overflow, say) are waited for too. The socket answers before the
        roots are watched: a sync then first waits for start-up to queue the
        start-up sweeps, and then for them (what changed while the daemon was
        down is only known after them).
        """
        deadline = time.monotonic() + timeout
        if not self.started.wait(timeout):
            return False
        timeout = max(0.0, deadline - time.monotonic())
        waits: list[threading.Event] = []
        cookies: list[bytes] = []
        for root in self.roots.values():
            if self.root_problem(root):
                continue
            waits += [j.finished_event for j in self.jobs.active() if j.root == root.display]
            cookie = self.watcher.cookie(root)
            if cookie is None:
                waits.append(self.scheduler.request(root, full=False).finished_event)
            else:
                cookies.append(cookie[0])
                waits.append(cookie[1])
        try:
            return wait_all(waits, timeout)
        finally:
            for path in cookies:
                self.watcher.aggregator.forget_cookie(path)
                Watcher.drop_cookie(path)

    def purge(
        self,
        reader: apsw.Connection,
        *,
        ids: list[int] | None,
        cutoff: float | None,
        uid: int | None,
    ) -> dict[str, object]:
        """Delete missing files for good: these ids, those missing since before ``cutoff``, or all.

        ``reader`` is the calling thread's read connection. ``uid`` is who
        asked; None is the retention policy. Done in chunks, so a purge of a
        million files never holds the writer in one transaction.
        """
        if ids is None:
            ids = (
                catalog.missing_before(reader, cutoff)
                if cutoff is not None
                else catalog.all_missing(reader)
            )
        detail: dict[str, Any] = {"by_uid": uid} if uid is not None else {"by": "retention"}
        purged: list[catalog.FileRow] = []
        refused: list[dict[str, object]] = []
        for start in range(0, len(ids), PURGE_CHUNK):
            chunk = ids[start : start + PURGE_CHUNK]
            now = time.time()

            def job(conn: apsw.Connection, chunk: list[int] = chunk, now: float = now) -> None:
                for file_id in chunk:
                    row = catalog.purge(conn, file_id, now, detail)
                    if row is not None:
                        purged.append(row)
                        continue
                    other = catalog.get_file(conn, file_id)
                    reason = (
                        "no such file"
                        if other is None
                        else f"file is {other.state}; only missing files are purged"
                    )
                    refused.append({"id": file_id, "reason": reason})

            self.writer.call(job)
        for row in purged:
            root_path = self.api.root_path(row.root)
            log.info(
                "file.purge",
                id=row.id,
                root=root_path,
                path=root_path + b"/" + row.path,
                missing_since=protocol.rfc3339(row.missing_since),
                **detail,
            )
        return {"purged": len(purged), "refused": refused}

    def _retry_after_write_failure(self) -> None:
        """After catalog writes failed (a full disk), what was lost is found by full sweeps:
        one every little while per root until each has committed (there is room again)."""
        if self.writer.failures > self._failures_seen:
            self._failures_seen = self.writer.failures
            self._catch_up = set(self.roots)
            self._degraded_since = self._degraded_since or time.time()
        self._catch_up &= set(self.roots)
        if not self._catch_up:
            self._degraded_since = None
            return
        now = time.monotonic()
        if now < self._write_retry_at:
            return
        self._write_retry_at = now + WRITE_RETRY_SECONDS
        log.warning(
            "catalog.retry",
            error=self.writer.last_error or "earlier writes failed",
            action="full sweeps to catch up",
        )
        for root_id in self._catch_up:
            self.scheduler.request(self.roots[root_id], full=True)

    def _run_retention(self) -> None:
        try:
            self.retention()
        except Exception as exc:  # the next interval tries again
            log.error("retention.error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._retaining.clear()

    def retention(self) -> None:
        """Apply ``[retention]``: purge files missing too long, compact the journal."""
        cfg = self.config.retention
        now = time.time()
        if cfg.purge_missing_after is not None:
            # Its own thread (see run), so its own read connection.
            reader = catalog.connect(self.db_path, readonly=True)
            try:
                result = self.purge(
                    reader, ids=None, cutoff=now - cfg.purge_missing_after, uid=None
                )
            finally:
                reader.close()
            if result["purged"]:
                log.info(
                    "retention.purge", purged=result["purged"], older_than_s=cfg.purge_missing_after
                )
        # Arrivals older than the window can no longer be the copy half of a move.
        window = self.config.identity.match_window
        self.writer.call(lambda c: catalog.prune_arrivals(c, now - window))
        if cfg.journal_keep is not None:
            removed = self.writer.call(lambda c: catalog.compact_journal(c, now - cfg.journal_keep))  # type: ignore[operator]
            if removed:
                log.info(
                    "journal.compact", removed=removed, kept_days=round(cfg.journal_keep / 86400, 2)
                )

    def _reader_conn(self) -> apsw.Connection:
        assert self._reader is not None, "started"
        return self._reader

    def sweep(self, root: Root, *, full: bool, job: Job, reader: apsw.Connection) -> None:
        """Run one sweep of ``root`` in the calling thread (with its ``reader``), tracked by ``job``."""
        problem = self.availability.refresh(root, reader)
        if problem:
            self.jobs.close(job, "aborted", error=f"root offline: {problem}")
            return
        sweep = Sweep(
            root,
            self.writer,
            full=full,
            stop=self.stopping,
            batch_files=self.config.sweep.batch_files,
            root_ok=self.root_problem,
            progress=job,
            roots=self.all_roots(),
            relinker=self.relinker,
        )
        job.state, job.started = "running", time.time()
        try:
            tally = sweep.run()
        except SweepAborted as exc:
            job.counts = dataclasses.asdict(sweep.tally)
            self.jobs.close(job, "aborted", error=str(exc))
            self.availability.refresh(root, reader)
            return
        except Exception as exc:  # a bug must not end the sweeps of other roots
            log.exception("sweep.error", root=root.display, error=str(exc))
            self.jobs.close(job, "failed", error=f"{type(exc).__name__}: {exc}")
            return
        job.counts = dataclasses.asdict(tally)
        self.jobs.close(job, "done")
        if full and self.writer.failures == self._failures_seen:
            self._catch_up.discard(root.id)
            if not self._catch_up:
                self._degraded_since = None
        self.hasher.poke()
