"""The web page for the person who looks after the library: roots, missing files, removal.

Server-rendered HTML on the HTTP listener ``/metrics`` uses (``[web]
enabled``), no script needed: every view is a plain page with links and
forms. Reading needs a token, removing an admin token (``filewarden
web-token``); tokens are kept as their SHA-256 and can be revoked. A token
comes as ``Authorization: Bearer`` (scripts) or as the cookie the login
form sets (browsers, ``HttpOnly``, ``SameSite=Strict``). A write made with
the cookie must carry the page's CSRF token and come from the page's own
origin (``Origin``, else ``Referer``); a bearer token is never sent by a
browser on its own, so a write made with one needs neither.

Every name is shown escaped: HTML's special characters, control
characters (a newline in a name) and bytes that are not UTF-8 (``\\xNN``),
so no path can inject markup or break a line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import html
import http.cookies
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from filewarden import catalog, logs
from filewarden.api import Api, Peer, Subscription, token_digest
from filewarden.protocol import RpcError
from filewarden.report import human_size, missing_csv_chunks

log = logs.get("filewarden.web")

COOKIE = "filewarden_token"
CHART_DAYS = 30
LIVE_ROWS = 50  # journal entries the live page starts with
MAX_STREAMS = 16  # live pages open at once (each holds a thread of the listener)
PAGE = 50  # rows on a page of the missing list
PAGES_MAX = 500  # rows a page may ask for


def shown(text: str) -> str:
    """A name as a page shows it: bytes that are not UTF-8 as ``\\xNN``, control
    characters escaped (``\\n``), then HTML-escaped."""
    out = []
    for c in text:
        if "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif not c.isprintable():
            out.append(c.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(c)
    return html.escape("".join(out))


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes = b""

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "surrogateescape"), keep_blank_values=True)


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    stream: Iterator[bytes] | None = None  # sent after ``body``, chunk by chunk


class Refused(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


@dataclasses.dataclass(frozen=True)
class Viewer:
    token: catalog.Token
    by_cookie: bool  # a browser's: its writes need the CSRF token and the page's origin


class Web:
    """The pages, as a function from a request to a response (the HTTP server is
    :mod:`filewarden.metrics`'s)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._secret = secrets.token_bytes(32)  # CSRF tokens: valid while the daemon runs
        # The live streams wait here for a commit (the writer's listener notifies).
        self._moved = threading.Condition()
        self._streams = 0
        self._drawn: tuple[int, float, str] | None = None  # the chart: at seq, when, what
        api.writer.listen(self._on_commit)
        self.routes: dict[tuple[str, str], Callable[[Request, Viewer], Response]] = {
            ("GET", "/"): self.overview,
            ("GET", "/missing"): self.missing,
            ("GET", "/missing.csv"): self.missing_export,
            ("POST", "/missing/remove"): self.remove,
            ("GET", "/offline"): self.offline,
            ("GET", "/file"): self.file,
            ("GET", "/live"): self.live,
            ("GET", "/events"): self.events,
        }

    def __call__(
        self, method: str, path: str, query: str, headers: Message, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes | Iterator[bytes]]:
        """The HTTP listener's call (:data:`filewarden.metrics.Pages`)."""
        req = Request(method, path, parse_qs(query, keep_blank_values=True), headers, body)
        try:
            res = self.handle(req)
        except Exception as exc:  # a bug is a 500 and a log line; the listener goes on
            log.exception("socket.error", method=f"web {method} {path}", error=repr(exc))
            res = Response(500, self._page("Error", "<p>internal error</p>", None))
        headers_out = [
            ("Content-Type", res.content_type),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "same-origin"),
            ("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'"),
            ("Cache-Control", "no-store"),
            *res.headers,
        ]
        if res.stream is not None:
            return res.status, headers_out, res.stream
        return res.status, headers_out, res.body

    def handle(self, req: Request) -> Response:
        try:
            if req.path == "/login":
                return self.login(req)
            if req.path == "/logout":
                return self._redirect("/login", cookie="")
            if req.path == "/static/live.js":
                return Response(200, LIVE_JS, content_type="text/javascript; charset=utf-8")
            route = self.routes.get((req.method, req.path))
            if route is None:
                raise Refused(404, "no such page")
            viewer = self._viewer(req)
            if req.method == "POST":
                self._check_write(req, viewer)
            return route(req, viewer)
        except Refused as exc:
            if exc.status == 401:
                page = self._login_form(exc.why)
                return Response(
                    401, page, headers=[("WWW-Authenticate", 'Bearer realm="filewarden"')]
                )
            return Response(
                exc.status, self._page("Refused", f"<p>{html.escape(exc.why)}</p>", None)
            )
        except RpcError as exc:
            return Response(400, self._page("Error", f"<p>{html.escape(exc.message)}</p>", None))

    # -- access ------------------------------------------------------------------------

    def _viewer(self, req: Request) -> Viewer:
        auth = req.headers.get("Authorization", "")
        by_cookie = not auth.startswith("Bearer ")
        secret = _cookie(req.headers, COOKIE) if by_cookie else auth.removeprefix("Bearer ").strip()
        if not secret:
            raise Refused(401, "a token is needed")
        token = catalog.token_by_digest(self.api.reader(), token_digest(secret))
        if token is None:
            raise Refused(401, "this token is not known or was revoked")
        return Viewer(token, by_cookie)

    def csrf(self, viewer: Viewer) -> str:
        return hmac.new(self._secret, str(viewer.token.id).encode(), hashlib.sha256).hexdigest()

    def _check_write(self, req: Request, viewer: Viewer) -> None:
        if not viewer.by_cookie:
            return
        self._same_origin(req)
        given = _one(req.form(), "csrf")
        if not hmac.compare_digest(given, self.csrf(viewer)):
            raise Refused(403, "the form's CSRF token is missing or stale: reload the page")

    def _same_origin(self, req: Request) -> None:
        host = req.headers.get("Host", "")
        origin = req.headers.get("Origin") or ""
        if not origin:
            referer = urlsplit(req.headers.get("Referer") or "")
            origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else ""
        if not origin or urlsplit(origin).netloc != host:
            raise Refused(403, "a write from another site (or of unknown origin) is refused")

    def login(self, req: Request) -> Response:
        if req.method != "POST":
            return Response(200, self._login_form(""))
        self._same_origin(req)
        secret = _one(req.form(), "token").strip()
        if not secret or catalog.token_by_digest(self.api.reader(), token_digest(secret)) is None:
            return Response(401, self._login_form("this token is not known or was revoked"))
        return self._redirect("/", cookie=secret)

    def _redirect(self, to: str, cookie: str | None = None) -> Response:
        headers = [("Location", to)]
        if cookie is not None:
            age = "" if cookie else "; Max-Age=0"
            headers.append(
                ("Set-Cookie", f"{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/{age}")
            )
        return Response(303, b"", headers=headers)

    # -- views -------------------------------------------------------------------------

    def overview(self, req: Request, viewer: Viewer) -> Response:
        st = self.api.status({}, _peer(viewer))
        rows = []
        for r in st["roots"]:
            state = r["state"] + (f" ({r['reason']})" if r.get("reason") else "")
            watch = r["mode"] + (f", {r['backend']}" if r.get("backend") else "")
            rows.append(
                "<tr>"
                f"<td>{shown(r['path'])}</td><td class='{html.escape(r['state'])}'>{shown(state)}</td>"
                f"<td>{shown(watch)}</td>"
                f"<td class=n>{r['files']['present']:,}</td><td class=n>{r['files']['missing']:,}</td>"
                f"<td class=n>{r['files']['offline']:,}</td>"
                f"<td class=t>{shown(r['last_sweep'] or '-')}</td><td class=t>{shown(r['last_full_sweep'] or '-')}</td>"
                f"<td>{'<br>'.join(shown(str(w)) for w in r['warnings'])}</td>"
                "</tr>"
            )
        totals = st["totals"]
        hashing = st["hashing"]
        warnings = "".join(f"<li>{shown(str(w))}</li>" for w in st["warnings"])
        body = (
            f"<div id=roots data-live=overview data-seq={st['seq']}>"
            f"<p>{totals['present']:,} present, <a href='/missing'>{totals['missing']:,} missing</a>,"
            f" <a href='/offline'>{totals['offline']:,} offline</a>; journal at {st['seq']:,}.</p>"
            "<table><tr><th>root</th><th>state</th><th>watching</th><th>present</th>"
            "<th>missing</th><th>offline</th><th>last sweep</th><th>last full sweep</th>"
            f"<th>warnings</th></tr>{''.join(rows)}</table></div>"
            f"<h2>The last {CHART_DAYS} days</h2>{self._chart(totals)}"
            f"<h2>Hashing</h2><p>{hashing['pending']:,} files to hash.</p>"
            + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
        )
        return Response(200, self._page("Overview", body, viewer))

    def _chart(self, totals: Mapping[str, int]) -> str:
        """Present and missing files at the end of each of the last days, worked back
        from today's counts through the journal (what each kind of entry changed).
        Drawn again once the journal moved and a minute passed: a first index of a
        million files is a million entries to count."""
        seq, now = self.api.writer.seq, time.monotonic()
        drawn = self._drawn
        if drawn is not None and (drawn[0] == seq or now - drawn[1] < 60):
            return drawn[2]
        chart = self._draw(totals)
        self._drawn = (seq, now, chart)
        return chart

    def _draw(self, totals: Mapping[str, int]) -> str:
        today = int(time.time() // 86400)
        first = today - CHART_DAYS + 1
        moved: dict[int, list[int]] = {}  # day → [present, missing] it added
        for day, kind, count, files in catalog.journal_by_day(self.api.reader(), first * 86400.0):
            present, missing = _DELTAS.get(kind, (0, 0))
            if kind in ("offline", "online"):
                present, missing = (-files if kind == "offline" else files), 0
            else:
                present, missing = present * count, missing * count
            got = moved.setdefault(day, [0, 0])
            got[0] += present
            got[1] += missing
        present, missing = totals["present"], totals["missing"]
        series: list[tuple[int, int, int]] = []
        for day in range(today, first - 1, -1):
            series.append((day, present, missing))
            back = moved.get(day, [0, 0])
            present, missing = present - back[0], missing - back[1]
        series.reverse()
        return "".join(
            _sparkline(label, [v[i] for v in series], series[0][0])
            for i, label in ((1, "present"), (2, "missing"))
        )

    def _filter(
        self, fields: Mapping[str, list[str]]
    ) -> tuple[catalog.MissingFilter, dict[str, str]]:
        """The missing list's filter from a query or form, and its fields to carry on."""
        kept = {
            k: fields[k][0]
            for k in ("root", "reason", "older", "newer", "q")
            if fields.get(k, [""])[0]
        }
        root = None
        if kept.get("root"):
            found = self.api.roots.by_path(kept["root"].encode("utf-8", "surrogateescape"))
            if found is None:
                raise Refused(400, f"{kept['root']} is not a configured root")
            root = found.id
        now = time.time()
        return (
            catalog.MissingFilter(
                root=root,
                reason=kept.get("reason") or None,
                before=now - _days(kept["older"]) if kept.get("older") else None,
                after=now - _days(kept["newer"]) if kept.get("newer") else None,
                text=kept.get("q", "").encode("utf-8", "surrogateescape"),
            ),
            kept,
        )

    def _order(self, req: Request) -> tuple[str, bool]:
        sort = _one(req.query, "sort", "missing_since")
        if sort not in catalog.SORTS:
            raise Refused(400, f"sort by one of {', '.join(catalog.SORTS)}")
        return sort, _one(req.query, "order", "desc") != "asc"

    def missing(self, req: Request, viewer: Viewer) -> Response:
        chosen, kept = self._filter(req.query)
        sort, descending = self._order(req)
        offset = _int(_one(req.query, "offset", "0"), 0, 1 << 40)
        per = _int(_one(req.query, "per", str(PAGE)), 1, PAGES_MAX)
        files = list(self.api.missing_records(chosen, sort, descending, offset, per))
        total = catalog.missing_count(self.api.reader(), chosen)
        counted = f"more than {catalog.COUNT_CAP:,}" if total > catalog.COUNT_CAP else f"{total:,}"
        here = {**kept, "sort": sort, "order": "desc" if descending else "asc", "per": str(per)}
        admin = viewer.token.role == "admin"
        rows = "".join(
            "<tr>"
            + (f"<td><input type=checkbox name=ids value={f['id']}></td>" if admin else "")
            + f"<td><a href='/file?id={f['id']}'>{shown(_under(f))}</a></td>"
            f"<td class=n>{human_size(f['size'])}</td><td class=t>{shown(f['missing_since'] or '')}</td>"
            f"<td>{shown(f['missing_reason'] or '')}</td><td>{shown(f['root'])}</td></tr>"
            for f in files
        )
        roots = "".join(
            f"<option{' selected' if kept.get('root') == r.display else ''}>{shown(r.display)}</option>"
            for r in self.api.roots
        )
        reasons = "".join(
            f"<option{' selected' if kept.get('reason') == why else ''}>{shown(why)}</option>"
            for why in catalog.missing_reasons(self.api.reader())
        )
        sorts = "".join(
            f"<option{' selected' if s == sort else ''}>{s}</option>" for s in catalog.SORTS
        )
        form = (
            "<form method=get action='/missing' class=filter>"
            f"<label>root <select name=root><option value=''>any</option>{roots}</select></label>"
            f"<label>reason <select name=reason><option value=''>any</option>{reasons}</select></label>"
            f"<label>older than <input name=older size=4 value='{html.escape(kept.get('older', ''))}'> days</label>"
            f"<label>newer than <input name=newer size=4 value='{html.escape(kept.get('newer', ''))}'> days</label>"
            f"<label>path has <input name=q value='{html.escape(kept.get('q', ''))}'></label>"
            f"<label>sort <select name=sort>{sorts}</select></label>"
            "<label>order <select name=order>"
            f"<option{' selected' if descending else ''}>desc</option>"
            f"<option{'' if descending else ' selected'}>asc</option></select></label>"
            "<button>Show</button></form>"
        )
        pages = []
        if offset > 0:
            pages.append(
                f"<a href='/missing?{urlencode({**here, 'offset': max(0, offset - per)})}'>previous</a>"
            )
        if offset + per < total or (len(files) == per and total > catalog.COUNT_CAP):
            pages.append(
                f"<a href='/missing?{urlencode({**here, 'offset': offset + per})}'>next</a>"
            )
        shown_to = offset + len(files)
        head = (
            f"<p><span id=total>{counted}</span> missing match; {offset + 1 if files else 0:,}–{shown_to:,} shown. "
            f"<a href='/missing.csv?{urlencode(here)}'>Export CSV</a> {' '.join(pages)}</p>"
        )
        check = "<th></th>" if admin else ""
        table = (
            f"<table id=missing><tr>{check}<th>path</th><th>size</th><th>missing since</th>"
            f"<th>reason</th><th>root</th></tr>{rows}</table>"
        )
        if admin:
            hidden = "".join(
                f"<input type=hidden name='{k}' value='{html.escape(v)}'>" for k, v in kept.items()
            )
            table = (
                "<form method=post action='/missing/remove'>"
                f"<input type=hidden name=csrf value='{self.csrf(viewer)}'>{hidden}{table}"
                "<p><button name=remove value=selected"
                " data-confirm='Remove the selected files from the catalog for good?'>"
                "Remove selected</button> <button name=remove value=all"
                f" data-confirm='Remove all {counted} files that match from the catalog for good?'>"
                f"Remove all {counted} that match</button></p></form>"
            )
        return Response(200, self._page("Missing files", form + head + table, viewer))

    def missing_export(self, req: Request, viewer: Viewer) -> Response:
        chosen, _ = self._filter(req.query)
        sort, descending = self._order(req)
        files = self.api.missing_records(chosen, sort, descending, 0, -1)
        return Response(
            200,
            b"",
            content_type="text/csv; charset=utf-8",
            headers=[("Content-Disposition", "attachment; filename=missing.csv")],
            stream=(c.encode("utf-8", "surrogateescape") for c in missing_csv_chunks(files)),
        )

    def remove(self, req: Request, viewer: Viewer) -> Response:
        if viewer.token.role != "admin":
            raise Refused(403, "removing files needs an admin token")
        fields = req.form()
        chosen, kept = self._filter(fields)
        if _one(fields, "remove") == "all":
            ids = catalog.missing_ids(self.api.reader(), chosen)
        else:
            ids = [_int(i, 1, 1 << 62) for i in fields.get("ids", [])]
        removed = 0
        for start in range(0, len(ids), 10_000):
            answer = self.api.purge({"ids": ids[start : start + 10_000]}, _peer(viewer))
            removed += int(answer.get("purged", 0))
        log.info("web.remove", token=viewer.token.id, asked=len(ids), purged=removed)
        return self._redirect(f"/missing?{urlencode(kept)}")

    def offline(self, req: Request, viewer: Viewer) -> Response:
        """Each root that is not online, why and since when (the last time it was), and
        its files, a page at a time (``?root=R&after=ID``)."""
        peer = _peer(viewer)
        st = self.api.status({}, peer)
        away = [r for r in st["roots"] if r["state"] != "online" or r["files"]["offline"]]
        if not away:
            return Response(200, self._page("Offline", "<p>Every root is online.</p>", viewer))
        rows = "".join(
            f"<tr><td>{shown(r['path'])}</td><td>{shown(r['state'])}</td>"
            f"<td>{shown(r.get('reason') or '')}</td><td class=t>{shown(r.get('since') or '')}</td>"
            f"<td class=n>{r['files']['offline']:,}</td></tr>"
            for r in away
        )
        parts = [
            "<table id=offline><tr><th>root</th><th>state</th><th>why</th>"
            f"<th>offline since</th><th>files offline</th></tr>{rows}</table>"
        ]
        after = _int(_one(req.query, "after", "0"), 0, 1 << 62)
        for r in away:
            if not r["files"]["offline"]:
                continue
            mine = _one(req.query, "root") == r["path"]
            page = self.api.list(
                {
                    "state": "offline",
                    "root": r["path"],
                    "limit": PAGE,
                    "after_id": after if mine else 0,
                },
                peer,
            )
            listed = json.loads(page.text)
            files = "".join(
                f"<tr><td><a href='/file?id={f['id']}'>{shown(_under(f))}</a></td>"
                f"<td class=n>{human_size(f['size'])}</td><td class=t>{shown(f['last_seen'] or '')}</td></tr>"
                for f in listed["files"]
            )
            more = listed["next_after_id"]
            link = (
                f"<p><a href='/offline?{urlencode({'root': r['path'], 'after': more})}'>next</a></p>"
                if more is not None
                else ""
            )
            parts.append(
                f"<h2>{shown(r['path'])}</h2><table class=files><tr><th>path</th><th>size</th>"
                f"<th>last seen</th></tr>{files}</table>{link}"
            )
        return Response(200, self._page("Offline", "".join(parts), viewer))

    def file(self, req: Request, viewer: Viewer) -> Response:
        peer = _peer(viewer)
        if _one(req.query, "path"):
            found = self.api.lookup({"path": _one(req.query, "path")}, peer)
            if found is None:
                raise Refused(404, "no file is known at that path")
            file_id = int(found["id"])
        else:
            file_id = _int(_one(req.query, "id"), 1, 1 << 62)
        rec = self.api.file({"id": file_id}, peer)
        fields = "".join(
            f"<tr><th>{k}</th><td>{shown(str(rec[k]))}</td></tr>"
            for k in (
                "id",
                "path",
                "state",
                "size",
                "hash",
                "first_seen",
                "last_seen",
                "missing_since",
                "missing_reason",
                "root",
            )
            if rec.get(k) is not None
        )
        notes = "".join(
            f"<tr><th>{shown(str(k))}</th><td>{shown(str(v))}</td></tr>"
            for k, v in sorted(rec["annotations"].items())
        )
        history = "".join(
            f"<tr><td class=n>{e['seq']}</td><td class=t>{shown(e['time'])}</td><td>{shown(e['kind'])}</td>"
            f"<td>{shown(e.get('path') or '')}</td><td>{shown(e.get('old_path') or '')}</td></tr>"
            for e in rec["history"]
        )
        body = (
            f"<table id=record>{fields}</table>"
            + (f"<h2>Annotations</h2><table id=annotations>{notes}</table>" if notes else "")
            + "<h2>History</h2><table id=history><tr><th>seq</th><th>time</th><th>kind</th>"
            f"<th>path</th><th>from</th></tr>{history}</table>"
        )
        return Response(200, self._page(f"File {file_id}", body, viewer))

    def live(self, req: Request, viewer: Viewer) -> Response:
        """The journal's last entries; with script, new ones as they are committed."""
        seq = self.api.writer.seq
        spec = self.api.subscription({"since": max(0, seq - LIVE_ROWS)})
        batch = self.api.feed_batch(spec, spec.since)
        rows = "".join(_live_row(e) for e in reversed(batch.entries))
        body = (
            "<p>The catalog's changes, newest first; new ones appear as they happen.</p>"
            f"<table id=feed data-live=feed data-seq={batch.seq}><tr><th>seq</th><th>time</th>"
            f"<th>kind</th><th>path</th><th>from</th></tr>{rows}</table>"
        )
        return Response(200, self._page("Live", body, viewer))

    def events(self, req: Request, viewer: Viewer) -> Response:
        """The journal after ``since`` as server-sent events, one ``change`` event an
        entry, until the page goes away; a comment every 15 s tells a closed one."""
        since = _int(_one(req.query, "since", "0"), 0, 1 << 62)
        if self._streams >= MAX_STREAMS:
            raise Refused(503, "too many live pages open; close one")
        spec = self.api.subscription({"since": since})
        return Response(
            200,
            b"",
            content_type="text/event-stream",
            stream=self._stream(spec),
        )

    def _stream(self, spec: Subscription) -> Iterator[bytes]:
        # Counted once it runs: a stream never started (the page went away first)
        # has nothing to give back.
        cursor = spec.since
        with self._moved:
            self._streams += 1
        try:
            yield b"retry: 2000\n\n"
            while True:
                batch = self.api.feed_batch(spec, cursor)
                if batch.reset is not None:
                    yield b"event: reset\ndata: {}\n\n"
                    return
                for entry in batch.entries:
                    data = json.dumps(entry, ensure_ascii=True, separators=(",", ":"))
                    yield f"id: {entry['seq']}\nevent: change\ndata: {data}\n\n".encode()
                cursor = batch.seq
                if batch.more:
                    continue
                with self._moved:
                    if self.api.writer.seq == cursor:
                        self._moved.wait(15)
                if self.api.writer.seq == cursor:
                    yield b": still here\n\n"
        finally:
            with self._moved:
                self._streams -= 1

    def _on_commit(self, seq: int) -> None:
        if not self._streams:
            return  # no live page open: nothing for the writer's thread to do
        with self._moved:
            self._moved.notify_all()

    # -- the frame ---------------------------------------------------------------------

    def _login_form(self, why: str) -> bytes:
        body = (
            (f"<p class=error>{html.escape(why)}</p>" if why else "")
            + "<form method=post action='/login'><label>token <input type=password name=token"
            " autocomplete=off></label> <button>Sign in</button></form>"
            "<p>An admin makes one with <code>filewarden web-token</code>.</p>"
        )
        return self._page("Sign in", body, None)

    def _page(self, title: str, body: str, viewer: Viewer | None) -> bytes:
        nav = (
            "<nav><a href='/'>Overview</a> <a href='/missing'>Missing</a>"
            " <a href='/offline'>Offline</a> <a href='/live'>Live</a>"
            "<form method=get action='/file' class=find><input name=path placeholder='a path'>"
            "<button>Open</button></form>"
            f"<span class=who>{html.escape(viewer.token.label)} ({viewer.token.role})"
            " <a href='/logout'>sign out</a></span></nav>"
            if viewer
            else ""
        )
        csrf = f"<meta name=csrf content='{self.csrf(viewer)}'>" if viewer else ""
        return (
            f"<!doctype html><html lang=en><head><meta charset=utf-8>{csrf}"
            f"<title>{html.escape(title)} · filewarden</title><style>{_STYLE}</style>"
            "<script src='/static/live.js' defer></script></head>"
            f"<body>{nav}<h1>{html.escape(title)}</h1>{body}</body></html>"
        ).encode("utf-8", "surrogateescape")


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1em 2em;color:#222}"
    "nav{display:flex;gap:1em;align-items:center;border-bottom:1px solid #ccc;padding:.5em 0}"
    "nav .who{margin-left:auto;color:#666}form.find{display:inline}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #eee;"
    "padding:.2em .6em;text-align:left;vertical-align:top}td.n{text-align:right}"
    ".offline{color:#a60}.online{color:#070}.error{color:#b00}"
    "form.filter label{margin-right:1em}td.t{white-space:nowrap}"
    "figure.chart{margin:.5em 0}figcaption{color:#666}"
)


