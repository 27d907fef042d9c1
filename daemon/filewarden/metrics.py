"""Prometheus metrics: what ``status`` says, as numbers a monitoring system can alert on.

Built on each scrape from the same sources as ``status`` (no second set of
books), by a ``prometheus_client`` collector in a registry of the daemon's
own. Counters of what the journal records (relinks by rule, purges, moves)
are read from the journal since the daemon started, a few rows a scrape:
they restart at zero with the daemon, as Prometheus counters may.

Served three ways: the ``metrics`` socket method, ``filewarden metrics``
(for node_exporter's textfile collector) and, when ``[metrics] listen`` is
set, ``/metrics`` over HTTP.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import socketserver
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import apsw
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from filewarden import catalog, logs
from filewarden.dirs import prepare_dir

log = logs.get("filewarden.metrics")


class Source(Protocol):
    """What the metrics read (:class:`filewarden.api.Api`)."""

    def status(self, params: dict[str, Any], peer: Any) -> dict[str, Any]: ...
    def jobs(self, params: dict[str, Any], peer: Any) -> list[dict[str, Any]]: ...
    def reader(self) -> apsw.Connection: ...


RULES = ("inode", "hash", "fingerprint", "admin")  # a relink's ``by``, each shown from 0
# Journal kinds counted (each shown from 0).
COUNTED = (
    "new",
    "move",
    "missing",
    "restore",
    "relink",
    "retire",
    "purge",
    "change",
    "hash",
    "annotate",
)


class Metrics:
    """The daemon's collector; ``text()`` is one scrape in the Prometheus text format."""

    def __init__(self, source: Source, start_seq: int) -> None:
        self.source = source
        self.registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._seq = start_seq  # the journal read so far
        self._journal: Counter[tuple[str, str]] = Counter()  # (kind, by) → entries since start
        self.registry.register(self)
        self._http: Any = None

    def text(self) -> str:
        return exposition.generate_latest(self.registry).decode()

    def serve(self, host: str, port: int | str, pages: Pages | None = None) -> None:
        """Serve ``/metrics`` on ``host:port``, or on the Unix socket ``port`` when ``host``
        is ``"unix"`` (threads of its own either way); every other path is ``pages``'s
        (the web page), or ``/metrics`` too when there are none."""
        handler = type("Handler", (_Front,), {"registry": self.registry, "pages": pages})
        server: Any
        if host == "unix":
            path = str(port)
            prepare_dir(Path(path).parent, 0o755)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # left by a daemon that is gone
            server = _UnixHTTPServer(path, handler)
            os.chmod(path, 0o660)
            address = f"unix:{path}"
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = type("Server", (_TCPHTTPServer,), {"address_family": family})(
                (host, int(port)), handler
            )
            address = f"{host}:{port}"
        threading.Thread(target=server.serve_forever, name="filewarden-http", daemon=True).start()
        self._http = server
        log.info("metrics.listen", address=address, web=pages is not None)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if isinstance(self._http, _UnixHTTPServer):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self._http.server_address))
            self._http = None

    def _count_journal(self, conn: apsw.Connection) -> None:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT kind, coalesce(json_extract(detail, '$.by'), ''), count(*), max(seq)"
            " FROM journal WHERE seq > ? GROUP BY 1, 2",
            (self._seq,),
        ).fetchall()
        for kind, by, count, top in rows:
            self._journal[(str(kind), str(by))] += int(count)
            self._seq = max(self._seq, int(top))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            status = self.source.status({}, None)
            conn = self.source.reader()
            self._count_journal(conn)
            journal = dict(self._journal)
            swept = {
                os.fsdecode(r.path): (r.last_sweep, r.last_full_sweep)
                for r in catalog.all_roots(conn)
            }
        yield from _roots(status, swept)
        yield from _sweeps(self.source.jobs({}, None))
        yield from _daemon(status)
        yield from _journal(journal, status)
        yield from _ship(status)


# The web page: (method, path, query, headers, body) → (status, headers, body).
Pages = Callable[
    [str, str, str, Message, bytes], tuple[int, list[tuple[str, str]], bytes | Iterator[bytes]]
]
MAX_BODY = 1 << 20  # bytes of a request's body (a form with a page of ids)


class _Front(http.server.BaseHTTPRequestHandler):
    """``/metrics`` in the format the scraper asks for; the rest is the web page's."""

    registry: CollectorRegistry
    pages: Pages | None

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        if method != "POST" and (url.path == "/metrics" or self.pages is None):
            encoder, content_type = exposition.choose_encoder(self.headers.get("Accept", ""))
            status, headers = 200, [("Content-Type", content_type)]
            body: bytes | Iterator[bytes] = encoder(self.registry)
        elif self.pages is None:
            status, headers, body = 405, [("Allow", "GET, HEAD")], b""
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                self.send_error(413, "request body over 1 MiB")
                return
            data = self.rfile.read(length)
            status, headers, body = self.pages(method, url.path, url.query, self.headers, data)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
            return
        self.end_headers()  # a stream (events, an export): it ends with the connection
        try:
            for chunk in body if method != "HEAD" else ():
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass  # the page went away
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the daemon's own log says what matters


class _TCPHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """HTTP on a Unix socket (systemd-socket-proxyd brings loopback TCP to it)."""

    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port)


def _gauge(name: str, doc: str, labels: list[str] | None = None, **kw: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels, **kw)


