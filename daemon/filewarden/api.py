"""The socket methods: what each JSON-RPC call reads or asks the writer to do.

Reads go through a read connection of the calling thread (WAL: they never
wait for the writer). Changes go through the writer and are answered after
their commit. Every method validates its params and raises
:class:`filewarden.protocol.RpcError` with the contract's codes.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Protocol

import apsw

from filewarden import __version__, catalog, listing, logs, protocol, reconcile
from filewarden.catalog import FileRow
from filewarden.config import parse_duration
from filewarden.errors import Fault, classify
from filewarden.jobs import Job, JobTable
from filewarden.protocol import (
    NOT_FOUND,
    PERMISSION_DENIED,
    UNAVAILABLE,
    RpcError,
    bounded,
    check_params,
    invalid_params,
)
from filewarden.purge import purge_missing
from filewarden.roots import Root, RootSet
from filewarden.writer import Writer

log = logs.get("filewarden.api")

LIST_DEFAULT, LIST_MAX = 1000, 10_000
LOOKUP_MANY = 10_000  # paths or ids in one bulk lookup
MAX_WAIT = 300.0  # seconds a changes call may be held
FEED_BATCH = 1000  # journal entries a subscription reads at a time
ANSWERS_KEPT = 64  # distinct changes answers shared until the next commit
MAX_KEY, MAX_VALUE = 256, 65_536
WORKER_CACHE_KIB = 2000  # page cache per server worker's read connection (catalog's default: 4 MB)


@dataclasses.dataclass(frozen=True)
class Peer:
    """Who is at the other end of a connection (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    admin: bool


class Sweeps(Protocol):
    """Queues sweeps (:class:`filewarden.scheduler.Scheduler`)."""

    def request(self, root: Root, *, full: bool) -> Job: ...


class Checks(Protocol):
    """Whether a root is usable (:class:`filewarden.availability.Availability`)."""

    def problem(self, root: Root) -> str | None: ...
    def accept(self, root: Root, reader: apsw.Connection) -> str | None: ...


class Syncs(Protocol):
    """Waits until what is on disk now is in the catalog (:class:`filewarden.watch.sync.Syncer`)."""

    def sync(self, timeout: float) -> bool: ...


class Status(Protocol):
    """The daemon's vital signs (:class:`filewarden.health.Health`)."""

    def root(self, root: Root) -> dict[str, Any]: ...
    def daemon(self) -> dict[str, Any]: ...


class Api:
    """The method table of the contract, over the parts it is handed."""

    def __init__(
        self,
        *,
        writer: Writer,
        roots: RootSet,
        jobs: JobTable,
        sweeps: Sweeps,
        checks: Checks,
        syncs: Syncs,
        status: Status,
    ) -> None:
        self.writer = writer
        self.roots = roots
        self.jobs_table = jobs
        self.sweeps = sweeps
        self.checks = checks
        self.syncs = syncs
        self.health = status
        self._local = threading.local()
        self._root_paths: dict[int, bytes] = {}
        # changes answers since the last commit, by params (see cached_changes).
        self._answers: dict[tuple[Any, ...], protocol.Encoded] = {}
        self._batches: dict[tuple[Any, ...], FeedBatch] = {}  # the same, for subscriptions
        self._answers_seq = -1
        self._answers_lock = threading.Lock()
        # The socket server's own counts (clients, calls held), once it is serving.
        self.serving: Callable[[], dict[str, int]] | None = None
        self.methods: dict[str, Callable[[dict[str, Any], Peer], Any]] = {
            "status": self.status,
            "sync": self.sync,
            "lookup": self.lookup,
            "file": self.file,
            "list": self.list,
            "changes": self.changes,
            "scan": self.scan,
            "jobs": self.jobs,
            "annotate": self.annotate,
            "purge": self.purge,
            "accept_root": self.accept_root,
            "candidates": self.candidates,
            "relink": self.relink,
            "metrics": self.metrics,
            "web_token": self.web_token,
            "ship_report": self.ship_report,
        }
        # What the shipper (`filewarden ship`) last told of itself (see ship_report).
        self._shipped: dict[str, Any] | None = None
        # The Prometheus text of one scrape (set by the daemon; None in bare tests).
        self.scrape: Callable[[], str] | None = None

    # -- plumbing --------------------------------------------------------------

    @functools.cached_property
    def instance(self) -> str:
        """The catalog's instance UUID (it never changes while the catalog exists)."""
        return catalog.instance(self.reader())

    @functools.cached_property
    def host(self) -> str:
        """The host's UUID in a fleet (made once with the catalog)."""
        return catalog.host(self.reader())

    def reader(self) -> apsw.Connection:
        """This thread's read connection (one per server worker thread).

        Up to 68 threads may each hold one, so each keeps a small page cache:
        a query touches a few pages, and the OS page cache holds the rest.
        """
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.writer.catalog.reader(cache_kib=WORKER_CACHE_KIB)
            self._local.conn = conn
        return conn

    def close_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self, job: Callable[[apsw.Connection], Any], timeout: float = 60) -> Any:
        try:
            return self.writer.call(job, timeout)
        except TimeoutError:
            raise RpcError(UNAVAILABLE, "the catalog writer is busy; try again") from None
        except apsw.Error as exc:
            raise RpcError(UNAVAILABLE, f"catalog write failed: {exc}") from None

    def root_path(self, root_id: int) -> bytes:
        """The path of a root by id, also for roots no longer configured."""
        path = self._root_paths.get(root_id)
        if path is None:
            self._root_paths = {r.id: r.path for r in catalog.all_roots(self.reader())}
            path = self._root_paths.get(root_id, b"")
        return path

    def resolve(self, path: bytes) -> tuple[Root, bytes] | None:
        """The configured root holding absolute ``path`` and the path relative to it."""
        if not path.startswith(b"/"):
            raise invalid_params("path must be absolute")
        # An excluded path still answers with what the catalog holds there.
        return listing.resolve(os.path.normpath(path), self.roots, keep_excluded=True)

    def records(self, rows: Iterable[FileRow | None]) -> Iterator[dict[str, Any] | None]:
        """Records of many rows (None stays None), with three queries for all of them:
        their roots' sweeps, annotations and fingerprints (a page of ``list``)."""
        rows = builtins.list(rows)
        conn, swept = self.reader(), self._swept()
        ids = [row.id for row in rows if row is not None]
        notes, media = catalog.annotations_of(conn, ids), catalog.media_of(conn, ids)
        for row in rows:
            yield None if row is None else self.record(row, swept, notes, media)

    def record(
        self,
        row: FileRow,
        swept: Mapping[int, float | None] | None = None,
        notes: Mapping[int, dict[str, str]] | None = None,
        media: Mapping[int, catalog.Media] | None = None,
    ) -> dict[str, Any]:
        """A file record as the contract shapes it.

        ``swept`` maps root ids to their last sweep, ``notes`` and ``media``
        ids to their annotations and fingerprints (read once for many
        records: see :meth:`records`).
        """
        conn = self.reader()
        root_path = self.root_path(row.root)
        if swept is None:
            swept = self._swept()
        last_seen = row.last_seen
        last_sweep = swept.get(row.root)
        # Present files are confirmed by every sweep without a write each:
        # the root's last sweep is when they were last seen.
        if row.state == catalog.PRESENT and last_sweep is not None and last_sweep > last_seen:
            last_seen = last_sweep
        return {
            "id": row.id,
            "root": os.fsdecode(root_path),
            **protocol.path_fields(root_path + b"/" + row.path),
            "state": row.state,
            "size": row.size,
            "mtime_ns": row.mtime_ns,
            "device": row.device,
            "inode": row.inode,
            "hash": protocol.hash_hex(row.hash),
            "first_seen": protocol.rfc3339(row.first_seen),
            "last_seen": protocol.rfc3339(last_seen),
            "missing_since": protocol.rfc3339(row.missing_since),
            "missing_reason": row.missing_reason,
            "annotations": (
                catalog.get_annotations(conn, row.id) if notes is None else notes.get(row.id, {})
            ),
            "fingerprint": _fingerprint(
                catalog.get_media(conn, row.id) if media is None else media.get(row.id)
            ),
        }

    def _swept(self) -> dict[int, float | None]:
        return {r.id: r.last_sweep for r in catalog.all_roots(self.reader())}

    def _file_or_404(self, file_id: Any) -> FileRow:
        row = catalog.get_file(self.reader(), file_id)
        if row is None:
            raise RpcError(NOT_FOUND, f"no file with id {file_id}")
        return row

    def _root_by_path(self, text: str) -> Root:
        root = self.roots.by_path(os.path.normpath(text.encode("utf-8", "surrogateescape")))
        if root is None:
            raise RpcError(NOT_FOUND, f"no configured root {text!r}")
        return root

    # -- methods ------------------------------------------------------------------

    def status(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(params, {})
        conn = self.reader()
        rows = {r.id: r for r in catalog.all_roots(conn)}
        roots = []
        for root in self.roots:
            row = rows.get(root.id)
            if row is None:
                continue
            watching = self.health.root(root)
            roots.append(
                {
                    "path": root.display,
                    "state": row.state,
                    "reason": row.state_reason,
                    "since": protocol.rfc3339(row.state_since),
                    "mode": watching["mode"],
                    "backend": watching["backend"],
                    "files": {
                        "present": row.present,
                        "missing": row.missing,
                        "offline": row.offline,
                    },
                    "last_sweep": protocol.rfc3339(row.last_sweep),
                    "last_full_sweep": protocol.rfc3339(row.last_full_sweep),
                    "warnings": watching["warnings"],
                }
            )
        configured = {root.id for root in self.roots}
        present = sum(r.present for i, r in rows.items() if i in configured)
        missing = sum(r.missing for i, r in rows.items() if i in configured)
        offline = sum(r.offline for i, r in rows.items() if i in configured)
        # Roots removed from the config whose files are kept until `purge --root`.
        retired = [
            {
                "path": os.fsdecode(r.path),
                "files": {"present": r.present, "missing": r.missing, "offline": r.offline},
            }
            for i, r in rows.items()
            if i not in configured and r.present + r.missing + r.offline
        ]
        daemon = self.health.daemon()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": daemon["uptime_s"],
            "seq": catalog.last_seq(conn),
            "instance": self.instance,
            "host": self.host,
            "roots": roots,
            "totals": {"present": present, "missing": missing, "offline": offline},
            "retired_roots": retired,
            "jobs": daemon["jobs"],
            "hashing": {
                **daemon["hashing"],
                "pending": catalog.count_unhashed(conn),
                "fingerprints": catalog.media_coverage(conn),
            },
            "memory": daemon["memory"],
            "watches": daemon["watches"],
            "socket": self.serving() if self.serving is not None else None,
            "ship": self.ship_lag(conn),
            "warnings": daemon["warnings"],
        }

    def ship_lag(self, conn: apsw.Connection) -> dict[str, Any] | None:
        """The shipper's last report and how far behind the journal it is now (None: no
        shipper has reported since the daemon started). Counted here, not taken from the
        report, so that a shipper that stopped shows a lag that grows."""
        shipped = self._shipped
        if shipped is None:
            return None
        cursor = shipped["cursor"] if shipped["instance"] == self.instance else 0
        behind = catalog.journal_lag(conn, cursor)
        return {
            "target": shipped["target"],
            "host": shipped["host"],
            "cursor": shipped["cursor"],
            "lag_entries": behind[0],
            "lag_seconds": round(max(0.0, time.time() - behind[1]), 3) if behind[1] else 0.0,
            "reported": protocol.rfc3339(shipped["at"]),
            "reported_s_ago": round(time.time() - shipped["at"], 3),
            "error": shipped["error"],
        }

    def ship_report(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The shipper says where it is: the ``cursor`` it committed (in ``instance``), where
        to (``target``), and its ``error`` while it cannot ship. Admin only: the figure
        feeds alerts."""
        check_params(
            params,
            {
                "host": (str, True),
                "instance": (str, True),
                "cursor": (int, True),
                "target": (str, True),
                "error": (str, False),
            },
        )
        if not peer.admin:
            raise RpcError(PERMISSION_DENIED, "ship_report is for root and admins")
        if params["cursor"] < 0:
            raise invalid_params("cursor must be at least 0")
        error = params.get("error")
        self._shipped = {
            "host": params["host"],
            "instance": params["instance"],
            "cursor": params["cursor"],
            "target": params["target"][:200],
            "error": error[:1000] if error else None,
            "at": time.time(),
        }
        lag = self.ship_lag(self.reader())
        assert lag is not None
        return lag

    def sync(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(params, {"timeout_s": ((int, float), False)})
        # Not `or`: 0 is a value (and refused), not the default.
        given = params.get("timeout_s")
        timeout = 60.0 if given is None else float(given)
        if timeout <= 0:
            raise invalid_params("timeout_s must be positive")
        if not self.syncs.sync(timeout):
            raise RpcError(UNAVAILABLE, f"not in sync within {timeout:g} s")
        return {"seq": catalog.last_seq(self.reader())}

    def lookup(self, params: dict[str, Any], peer: Peer) -> Any:
        check_params(
            params,
            {
                "path": (str, False),
                "path_b64": (str, False),
                "verify": (bool, False),
                "paths": (list, False),
                "paths_b64": (list, False),
                "ids": (list, False),
            },
        )
        many = [k for k in ("paths", "paths_b64", "ids") if params.get(k) is not None]
        if many:
            return self._lookup_many(params, many)
        found = self.resolve(protocol.path_param(params))
        if found is None:
            return None
        root, rel = found
        if params.get("verify"):
            file_id = self._verify(root, rel)
            row = catalog.get_file(self.reader(), file_id) if file_id is not None else None
        else:
            row = catalog.file_at(self.reader(), root.id, rel)
        return self.record(row) if row is not None else None

    def _lookup_many(self, params: dict[str, Any], given: builtins.list[str]) -> dict[str, Any]:
        """Up to ``LOOKUP_MANY`` paths or ids at once: ``{files}``, a record or null each, in order."""
        if len(given) > 1 or any(params.get(k) is not None for k in ("path", "path_b64")):
            raise invalid_params("give one of path, path_b64, paths, paths_b64 or ids")
        if params.get("verify"):
            raise invalid_params("verify takes one path")
        key = given[0]
        items = params[key]
        if len(items) > LOOKUP_MANY:
            raise invalid_params(f"{key}: at most {LOOKUP_MANY:,} a call")
        conn = self.reader()
        rows: builtins.list[FileRow | None] = []
        if key == "ids":
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
                raise invalid_params("ids must be integers")
            by_id = catalog.files_by_id(conn, items)
            return {"files": builtins.list(self.records(by_id.get(i) for i in items))}
        for item in items:
            if not isinstance(item, str):
                raise invalid_params(f"{key} must be strings")
            name = "path_b64" if key == "paths_b64" else "path"
            found = self.resolve(protocol.path_param({name: item}))
            rows.append(catalog.file_at(conn, found[0].id, found[1]) if found else None)
        return {"files": builtins.list(self.records(rows))}

    def _verify(self, root: Root, rel: bytes) -> int | None:
        """Stat the path now and record what is there (check on access)."""
        problem = self.checks.problem(root)
        if problem:
            raise RpcError(UNAVAILABLE, f"root {root.display} is offline: {problem}")
        try:
            sig = listing.stat_regular(root.abs(rel), strict=True)
        except OSError as exc:
            if classify(exc) is Fault.ROOT:
                raise RpcError(UNAVAILABLE, f"cannot read {root.display}: {exc.strerror}") from None
            if classify(exc) is Fault.DENIED:
                raise RpcError(UNAVAILABLE, f"permission denied: {exc.strerror}") from None
            sig = None
        if sig is not None and root.excluder.excluded_path(rel):
            sig = None
        file_id: int | None = self._write(
            partial(reconcile.observe_path, root=root, rel=rel, sig=sig, now=time.time())
        )
        return file_id

    def file(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(params, {"id": (int, True)})
        row = self._file_or_404(params["id"])
        result = self.record(row)
        result["history"] = [self._change(e) for e in catalog.history(self.reader(), row.id)]
        return result

    def list(self, params: dict[str, Any], peer: Peer) -> protocol.Encoded:
        check_params(
            params,
            {
                "state": (str, False),
                "root": (str, False),
                "limit": (int, False),
                "after_id": (int, False),
                "older_than": ((str, int, float), False),
                "newer_than": ((str, int, float), False),
            },
        )
        state = params.get("state")
        now = time.time()
        # Ages are of missing files: since when they are missing.
        before = (
            now - _seconds(params, "older_than") if params.get("older_than") is not None else None
        )
        after = (
            now - _seconds(params, "newer_than") if params.get("newer_than") is not None else None
        )
        if state is not None and state not in (catalog.PRESENT, catalog.MISSING, catalog.OFFLINE):
            raise invalid_params("state must be present, missing or offline")
        root = self._root_by_path(params["root"]).id if params.get("root") else None
        limit = bounded(params, "limit", LIST_DEFAULT, LIST_MAX)
        rows = catalog.list_files(
            self.reader(),
            state=state,
            root=root,
            after_id=bounded(params, "after_id", 0, 1 << 62),
            limit=limit,
            missing_before=before,
            missing_after=after,
        )
        files = protocol.encode_array(self.records(rows))
        return protocol.encode_object(
            {"files": files, "next_after_id": files.last["id"] if files.count == limit else None}
        )

    def _change(self, entry: catalog.JournalEntry) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": entry.seq,
            "time": protocol.rfc3339(entry.time),
            "kind": entry.kind,
            "id": entry.file,
            "path": None,
            "old_path": None,
        }
        if entry.path is not None and entry.root is not None:
            out.update(protocol.path_fields(self.root_path(entry.root) + b"/" + entry.path))
        if entry.old_path is not None:
            old = protocol.path_fields(
                self.root_path(entry.old_root or entry.root or 0) + b"/" + entry.old_path
            )
            out["old_path"] = old["path"]
            if "path_b64" in old:
                out["old_path_b64"] = old["path_b64"]
        if entry.detail:
            out.update({k: v for k, v in entry.detail.items() if k not in out})
        return out

    def changes(self, params: dict[str, Any], peer: Peer) -> protocol.Encoded:
        """The journal after ``since``; with ``wait`` (seconds) the server holds the call
        until there is something (see :meth:`Server._wait_for_changes`)."""
        check_params(
            params,
            {
                "since": (int, True),
                "limit": (int, False),
                "wait": ((int, float), False),
                "instance": (str, False),
            },
        )
        wait = params.get("wait")
        if wait is not None and not 0 <= wait <= MAX_WAIT:
            raise invalid_params(f"wait must be 0 to {MAX_WAIT} seconds")
        committed = self.writer.seq  # before reading: a commit meanwhile makes the answer stale
        conn = self.reader()
        seq = catalog.last_seq(conn)
        since = int(params["since"])
        oldest = catalog.oldest_seq(conn)
        gone = catalog.compacted_through(conn)
        reset = self.reset_required(since, params.get("instance"), gone, seq)
        if reset:
            return protocol.encode_object(
                {
                    "changes": protocol.encode_array(()),
                    "seq": seq,
                    "oldest_seq": oldest,
                    "truncated": since < gone,
                    "instance": self.instance,
                    "reset_required": reset,
                }
            )
        entries = catalog.journal_since(
            conn,
            bounded(params, "since", 0, 1 << 62),
            bounded(params, "limit", LIST_DEFAULT, LIST_MAX),
        )
        changes = protocol.encode_array(self._change(entry) for entry in entries)
        answer = protocol.encode_object(
            {
                "changes": changes,
                "seq": changes.last["seq"] if changes.count else seq,
                "oldest_seq": oldest,
                "truncated": False,
                "instance": self.instance,
                "reset_required": None,
            }
        )
        self._remember(changes_key(params), committed, answer)
        return answer

    def cached_changes(self, params: dict[str, Any]) -> protocol.Encoded | None:
        """The answer another caller with the same ``changes`` params got since the last
        commit, or None. Checked on the server's loop, touching no connection: a hundred
        clients following the journal cost one read per commit, not a hundred."""
        key = changes_key(params)
        with self._answers_lock:
            if key is None or self._answers_seq != self.writer.seq:
                return None
            return self._answers.get(key)

    def _remember(self, key: tuple[Any, ...] | None, seq: int, answer: protocol.Encoded) -> None:
        with self._answers_lock:
            self._answers_after(seq)
            if key is not None and len(self._answers) < ANSWERS_KEPT:
                self._answers[key] = answer

    def _answers_after(self, seq: int) -> None:
        """(Lock held.) What was shared belongs to commit ``seq``: anything older goes."""
        if self._answers_seq != seq:
            self._answers.clear()
            self._batches.clear()
            self._answers_seq = seq

    def subscription(self, params: dict[str, Any]) -> Subscription:
        """What a ``subscribe`` asks for, checked (the server streams it)."""
        check_params(
            params,
            {
                "since": (int, True),
                "instance": (str, False),
                "root": (str, False),
                "kinds": (list, False),
            },
        )
        kinds = params.get("kinds")
        if kinds is not None and not all(isinstance(k, str) for k in kinds):
            raise invalid_params("kinds must be an array of journal kinds")
        root = self._root_by_path(params["root"]).id if params.get("root") else None
        return Subscription(
            since=bounded(params, "since", 0, 1 << 62),
            instance=self.instance,
            asked_instance=params.get("instance"),
            root=root,
            kinds=frozenset(kinds) if kinds is not None else None,
        )

    def feed_batch(self, spec: Subscription, cursor: int) -> FeedBatch:
        """The next entries after ``cursor`` that ``spec`` wants, the cursor after them
        (past what the filters skipped), and whether more are waiting."""
        committed = self.writer.seq
        key = ("feed", cursor, spec.root, spec.kinds, spec.asked_instance)
        with self._answers_lock:
            if self._answers_seq == committed and key in self._batches:
                return self._batches[key]  # another subscriber at the same cursor read it
        conn = self.reader()
        seq = catalog.last_seq(conn)
        reset = self.reset_required(
            cursor, spec.asked_instance, catalog.compacted_through(conn), seq
        )
        if reset is not None:
            return FeedBatch([], seq, False, reset)
        entries, last = [], cursor
        for entry in catalog.journal_since(conn, cursor, FEED_BATCH):
            last = entry.seq
            if spec.kinds is not None and entry.kind not in spec.kinds:
                continue
            if spec.root is not None and spec.root not in (entry.root, entry.old_root):
                continue
            entries.append(self._change(entry))
        batch = FeedBatch(entries, last, last < seq, None)
        with self._answers_lock:
            self._answers_after(committed)
            if len(self._batches) < ANSWERS_KEPT:
                self._batches[key] = batch
        return batch

    def reset_required(
        self, since: int, instance: str | None, compacted: int, seq: int
    ) -> str | None:
        """Why a cursor cannot be served (the client re-reads with ``list``), or None.

        Compaction removed entries after it; it was read from another
        catalog (``instance``); or it is ahead of this journal (a catalog
        restored from a backup).
        """
        if instance is not None and instance != self.instance:
            return "another instance"
        if since < compacted:
            return "compacted"
        if since > seq:
            return "ahead of the journal"
        return None

    def scan(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(params, {"root": (str, False), "wait": (bool, False)})
        roots = [self._root_by_path(params["root"])] if params.get("root") else list(self.roots)
        for root in roots:
            problem = self.checks.problem(root)
            if problem and params.get("root"):
                raise RpcError(UNAVAILABLE, f"root {root.display} is offline: {problem}")
        jobs = [self.sweeps.request(root, full=True) for root in roots]
        if params.get("wait"):
            for job in jobs:
                job.finished_event.wait()
        snapshots = [j.snapshot() for j in jobs]
        return {"job": snapshots[0] if snapshots else None, "jobs": snapshots}

    def jobs(self, params: dict[str, Any], peer: Peer) -> builtins.list[dict[str, Any]]:
        check_params(params, {})
        return [j.snapshot() for j in self.jobs_table.all()]

    def annotate(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(params, {"id": (int, True), "key": (str, True), "value": (str, False)})
        if "value" not in params:
            raise invalid_params("param 'value' is required (null removes the key)")
        key, value = params["key"], params["value"]
        if not key or len(key) > MAX_KEY:
            raise invalid_params(f"key must be 1 to {MAX_KEY} characters")
        if value is not None and len(value) > MAX_VALUE:
            raise invalid_params(f"value must be at most {MAX_VALUE} characters")
        file_id = params["id"]

        def job(conn: apsw.Connection) -> bool:
            if catalog.get_file(conn, file_id) is None:
                return False
            catalog.set_annotation(conn, file_id, key, value)
            return True

        if not self._write(job):
            raise RpcError(NOT_FOUND, f"no file with id {file_id}")
        return self.record(self._file_or_404(file_id))

    def purge(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        check_params(
            params,
            {
                "ids": (list, False),
                "older_than": ((str, int, float), False),
                "all": (bool, False),
                "root": (str, False),
            },
        )
        if not peer.admin:
            raise RpcError(PERMISSION_DENIED, "purge is for root and members of admin_group")
        # `is`, not `in (None, False)`: 0 == False, and an older_than of 0 seconds is a value.
        chosen = [
            k
            for k in ("ids", "older_than", "all", "root")
            if params.get(k) is not None and params.get(k) is not False
        ]
        if len(chosen) != 1:
            raise invalid_params("give exactly one of ids, older_than, all: true or root")
        if chosen == ["root"]:
            return self._purge_root(params["root"], peer)
        ids: list[int] | None = None
        cutoff: float | None = None
        if chosen == ["ids"]:
            ids = params["ids"]
            if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise invalid_params("ids must be a non-empty array of integers")
        elif chosen == ["older_than"]:
            cutoff = time.time() - _seconds(params, "older_than")
        return purge_missing(
            self.writer, self.reader(), ids=ids, cutoff=cutoff, uid=peer.uid
        ).answer()

    def _purge_root(self, text: str, peer: Peer) -> dict[str, Any]:
        """Drop a root no longer configured, with every file it still has (admin only)."""
        path = os.path.normpath(text.encode("utf-8", "surrogateescape"))
        if self.roots.by_path(path) is not None:
            raise invalid_params(f"{text} is a configured root; remove it from the config first")
        row = next((r for r in catalog.all_roots(self.reader()) if r.path == path), None)
        if row is None:
            raise RpcError(NOT_FOUND, f"no root {text!r} in the catalog")
        detail = {"by_uid": peer.uid, "root_retired": True}
        purged = self._write(
            partial(catalog.purge_root, root=row.id, now=time.time(), detail=detail), 600
        )
        log.info("root.purge", root=path, files=purged, by_uid=peer.uid)
        return {"purged": purged, "refused": []}

    def accept_root(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Take the filesystem now mounted at a root as that root's volume (admin only)."""
        check_params(params, {"root": (str, True)})
        if not peer.admin:
            raise RpcError(PERMISSION_DENIED, "accept_root is for root and members of admin_group")
        root = self._root_by_path(params["root"])
        problem = self.checks.accept(root, self.reader())
        return {
            "root": root.display,
            "state": "offline" if problem else "online",
            "reason": problem,
        }

    def candidates(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Present files that may be what a missing file became, each with its evidence."""
        check_params(params, {"id": (int, True), "limit": (int, False)})
        limit = params.get("limit", 20)
        if not 1 <= limit <= 1000:
            raise invalid_params("limit must be 1 to 1000")
        row = self._file_or_404(params["id"])
        conn = self.reader()
        media = catalog.get_media(conn, row.id)
        swept = self._swept()
        found = catalog.candidates(conn, row, media, limit)
        return {
            "file": self.record(row, swept),
            "candidates": [{**self.record(r, swept), "evidence": why} for r, why in found],
        }

    def relink(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """A person's word that a present file is what a missing one became (admin only):
        the missing id takes its place; the present file's id is retired into it."""
        check_params(params, {"missing_id": (int, True), "present_id": (int, True)})
        if not peer.admin:
            raise RpcError(PERMISSION_DENIED, "relink is for root and members of admin_group")
        keep = self._file_or_404(params["missing_id"])
        take = self._file_or_404(params["present_id"])
        if keep.state != catalog.MISSING:
            raise invalid_params(f"file {keep.id} is {keep.state}; only a missing file is relinked")
        if take.state != catalog.PRESENT:
            raise invalid_params(f"file {take.id} is {take.state}; it must be present")
        detail = {"by": "admin", "by_uid": peer.uid}
        merged = self._write(
            partial(
                catalog.retire_into,
                keep=keep,
                take=take,
                digest=None,
                now=time.time(),
                detail=detail,
            )
        )
        if not merged:
            raise invalid_params(
                f"file {take.id} has annotations of its own, or one of the two changed meanwhile"
            )
        root_path = self.root_path(take.root)
        log.info(
            "file.relink",
            id=keep.id,
            by="admin",
            by_uid=peer.uid,
            path=root_path + b"/" + take.path,
            old_path=self.root_path(keep.root) + b"/" + keep.path,
            replaces_id=take.id,
        )
        return self.record(self._file_or_404(keep.id))

    def web_token(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Make a token for the web page (``role`` reader or admin; an admin's only for an
        admin of the socket), list the tokens, or revoke one (admin only)."""
        check_params(
            params,
            {
                "role": (str, False),
                "label": (str, False),
                "revoke": (int, False),
                "list": (bool, False),
            },
        )
        if params.get("list"):
            return {"tokens": [_token(t) for t in catalog.list_tokens(self.reader())]}
        if params.get("revoke") is not None:
            if not peer.admin:
                raise RpcError(PERMISSION_DENIED, "revoking a token is for admins")
            done = self._write(
                partial(catalog.revoke_token, token_id=params["revoke"], now=time.time())
            )
            if not done:
                raise RpcError(NOT_FOUND, f"no live token with id {params['revoke']}")
            log.info("web.token", action="revoke", token=params["revoke"], by_uid=peer.uid)
            return {"revoked": params["revoke"]}
        role = params.get("role", "reader")
        if role not in ("reader", "admin"):
            raise invalid_params("role must be reader or admin")
        if role == "admin" and not peer.admin:
            raise RpcError(
                PERMISSION_DENIED, "an admin token is for root and members of admin_group"
            )
        secret = secrets.token_urlsafe(32)
        label = params.get("label") or f"uid {peer.uid}"
        token_id = self._write(
            partial(
                catalog.add_token,
                digest=token_digest(secret),
                role=role,
                label=label,
                now=time.time(),
            )
        )
        log.info("web.token", action="make", token=token_id, role=role, by_uid=peer.uid)
        return {"id": token_id, "role": role, "label": label, "token": secret}

    def missing_records(
        self, chosen: catalog.MissingFilter, sort: str, descending: bool, offset: int, limit: int
    ) -> Iterator[dict[str, Any]]:
        """The missing files ``chosen`` picks, as records, read as they are consumed
        (``limit`` -1: every one); ``catalog.missing_count`` says how many there are."""
        conn, swept = self.reader(), self._swept()
        for row in catalog.missing_page(
            conn, chosen, sort=sort, descending=descending, offset=offset, limit=limit
        ):
            yield self.record(row, swept)

    def metrics(self, params: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """One scrape in the Prometheus text format (``filewarden metrics``)."""
        check_params(params, {})
        if self.scrape is None:
            raise RpcError(UNAVAILABLE, "metrics are not set up")
        return {"text": self.scrape(), "content_type": "text/plain; version=0.0.4"}


def token_digest(secret: str) -> bytes:
    """What the catalog keeps of a web token."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _token(t: catalog.Token) -> dict[str, Any]:
    return {
        "id": t.id,
        "role": t.role,
        "label": t.label,
        "created": protocol.rfc3339(t.created),
        "revoked": protocol.rfc3339(t.revoked),
    }


def changes_key(params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What makes two ``changes`` calls the same answer (None: not one to share)."""
    since, limit, instance = params.get("since"), params.get("limit"), params.get("instance")
    if not isinstance(since, int) or not isinstance(limit, int | None):
        return None
    return since, limit, instance if isinstance(instance, str) else None


@dataclasses.dataclass(frozen=True)
class Subscription:
    since: int
    instance: str
    asked_instance: str | None  # the instance the subscriber's cursor was read in
    root: int | None
    kinds: frozenset[str] | None


@dataclasses.dataclass(frozen=True)
class FeedBatch:
    entries: builtins.list[dict[str, Any]]
    seq: int  # the cursor after them
    more: bool  # more entries wait after ``seq``
    reset: str | None  # why the cursor cannot be served

    @functools.cached_property
    def lines(self) -> bytes:
        """The entries as ``change`` notification lines, encoded once for every
        subscriber the batch is shared with."""
        return b"".join(protocol.notification("change", entry) for entry in self.entries)


def _fingerprint(media: catalog.Media | None) -> dict[str, Any] | None:
    """A record's fingerprint: kind and value (hex; null for a file that did not parse)."""
    if media is None:
        return None
    return {"kind": media.kind, "value": media.value.hex() if media.value else None}


def _seconds(params: Mapping[str, Any], key: str) -> float:
    """A duration param: a number of seconds, or a duration string like "30d"."""
    value = params[key]
    if isinstance(value, str):
        try:
            seconds = parse_duration(value, allow_never=False)
        except ValueError as exc:
            raise invalid_params(f"{key}: {exc}") from None
        assert seconds is not None
        return seconds
    if value < 0:
        raise invalid_params(f"{key} must not be negative")
    return float(value)