# What an entry of each kind did to the counts of (present, missing) files; a root's
# offline and online took ``files`` files out of the present ones and back.
_DELTAS = {
    "new": (1, 0),
    "missing": (-1, 1),
    "restore": (1, -1),
    "relink": (1, -1),
    "retire": (-1, 0),
    "purge": (0, -1),
}


def _sparkline(label: str, values: list[int], first_day: int) -> str:
    """A small line chart (inline SVG) of one count a day."""
    width, height = 480, 60
    low, high = min(values), max(values)
    span = max(1, high - low)
    step = width / max(1, len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 4 - (v - low) / span * (height - 8):.1f}"
        for i, v in enumerate(values)
    )
    start = time.strftime("%Y-%m-%d", time.gmtime(first_day * 86400))
    return (
        f"<figure class=chart><svg viewBox='0 0 {width} {height}' width={width} height={height}"
        f" role=img aria-label='{html.escape(label)}'><polyline fill=none stroke=#36c"
        f" stroke-width=2 points='{points}'/></svg><figcaption>{html.escape(label)}: "
        f"{values[-1]:,} now, {low:,} to {high:,} since {start}</figcaption></figure>"
    )


def _live_row(e: Mapping[str, Any]) -> str:
    return (
        f"<tr><td class=n>{e['seq']}</td><td class=t>{shown(e['time'])}</td><td>{shown(e['kind'])}</td>"
        f"<td>{_file_link(e.get('id'), e.get('path') or e.get('root') or '')}</td>"
        f"<td>{shown(e.get('old_path') or '')}</td></tr>"
    )


