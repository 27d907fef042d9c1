"""The web page over real HTTP, against a real daemon: access (tokens, roles, CSRF,
origin), the missing list (filter, sort, paging), removal, CSV export byte for byte
with the CLI's, a file's history after a rename, and names that must render as text."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from filewarden.client import Client
from filewarden.testing import DaemonProcess, Setup, write_config
from tests.conftest import make_files, run_cli
from tests.test_metrics import free_port


@dataclass
class Page:
    setup: Setup
    proc: DaemonProcess
    tree: Path
    port: int
    reader: str
    admin: str

    def client(self) -> Client:
        assert self.setup.socket is not None
        return Client(self.setup.socket)

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        cookie: str | None = None,
        form: dict[str, str | list[str]] | None = None,
        origin: str | None = "same",
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = f"filewarden_token={cookie}"
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if origin == "same":
            headers["Origin"] = f"http://127.0.0.1:{self.port}"
        elif origin is not None:
            headers["Origin"] = origin
        conn.request(method, path, body=body, headers=headers)
        res = conn.getresponse()
        data = res.read()
        conn.close()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, data

    def csrf(self, cookie: str) -> str:
        _, _, body = self.request("GET", "/missing", cookie=cookie)
        marker = b"<meta name=csrf content='"
        start = body.index(marker) + len(marker)
        return body[start : body.index(b"'", start)].decode()

    def missing(self) -> list[dict[str, object]]:
        listed = run_cli("missing", "--json", "--socket", str(self.setup.socket))
        return json.loads(listed.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def page(tmp_path: Path, tree: Path) -> Iterator[Page]:
    files = make_files(tree, 40, per_dir=10)
    port = free_port()
    setup = write_config(
        tmp_path,
        [tree],
        backend="watchdog",
        sections={"metrics": {"listen": f"127.0.0.1:{port}"}, "web": {"enabled": True}},
    )
    proc = setup.start()
    try:
        proc.wait_event("sweep.finish")
        for f in files[:25]:  # 25 missing files to look through
            f.unlink()
        with Client(setup.socket) as c:
            c.sync()
            reader = c.web_token("reader", "a reader")["token"]
            admin = c.web_token("admin", "an admin")["token"]
        yield Page(setup, proc, tree, port, reader, admin)
    finally:
        proc.stop()


def test_no_token_is_401_and_a_bad_one_too(page: Page) -> None:
    for path in ("/", "/missing", "/missing.csv", "/offline", "/file?id=1"):
        status, headers, body = page.request("GET", path)
        assert status == 401, path
        assert "bearer" in headers["www-authenticate"].lower()
        assert b"name=token" in body  # the sign-in form
    assert page.request("GET", "/", token="not-a-token")[0] == 401
    assert page.request("GET", "/", token=page.reader)[0] == 200
    # /metrics stays open to the scraper, as before the page existed.
    assert page.request("GET", "/metrics")[0] == 200


def test_revoked_token_is_refused(page: Page) -> None:
    with page.client() as c:
        made = c.web_token("reader", "short-lived")
        assert page.request("GET", "/", token=made["token"])[0] == 200
        c.revoke_web_token(made["id"])
        [listed] = [t for t in c.web_tokens() if t["id"] == made["id"]]
        assert listed["revoked"] is not None
    assert page.request("GET", "/", token=made["token"])[0] == 401


def test_sign_in_sets_a_strict_http_only_cookie(page: Page) -> None:
    status, headers, _ = page.request("POST", "/login", form={"token": page.reader})
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"filewarden_token={page.reader};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert page.request("GET", "/missing", cookie=page.reader)[0] == 200
    assert page.request("POST", "/login", form={"token": "wrong"})[0] == 401


def test_a_readers_token_cannot_remove(page: Page) -> None:
    before = page.missing()
    ids = [str(f["id"]) for f in before[:3]]
    status, _, _ = page.request(
        "POST", "/missing/remove", token=page.reader, form={"ids": ids, "remove": "selected"}
    )
    assert status == 403
    csrf = page.csrf(page.reader)
    status, _, _ = page.request(
        "POST",
        "/missing/remove",
        cookie=page.reader,
        form={"ids": ids, "remove": "selected", "csrf": csrf},
    )
    assert status == 403
    assert page.missing() == before
    # Nor is a reader shown the buttons.
    assert b"Remove selected" not in page.request("GET", "/missing", token=page.reader)[2]


def test_a_cross_site_post_is_refused(page: Page) -> None:
    before = page.missing()
    ids = [str(f["id"]) for f in before[:3]]
    csrf = page.csrf(page.admin)
    form: dict[str, str | list[str]] = {"ids": ids, "remove": "selected", "csrf": csrf}
    # Another site's form, with the admin's cookie riding along: refused...
    assert (
        page.request(
            "POST", "/missing/remove", cookie=page.admin, form=form, origin="http://evil.example"
        )[0]
        == 403
    )
    # ...as is a post of unknown origin, and one without the page's CSRF token.
    assert (
        page.request("POST", "/missing/remove", cookie=page.admin, form=form, origin=None)[0] == 403
    )
    assert (
        page.request("POST", "/missing/remove", cookie=page.admin, form={**form, "csrf": "0" * 64})[
            0
        ]
        == 403
    )
    assert page.missing() == before
    # The page's own form is taken.
    status, headers, _ = page.request("POST", "/missing/remove", cookie=page.admin, form=form)
    assert status == 303 and headers["location"].startswith("/missing")
    assert {f["id"] for f in page.missing()} == {f["id"] for f in before} - {int(i) for i in ids}


def test_filter_select_and_remove_all_that_match(page: Page) -> None:
    missing = page.missing()
    assert len(missing) == 25
    # make_files names them d0001/f00010.txt: those of d0001 are ten of the missing ones.
    in_dir1 = [f for f in missing if "/d0001/" in str(f["path"])]
    status, _, body = page.request("GET", "/missing?q=/d0001/&per=5", token=page.admin)
    assert status == 200
    assert f"<span id=total>{len(in_dir1)}</span>".encode() in body
    assert body.count(b"type=checkbox") == 5
    assert b">next</a>" in body and b">previous</a>" not in body
    _, _, page2 = page.request("GET", "/missing?q=/d0001/&per=5&offset=5", token=page.admin)
    assert b">previous</a>" in page2
    status, _, _ = page.request(
        "POST", "/missing/remove", token=page.admin, form={"q": "/d0001/", "remove": "all"}
    )
    assert status == 303
    left = page.missing()
    assert {f["id"] for f in left} == {f["id"] for f in missing} - {f["id"] for f in in_dir1}


@pytest.mark.parametrize("sort", ["missing_since", "size", "path", "id"])
def test_sorting_pages_cover_every_file_once(page: Page, sort: str) -> None:
    seen: list[str] = []
    for offset in range(0, 25, 7):
        _, _, body = page.request(
            "GET", f"/missing?sort={sort}&order=asc&per=7&offset={offset}", token=page.reader
        )
        seen += [part.split(b"'", 1)[0].decode() for part in body.split(b"<a href='/file?id=")[1:]]
    assert sorted(seen, key=int) == sorted((str(f["id"]) for f in page.missing()), key=int)
    assert len(seen) == 25


def test_csv_export_is_the_clis_byte_for_byte(page: Page) -> None:
    odd = page.tree / 'we,ird "name"\nline.txt'
    odd.write_text("x")
    with page.client() as c:
        c.sync()
    odd.unlink()
    with page.client() as c:
        c.sync()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "filewarden",
            "missing",
            "--csv",
            "--socket",
            str(page.setup.socket),
        ],
        check=True,
        capture_output=True,
    ).stdout
    status, headers, body = page.request("GET", "/missing.csv", token=page.reader)
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert body == cli
    assert body.count(b"\r\n") == 27  # the header, 26 rows (one name holds a newline)


def test_a_file_named_like_a_script_renders_as_text(page: Page) -> None:
    # A name cannot hold "/": the path is a directory and a file in it.
    evil = page.tree / "<script>alert(1)<" / "script>.jpg"
    evil.parent.mkdir()
    evil.write_text("x")
    with page.client() as c:
        c.sync()
        file_id = c.lookup(str(evil))["id"]  # type: ignore[index]
    evil.unlink()
    with page.client() as c:
        c.sync()
    for path in ("/missing", f"/file?id={file_id}"):
        _, headers, body = page.request("GET", path, token=page.reader)
        assert b"<script>" not in body, path
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in body, path
        assert "default-src 'self'" in headers["content-security-policy"]


def test_names_with_newlines_and_bytes_not_utf8_render_escaped(page: Page) -> None:
    odd = [page.tree / "two\nlines.txt", Path(os.fsdecode(bytes(page.tree) + b"/caf\xe9.txt"))]
    for p in odd:
        p.write_text("x")
    with page.client() as c:
        c.sync()
    for p in odd:
        p.unlink()
    with page.client() as c:
        c.sync()
    _, _, body = page.request("GET", "/missing", token=page.reader)
    assert b"two\\nlines.txt" in body  # shown as the two characters \n
    assert b"two\nlines" not in body
    assert b"caf\\xe9.txt" in body  # the byte that is not UTF-8, as \xe9
    body.decode("utf-8")  # the page itself is valid UTF-8


def test_a_files_history_after_a_rename(page: Page) -> None:
    src = page.tree / "d0003" / "f00035.txt"
    dst = page.tree / "renamed.txt"
    with page.client() as c:
        file_id = c.lookup(str(src))["id"]  # type: ignore[index]
        src.rename(dst)
        c.sync()
    for path in (f"/file?id={file_id}", "/file?" + urllib.parse.urlencode({"path": str(dst)})):
        status, _, body = page.request("GET", path, token=page.reader)
        assert status == 200
        history = body[body.index(b"<table id=history>") :]
        assert (
            b">move<" in history and str(dst).encode() in history and str(src).encode() in history
        )


def test_overview_and_offline_views(page: Page) -> None:
    _, _, body = page.request("GET", "/", token=page.reader)
    assert str(page.tree).encode() in body and b"online" in body
    # The chart, worked back from today's counts through the journal: all of today's.
    assert b"present: 15 now, 0 to 15 since" in body
    assert b"missing: 25 now, 0 to 25 since" in body
    _, _, body = page.request("GET", "/offline", token=page.reader)
    assert b"Every root is online." in body


def test_a_page_on_an_address_that_is_not_loopback_is_warned_of(tmp_path: Path, tree: Path) -> None:
    port = free_port()
    setup = write_config(
        tmp_path,
        [tree],
        sections={"metrics": {"listen": f"0.0.0.0:{port}"}, "web": {"enabled": True}},
    )
    proc = setup.start()
    try:
        proc.wait_event("web.insecure")
        assert [e["address"] for e in proc.seen("web.insecure")] == [f"0.0.0.0:{port}"]
    finally:
        proc.stop()