def _roots(
    status: dict[str, Any], swept: dict[str, tuple[float | None, float | None]]
) -> Iterator[Metric]:
    files = _gauge(
        "filewarden_files", "Files in the catalog, by root and state.", ["root", "state"]
    )
    online = _gauge(
        "filewarden_root_online",
        "1 while the root is online (mounted, marker and volume as expected), else 0.",
        ["root"],
    )
    watched = _gauge(
        "filewarden_root_watched",
        "1 while the root is watched by its backend, 0 while it is polled.",
        ["root", "backend"],
    )
    last = _gauge(
        "filewarden_last_sweep_timestamp_seconds",
        "When the root's last sweep of each kind ended (Unix time).",
        ["root", "kind"],
    )
    for root in status["roots"]:
        path = root["path"]
        for state, count in root["files"].items():
            files.add_metric([path, state], count)
        online.add_metric([path], 1 if root["state"] == "online" else 0)
        watched.add_metric([path, root["backend"]], 0 if root["mode"] == "poll" else 1)
        for kind, when in zip(("any", "full"), swept.get(path, (None, None)), strict=True):
            if when is not None:
                last.add_metric([path, kind], when)
    yield from (files, online, watched, last)


def _sweeps(jobs: list[dict[str, Any]]) -> Iterator[Metric]:
    took = _gauge(
        "filewarden_sweep_duration_seconds",
        "How long the last finished sweep of each kind took, by root.",
        ["root", "kind"],
    )
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        if job["finished"] is None or job["started"] is None or job["root"] is None:
            continue
        key = (job["root"], job["kind"])
        if key not in latest or job["finished"] > latest[key]["finished"]:
            latest[key] = job
    for (root, kind), job in sorted(latest.items()):
        took.add_metric([root, kind], job["finished"] - job["started"])
    yield took


def _daemon(status: dict[str, Any]) -> Iterator[Metric]:
    hashing, memory, watches = status["hashing"], status["memory"], status["watches"]
    socket = status["socket"] or {}
    yield _gauge(
        "filewarden_hash_backlog_files", "Present files not hashed yet.", value=hashing["pending"]
    )
    yield _gauge("filewarden_journal_seq", "The journal's last seq.", value=status["seq"])
    yield _gauge(
        "filewarden_inotify_watches", "inotify watches this daemon holds.", value=watches["used"]
    )
    if watches["limit"] is not None:
        yield _gauge(
            "filewarden_inotify_watches_limit",
            "fs.inotify.max_user_watches (for every process of the user together).",
            value=watches["limit"],
        )
    yield CounterMetricFamily(
        "filewarden_watch_overflows",
        "Times the kernel's event queue overflowed (each followed by a full sweep).",
        value=watches["overflows"],
    )
    yield _gauge(
        "filewarden_socket_clients",
        "Clients connected to the socket.",
        value=socket.get("clients", 0),
    )
    yield _gauge(
        "filewarden_socket_waiting",
        "changes calls held open on the socket.",
        value=socket.get("waiting", 0),
    )
    yield _gauge(
        "filewarden_socket_subscribers",
        "Connections streaming the journal (subscribe).",
        value=socket.get("subscribers", 0),
    )
    yield CounterMetricFamily(
        "filewarden_socket_requests", "Socket requests answered.", value=socket.get("requests", 0)
    )
    yield CounterMetricFamily(
        "filewarden_socket_errors",
        "Socket requests answered with an error.",
        value=socket.get("errors", 0),
    )
    yield _gauge(
        "filewarden_resident_memory_bytes",
        "The daemon's resident memory.",
        value=memory["rss_kib"] * 1024,
    )
    yield _gauge(
        "filewarden_sqlite_memory_bytes",
        "SQLite's share of it, for every catalog connection together.",
        value=memory["sqlite_kib"] * 1024,
    )
    yield _gauge(
        "filewarden_up", "1: the daemon answers (its degraded state is in the warnings).", value=1
    )


def _journal(journal: dict[tuple[str, str], int], status: dict[str, Any]) -> Iterator[Metric]:
    relinks = CounterMetricFamily(
        "filewarden_relinks",
        "Missing files found again since the daemon started, by rule (inode, hash,"
        " fingerprint, admin).",
        labels=["rule"],
    )
    changes = CounterMetricFamily(
        "filewarden_journal_entries",
        "Journal entries written since the daemon started, by kind.",
        labels=["kind"],
    )
    by_kind: Counter[str] = Counter()
    by_rule: Counter[str] = Counter(dict.fromkeys(RULES, 0))
    for (kind, by), count in journal.items():
        by_kind[kind] += count
        if kind == "relink":
            by_rule[by or "unknown"] += count
    for rule, count in sorted(by_rule.items()):
        relinks.add_metric([rule], count)
    for kind in COUNTED:
        changes.add_metric([kind], by_kind[kind])
    yield relinks
    yield changes
    yield CounterMetricFamily(
        "filewarden_purged_files",
        "Missing files purged for good since the daemon started (by an admin or retention).",
        value=by_kind["purge"],
    )
    missing = sum(r["files"]["missing"] for r in status["roots"])
    yield _gauge(
        "filewarden_missing_files", "Missing files under the configured roots.", value=missing
    )


def _ship(status: dict[str, Any]) -> Iterator[Metric]:
    """The shipper's lag, once one has reported (``filewarden ship``)."""
    ship = status.get("ship")
    if ship is None:
        return
    yield _gauge(
        "filewarden_ship_lag_entries",
        "Journal entries not yet committed to the fleet's PostgreSQL.",
        value=ship["lag_entries"],
    )
    yield _gauge(
        "filewarden_ship_lag_seconds",
        "How long the oldest of them has waited (0: none wait).",
        value=ship["lag_seconds"],
    )
    yield _gauge(
        "filewarden_ship_error",
        "1 while the shipper reports that it cannot ship.",
        value=1 if ship["error"] else 0,
    )
    yield _gauge(
        "filewarden_ship_report_age_seconds",
        "Seconds since the shipper last reported (it reports at least every 30 s).",
        value=ship["reported_s_ago"],
    )