def _file_link(file_id: Any, text: str) -> str:
    return f"<a href='/file?id={int(file_id)}'>{shown(text)}</a>" if file_id else shown(text)


def _under(record: Mapping[str, Any]) -> str:
    """A record's path below its root (the root has a column of its own)."""
    path, root = str(record["path"]), str(record["root"])
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def _peer(viewer: Viewer) -> Peer:
    """The methods' caller for a page: an admin if its token is an admin's."""
    return Peer(0, -1, -1, viewer.token.role == "admin")


def _one(fields: Mapping[str, list[str]], key: str, default: str = "") -> str:
    """The first value of a query's or form's field."""
    values = fields.get(key)
    return values[0] if values else default


def _cookie(headers: Message, name: str) -> str:
    jar = http.cookies.SimpleCookie()
    with contextlib.suppress(http.cookies.CookieError):
        jar.load(headers.get("Cookie") or "")
    return jar[name].value if name in jar else ""


def _int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise Refused(400, f"{text!r} is not a number") from None
    if not low <= value <= high:
        raise Refused(400, f"{value} is out of range")
    return value


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise Refused(400, f"{text!r} is not a number of days") from None
    if not 0 <= days <= 1e6:
        raise Refused(400, "days must be 0 or more")
    return days * 86400


