"""The client commands as a user runs them, against a real daemon."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden.testing import DaemonProcess
from tests.conftest import api_config, make_files


class Cli:
    def __init__(self, sock: Path, tree: Path, proc: DaemonProcess) -> None:
        self.sock, self.tree, self.proc = sock, tree, proc

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        out = subprocess.run(
            [sys.executable, "-m", "filewarden", *args, "--socket", str(self.sock)],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert out.returncode == 0, out.stderr.decode(errors="replace")
        return out


@pytest.fixture
def cli(tmp_path: Path, tree: Path) -> Iterator[Cli]:
    make_files(tree, 12, per_dir=4)
    cfg = api_config(tmp_path, [tree])
    proc = cfg.start()
    try:
        proc.wait_event("sweep.finish")
        yield Cli(tmp_path / "run" / "fw.sock", tree, proc)
    finally:
        assert proc.stop() == 0


HOSTILE = [
    b"comma, in name.jpg",
    b'quote " in name.jpg',
    b"new\nline.jpg",
    b"caf\xe9 latin1.jpg",
    b'all, "of"\nthem \xff.jpg',
    b"plain.jpg",
]


def test_missing_csv_round_trips_hostile_names(cli: Cli) -> None:
    """`missing --csv` is RFC 4180 with the contract's header; hostile names survive Python's csv module byte-exact."""
    base = os.fsencode(cli.tree)
    for name in HOSTILE:
        with open(base + b"/" + name, "wb") as f:
            f.write(name)
    cli("sync")
    for name in HOSTILE:
        os.unlink(base + b"/" + name)
    cli("sync")
    out = cli("missing", "--csv").stdout
    assert out.startswith(b"id,root,path,size,hash,missing_since,missing_reason,last_seen\r\n")
    rows = list(csv.DictReader(io.StringIO(out.decode("utf-8", "surrogateescape"), newline="")))
    assert sorted(os.fsencode(r["path"]) for r in rows) == sorted(base + b"/" + n for n in HOSTILE)
    for r in rows:
        assert r["missing_reason"] == "not_found" and r["root"] == str(cli.tree)
        assert int(r["size"]) == len(os.fsencode(r["path"]).rsplit(b"/", 1)[1])
    as_json = json.loads(cli("missing", "--json").stdout)
    assert {f["id"] for f in as_json} == {int(r["id"]) for r in rows}
    table = cli("missing").stdout.decode("utf-8", "surrogateescape")
    assert (
        table.startswith("MISSING SINCE") and "new\\nline.jpg" in table
    )  # escaped, one line per file
    assert len(table.strip().splitlines()) == len(HOSTILE) + 1


def test_status_info_changes_annotate(cli: Cli) -> None:
    """status, info (by path and by id), changes and annotate print what a person needs."""
    status = cli("status").stdout.decode()
    assert str(cli.tree) in status and "12 present, 0 missing, 0 offline" in status
    path = cli.tree / "d0000" / "f00001.txt"
    info = cli("info", str(path), "--json").stdout
    record = json.loads(info)
    assert record["path"] == str(path) and record["history"][0]["kind"] == "new"
    cli("annotate", str(record["id"]), "rating", "5")
    assert cli("annotate", str(record["id"]), "rating").stdout == b"5\n"
    text = cli("info", str(record["id"])).stdout.decode()
    assert "annotation      rating = 5" in text and f"path            {path}" in text
    cli("annotate", str(record["id"]), "rating", "--delete")
    assert cli("annotate", str(record["id"]), "rating", ok=False).returncode == 5
    seq = json.loads(cli("changes", "--json").stdout)["seq"]
    changes = cli("changes", "--since", str(seq - 1)).stdout.decode().splitlines()
    # The last entry: the annotation removed (annotations are journaled, with their key).
    assert len(changes) == 1 and changes[0].split()[:1] + changes[0].split()[2:4] == [
        str(seq),
        "annotate",
        str(record["id"]),
    ]


def test_scan_wait_and_sync(cli: Cli) -> None:
    """scan --wait reports the finished sweep; sync reports the seq it reached."""
    (cli.tree / "late.txt").write_text("late")
    out = cli("scan", "--wait").stdout.decode()
    assert "done" in out and "new 1" in out
    assert cli("sync").stdout.decode().startswith("in sync at seq 13")


def test_purge_cli(cli: Cli) -> None:
    """purge --id with --yes removes a missing file and reports a present one (exit 1)."""
    gone = cli.tree / "d0001" / "f00004.txt"
    gone_id = json.loads(cli("info", str(gone), "--json").stdout)["id"]
    kept_id = json.loads(cli("info", str(cli.tree / "d0001" / "f00005.txt"), "--json").stdout)["id"]
    gone.unlink()
    cli("sync")
    out = cli("purge", "--id", str(gone_id), str(kept_id), "--yes", ok=False)
    assert out.returncode == 1
    assert out.stdout == b"purged 1\n" and b"only missing files are purged" in out.stderr
    assert cli("info", str(gone_id), ok=False).returncode == 5


def test_exit_codes(tmp_path: Path) -> None:
    """No daemon: exit 3 with a clear message; usage errors exit 2."""
    out = subprocess.run(
        [sys.executable, "-m", "filewarden", "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (
        out.returncode == 3
        and "cannot reach the daemon" in out.stderr
        and "filewarden run" in out.stderr
    )
    out = subprocess.run(
        [sys.executable, "-m", "filewarden", "purge", "--socket", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2


def test_socket_and_config_work_before_the_command_too(cli: Cli) -> None:
    """`filewarden --socket S status` is the same as `filewarden status --socket S`."""
    before = subprocess.run(
        [sys.executable, "-m", "filewarden", "--socket", str(cli.sock), "status", "--json"],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert before.returncode == 0, before.stderr
    after = cli("status", "--json")
    assert json.loads(before.stdout)["pid"] == json.loads(after.stdout)["pid"]
    gone = subprocess.run(
        [sys.executable, "-m", "filewarden", "--socket", str(cli.sock) + ".nope", "status"],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert gone.returncode == 3 and b".nope" in gone.stderr


def _cli_as_nobody(*args: str) -> int:
    """Run the CLI's main() in a child that has become uid/gid 65534 (no admin); its exit code.

    Imported here, as root: the venv may be readable by root only (CI's is).
    """
    from filewarden.cli import main

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with open(os.devnull, "w") as quiet:
                sys.stdout = sys.stderr = quiet
                code = main(list(args))
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_every_exit_code_from_a_real_failure(tmp_path: Path, tree: Path) -> None:
    """0 ok, 1 failure, 2 usage (the daemon's bad params too), 3 unreachable, 4 permission denied, 5 not found."""
    make_files(tree, 5)
    public = Path("/tmp") / f"fw-public-{os.getpid()}"
    public.mkdir(mode=0o755)
    sock = public / "fw.sock"
    cfg = api_config(tmp_path, [tree], socket=sock, socket_mode="0666")
    proc = cfg.start()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "filewarden", *args, "--socket", str(sock)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    try:
        proc.wait_event("sweep.finish")
        present = json.loads(cli("info", str(tree / "d0000" / "f00000.txt"), "--json").stdout)
        assert cli("status").returncode == 0
        # 1: a purge the daemon refuses (a present file is never purged).
        out = cli("purge", "--id", str(present["id"]), "--yes")
        assert out.returncode == 1 and "only missing files are purged" in out.stderr
        # 2: bad params, found by the daemon (-32602), and a usage error found by the CLI.
        out = cli("changes", "--limit", "-1")
        assert out.returncode == 2 and "limit" in out.stderr
        assert cli("purge").returncode == 2
        # 3: no daemon at that socket.
        none = [sys.executable, "-m", "filewarden", "status", "--socket", str(public / "none.sock")]
        assert subprocess.run(none, capture_output=True, timeout=60).returncode == 3
        # 4: a purge by a user who is neither root nor in admin_group.
        assert _cli_as_nobody("purge", "--all", "--yes", "--socket", str(sock)) == 4
        assert _cli_as_nobody("status", "--socket", str(sock)) == 0  # reads are for everyone
        # 5: an id or a path the catalog does not have.
        assert cli("info", "999999").returncode == 5
        assert cli("info", str(tree / "not-there.txt")).returncode == 5
    finally:
        assert proc.stop() == 0
        for p in public.iterdir():
            p.unlink()
        public.rmdir()
