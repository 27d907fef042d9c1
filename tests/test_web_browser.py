"""The web page in a real headless Chromium (Debian's, driven by Playwright): sign in,
watch a root go offline without a reload, filter and remove missing files, export the
CSV, follow a rename into a file's history, and the live feed. Each view's screenshot
goes to ``docs/screenshots/``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from filewarden.client import Client
from filewarden.testing import DaemonProcess, Setup, write_config
from tests.conftest import make_files
from tests.test_availability import Mounts
from tests.test_metrics import free_port

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root, headless, on a machine with no way out: no sandbox, nothing fetched.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is needed (apt-get install chromium; .ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Site:
    def __init__(self, setup: Setup, proc: DaemonProcess, lib: Path, port: int) -> None:
        self.setup, self.proc, self.lib, self.port = setup, proc, lib, port
        self.url = f"http://127.0.0.1:{port}"

    def client(self) -> Client:
        assert self.setup.socket is not None
        return Client(self.setup.socket)

    def cli(self, *args: str) -> bytes:
        return subprocess.run(
            [sys.executable, "-m", "filewarden", *args, "--socket", str(self.setup.socket)],
            check=True,
            capture_output=True,
        ).stdout


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, Mounts]]:
    if os.geteuid() != 0:
        pytest.skip("mounts a filesystem")
    lib = tmp_path / "library"
    lib.mkdir()
    mounts = Mounts()
    mounts.tmpfs(lib)
    port = free_port()
    setup = write_config(
        tmp_path,
        [{"path": str(lib), "require_mountpoint": True}],
        sections={"metrics": {"listen": f"127.0.0.1:{port}"}, "web": {"enabled": True}},
    )
    proc = setup.start()
    try:
        files = make_files(lib, 60, per_dir=10)
        proc.wait_event("sweep.finish")
        for f in files[:25]:
            f.unlink()
        (lib / "<script>alert(1)<").mkdir()
        (lib / "<script>alert(1)<" / "script>.jpg").write_text("x")
        s = Site(setup, proc, lib, port)
        with s.client() as c:
            c.sync()
        (lib / "<script>alert(1)<" / "script>.jpg").unlink()
        with s.client() as c:
            c.sync()
        yield s, mounts
    finally:
        proc.stop()
        mounts.close()


def signed_in(browser: Browser, site: Site) -> Page:
    with site.client() as c:
        token = c.web_token("admin", "browser test")["token"]
    page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page.goto(site.url + "/")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=token]", token)
    page.click("button:text('Sign in')")
    expect(page.locator("h1")).to_have_text("Overview")
    return page


def test_the_page_in_a_real_browser(browser: Browser, site: tuple[Site, Mounts]) -> None:
    s, mounts = site
    page = signed_in(browser, s)
    expect(page.locator("#roots")).to_contain_text("online")
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    # Filter the missing list, select three files, remove them.
    page.click("nav >> text=Missing")
    expect(page.locator("#total")).to_have_text("26")
    # The name made to look like markup is shown as text.
    expect(page.locator("#missing")).to_contain_text("<script>alert(1)</script>.jpg")
    page.screenshot(path=str(SHOTS / "missing.png"), full_page=True)
    page.fill("input[name=q]", "/d0001/")
    page.click("text=Show")
    expect(page.locator("#total")).to_have_text("10")
    boxes = page.locator("input[name=ids]")
    expect(boxes).to_have_count(10)
    chosen = [int(boxes.nth(i).get_attribute("value") or 0) for i in range(3)]
    for i in range(3):
        boxes.nth(i).check()
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    page.click("text=Remove selected")
    expect(page.locator("#total")).to_have_text("7")
    assert asked == ["Remove the selected files from the catalog for good?"]
    left = {f["id"] for f in json.loads(s.cli("missing", "--json"))}
    assert not left & set(chosen) and len(left) == 23

    # Export what is shown (the whole list): the CLI's CSV, byte for byte.
    page.goto(s.url + "/missing")
    with page.expect_download() as got:
        page.click("text=Export CSV")
    exported = Path(got.value.path()).read_bytes()
    assert exported == s.cli("missing", "--csv")

    # A rename, then the file's history, opened by its new path.
    src, dst = s.lib / "d0004" / "f00045.txt", s.lib / "renamed.txt"
    src.rename(dst)
    with s.client() as c:
        c.sync()
    page.fill("nav input[name=path]", str(dst))
    page.click("nav >> text=Open")
    history = page.locator("#history")
    expect(history).to_contain_text("move")
    expect(history).to_contain_text(str(src))
    page.screenshot(path=str(SHOTS / "file.png"), full_page=True)

    # The live feed: a rename shows up without a reload.
    page.click("nav >> text=Live")
    expect(page.locator("#feed")).to_contain_text(str(dst))
    (s.lib / "d0005").rename(s.lib / "moved-dir")
    expect(page.locator("#feed")).to_contain_text(str(s.lib / "moved-dir"), timeout=15_000)
    page.screenshot(path=str(SHOTS / "live.png"), full_page=True)

    # The overview sees the drive go away, without a reload.
    page.click("nav >> text=Overview")
    expect(page.locator("#roots td.online")).to_have_count(1)
    mounts.unmount(s.lib)
    expect(page.locator("#roots td.offline")).to_have_count(1, timeout=20_000)
    page.screenshot(path=str(SHOTS / "overview-offline.png"), full_page=True)
    page.click("nav >> text=Offline")
    expect(page.locator("#offline")).to_contain_text(str(s.lib))
    expect(page.locator("table.files a")).to_have_count(35)  # the drive's files, as they were
    page.screenshot(path=str(SHOTS / "offline.png"), full_page=True)