# Progressive: the pages work without it. On the overview it reloads the roots'
# table when the journal says something happened; on the live page it adds each
# new entry on top. Names go in as text, never as markup.
LIVE_JS = b"""
"use strict";
(function () {
  document.querySelectorAll("button[data-confirm]").forEach(function (b) {
    b.addEventListener("click", function (ev) {
      if (!window.confirm(b.dataset.confirm)) ev.preventDefault();
    });
  });
  var box = document.querySelector("[data-live]");
  if (!box || !window.EventSource) return;
  function shown(text) {
    return String(text).replace(/[\\udc80-\\udcff]/g, function (c) {
      return "\\\\x" + (c.charCodeAt(0) - 0xdc00).toString(16).padStart(2, "0");
    }).replace(/[\\u0000-\\u001f\\u007f]/g, function (c) {
      return "\\\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
    });
  }
  var pending = null;
  function refresh() {
    pending = null;
    fetch(location.href, {credentials: "same-origin"}).then(function (r) {
      return r.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(box.id);
      if (fresh) box.innerHTML = fresh.innerHTML;
    });
  }
  var events = new EventSource("/events?since=" + (box.dataset.seq || "0"));
  events.addEventListener("change", function (ev) {
    var e = JSON.parse(ev.data);
    if (box.dataset.live === "feed") {
      var row = document.createElement("tr");
      [e.seq, e.time, e.kind, e.path || e.root || "", e.old_path || ""].forEach(function (v, i) {
        var cell = document.createElement("td");
        if (i < 2) cell.className = i === 0 ? "n" : "t";
        var text = document.createTextNode(shown(v == null ? "" : v));
        if (i === 3 && e.id) {
          var link = document.createElement("a");
          link.href = "/file?id=" + Number(e.id);
          link.appendChild(text);
          cell.appendChild(link);
        } else {
          cell.appendChild(text);
        }
        row.appendChild(cell);
      });
      var head = box.querySelector("tr");
      head.parentNode.insertBefore(row, head.nextSibling);
    } else if (!pending) {
      pending = setTimeout(refresh, 250);
    }
  });
})();
"""
