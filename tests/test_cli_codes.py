"""The CLI's exit codes and what it prints, run in this process against a daemon in this process.

0 ok, 1 failure, 2 usage (the daemon's bad params too), 3 unreachable,
4 permission denied, 5 not found, 130 on Ctrl-C, and 0 when the reader of
the output goes away (``| head``). Terminals are real pseudo-terminals; a
daemon busy writing is one whose catalog another program holds locked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden import __version__
from filewarden.cli import main
from tests.conftest import make_files, wait_for
from tests.daemon_inproc import Live, Start, as_user, public_dir, starting


@pytest.fixture
def start(tmp_path: Path, tree: Path) -> Iterator[Start]:
    yield from starting(tmp_path, tree)


class Cli:
    """``filewarden ARGS --socket S`` in this process: (exit code, stdout, stderr)."""

    def __init__(self, live: Live, capsys: pytest.CaptureFixture[str]) -> None:
        self.live, self.capsys = live, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--socket", str(self.live.sock)])
        out, err = self.capsys.readouterr()
        return code, out, err


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _job(live: Live, job_id: int) -> dict[str, Any]:
    return next(j for j in live.call("jobs") if j["id"] == job_id)


def _hashed(live: Live, path: Path) -> dict[str, Any]:
    """The record of ``path`` once the background hasher has hashed it."""
    record: dict[str, Any] = wait_for(
        lambda: (r := live.record(live.id_of(path)))["hash"] and r, timeout=30
    )
    return record


class Terminal:
    """A pseudo-terminal; its output is read (and matched) by a thread while a command runs."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.file = open(slave, "w", buffering=1, encoding="utf-8")
        self.output = b""
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal was closed
                chunk = b""
            with self._seen:
                self.output += chunk
                self._seen.notify_all()
            if not chunk:
                return

    def when(self, text: bytes, then: Callable[[], None]) -> threading.Thread:
        """Call ``then`` once ``text`` has been written to the terminal."""

        def wait() -> None:
            with self._seen:
                self._seen.wait_for(lambda: text in self.output, timeout=60)
            then()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        return thread

    def close(self) -> bytes:
        self.file.close()
        self._reader.join(10)
        os.close(self.master)
        return self.output


# --- 0 and 1: what commands print, and when they fail -----------------------------------


def test_status_prints_roots_counts_running_and_queued_sweeps_and_warnings(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """status: the daemon line, a row per root (state and reason, counts, last sweep or never), totals, each sweep at work, each warning; exit 0."""
    live = start(other_online=False)
    cli = Cli(live, capsys)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    tree, other = str(live.tree), str(live.other)
    assert cli("scan", "--wait")[0] == 1  # the offline root's sweep is aborted: a warning
    with live.writes_blocked():
        busy = live.call("scan", {"root": tree})["job"]["id"]
        wait_for(lambda: _job(live, busy)["state"] == "running" and _job(live, busy)["done"] == 4)
        # Queued behind the busy sweep, and that is no failure.
        code, out, err = cli("scan")
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            f"job {busy + 1}: full sweep of {tree}: queued",
            f"job {busy + 2}: full sweep of {other}: queued",
        ]
        st = live.call("status")
        code, out, err = cli("status")
    assert live.d.syncer.sync(30)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.fullmatch(
        rf"filewarden {re.escape(__version__)}, pid {os.getpid()}, up [\dhms ]+,"
        rf" journal seq {st['seq']}",
        lines[0],
    ), lines[0]
    roots = {r["path"]: r for r in st["roots"]}
    assert [_cells(line) for line in lines[1:4]] == [
        ["ROOT", "STATE", "BACKEND", "PRESENT", "MISSING", "OFFLINE", "LAST SWEEP"],
        [tree, "online", roots[tree]["backend"], "4", "0", "0", roots[tree]["last_sweep"]],
        [
            other,
            "offline (marker .online is missing)",
            roots[other]["backend"],
            "0",
            "0",
            "0",
            "never",
        ],
    ]
    assert lines[4:] == [
        "total: 4 present, 0 missing, 0 offline",
        f"job {busy}: full sweep of {tree}: running, 4/4 files",
        f"job {busy + 1}: full sweep of {tree}: queued, 0 files",
        f"job {busy + 2}: full sweep of {other}: queued, 0 files",
        f"warning: {other}: last sweep aborted: root offline: marker .online is missing",
    ]
    code, out, _ = cli("status", "--json")
    status = json.loads(out)
    assert code == 0 and status["pid"] == os.getpid()
    assert [r["path"] for r in status["roots"]] == [tree, other]


def test_scan_exits_1_when_a_sweep_is_not_done(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """scan --wait prints each sweep with its counts or error; exit 0 when all are done, 1 when one is aborted or the named root is offline, 5 for no such root."""
    live = start(other_online=False)
    cli = Cli(live, capsys)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    tree, other = str(live.tree), str(live.other)
    code, out, err = cli("scan", "--wait")
    assert (code, err) == (1, "")
    first = int(out.split()[1].rstrip(":"))
    assert out.splitlines() == [
        f"job {first}: full sweep of {tree}: done (files 4, dirs_listed 2)",
        f"job {first + 1}: full sweep of {other}: aborted: root offline: marker .online is missing",
    ]
    assert cli("scan", tree, "--wait") == (
        0,
        f"job {first + 2}: full sweep of {tree}: done (files 4, dirs_listed 2)\n",
        "",
    )
    assert cli("scan", other) == (
        1,
        "",
        f"filewarden: root {other} is offline: marker .online is missing\n",
    )
    nowhere = str(live.tree / "nowhere")
    assert cli("scan", nowhere) == (5, "", f"filewarden: no configured root {nowhere!r}\n")


def test_scan_wait_on_a_terminal_shows_progress_until_the_sweep_is_done(
    start: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, scan --wait redraws a progress line while its sweep is queued and while it runs, and reports it once done."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    tree = str(live.tree)
    full_bar = b"\r[" + b"=" * 30 + b"] 4/4 files"

    # Queued behind another root's sweep, which waits for the catalog.
    with live.writes_blocked() as release:
        busy = live.call("scan", {"root": str(live.other)})["job"]["id"]
        wait_for(lambda: _job(live, busy)["state"] == "running")
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term.file)
        term.when(b"\r", release)  # the first redraw
        code, out, _ = cli("scan", tree, "--wait")
        monkeypatch.undo()
        shown = term.close()
    assert (code, out) == (
        0,
        f"job {busy + 1}: full sweep of {tree}: done (files 4, dirs_listed 2)\n",
    )
    assert shown.startswith(b"\rindexing: 0 files") and shown.endswith(full_bar + b"\r\n")

    # Running, held at its last write until the terminal has shown it at work.
    with live.writes_blocked() as release:
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term.file)
        term.when(full_bar, release)
        code, out, _ = cli("scan", tree, "--wait")
        monkeypatch.undo()
        shown = term.close()
    assert (code, out) == (
        0,
        f"job {busy + 2}: full sweep of {tree}: done (files 4, dirs_listed 2)\n",
    )
    assert shown.count(full_bar) >= 2 and shown.endswith(full_bar + b"\r\n")


def test_info_by_path_and_by_id_prints_the_record_and_its_history(
    start: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """info PATH|ID: every field that has a value, annotations, history with old paths; a number that names an existing file is a path; exit 0."""
    live = start(hashing=True)
    cli = Cli(live, capsys)
    make_files(live.tree, 2)
    assert live.d.syncer.sync(30)
    first = live.tree / "d0000" / "f00000.txt"
    moved = live.tree / "moved.txt"
    first.rename(moved)
    assert live.d.syncer.sync(30)
    rec = _hashed(live, moved)
    live.call("annotate", {"id": rec["id"], "key": "rating", "value": "5"})
    live.call("annotate", {"id": rec["id"], "key": "caption", "value": "a cat\non two lines"})
    rec = live.record(rec["id"])  # its history now has the two annotations
    history = rec["history"]
    assert [h["kind"] for h in history] == ["new", "move", "annotate", "annotate"]
    new, move = (h for h in history if h["kind"] in ("new", "move"))
    expected = [
        f"id              {rec['id']}",
        f"root            {live.tree}",
        f"path            {moved}",
        "state           present",
        f"size            {rec['size']}",
        f"mtime_ns        {rec['mtime_ns']}",
        f"device          {rec['device']}",
        f"inode           {rec['inode']}",
        f"hash            {rec['hash']}",
        f"first_seen      {rec['first_seen']}",
        f"last_seen       {rec['last_seen']}",
        "annotation      caption = a cat\\non two lines",
        "annotation      rating = 5",
        "history:",
        f"  {new['seq']:>8}  {new['time']}  new      {first}",
        f"  {move['seq']:>8}  {move['time']}  move     {moved}  (from {first})",
    ]
    code, out, err = cli("info", str(moved))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    head = len(expected) - 2
    assert lines[:head] == expected[:head]
    assert len(lines) == head + len(history)  # a line per entry, in seq order
    assert [lines.index(expected[-2]), lines.index(expected[-1])] == [
        head + history.index(new),
        head + history.index(move),
    ]
    assert cli("info", str(rec["id"])) == (0, out, "")
    code, out, _ = cli("info", str(rec["id"]), "--json")
    assert code == 0 and json.loads(out) == live.record(rec["id"])
    # A file whose name is a number is looked up as a path, here and in the catalog.
    named = live.tree / str(rec["id"] + 1000)
    named.write_text("a file called a number")
    assert live.d.syncer.sync(30)
    monkeypatch.chdir(live.tree)
    code, out, _ = cli("info", named.name)
    assert code == 0 and f"path            {named}" in out.splitlines()


def test_info_of_a_missing_file_shows_since_when_and_why(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """info of a missing file adds missing_since and missing_reason and its `missing` entry."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 1)
    assert live.d.syncer.sync(30)
    gone = live.tree / "d0000" / "f00000.txt"
    file_id = live.id_of(gone)
    live.remove(gone)
    rec = live.record(file_id)
    code, out, _ = cli("info", str(file_id))
    lines = out.splitlines()
    assert code == 0
    assert lines[3] == "state           missing"
    assert lines[-5:-3] == [
        f"missing_since   {rec['missing_since']}",
        "missing_reason  deleted",
    ]
    entry = rec["history"][-1]
    assert lines[-1] == f"  {entry['seq']:>8}  {entry['time']}  missing  {gone}"


# --- 2, 4, 5: refused --------------------------------------------------------------------


def test_info_and_annotate_exit_5_for_what_is_not_there(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id, a path or an annotation that is not in the catalog: exit 5 with one line saying which."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 1)
    assert live.d.syncer.sync(30)
    not_there = live.tree / "not-there.txt"
    assert cli("info", "999999") == (5, "", "filewarden: no file with id 999999\n")
    assert cli("info", str(not_there)) == (
        5,
        "",
        f"filewarden: {not_there} is not in the catalog\n",
    )
    assert cli("annotate", "999999", "rating", "5") == (
        5,
        "",
        "filewarden: no file with id 999999\n",
    )
    assert cli("annotate", "999999", "rating") == (5, "", "filewarden: no file with id 999999\n")
    file_id = live.id_of(live.tree / "d0000" / "f00000.txt")
    assert cli("annotate", str(file_id), "rating") == (
        5,
        "",
        f"filewarden: file {file_id} has no annotation 'rating'\n",
    )


def test_annotate_sets_shows_and_deletes(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    """annotate ID KEY VALUE sets, ID KEY prints, --delete removes (with a value too); exit 0; a bad key is a usage error (2)."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 1)
    assert live.d.syncer.sync(30)
    file_id = live.id_of(live.tree / "d0000" / "f00000.txt")
    assert cli("annotate", str(file_id), "rating", "5") == (0, "", "")
    assert live.record(file_id)["annotations"] == {"rating": "5"}
    assert cli("annotate", str(file_id), "rating") == (0, "5\n", "")
    assert cli("annotate", str(file_id), "rating", "--delete") == (0, "", "")
    assert live.record(file_id)["annotations"] == {}
    # --delete wins over a value given with it.
    assert cli("annotate", str(file_id), "rating", "6") == (0, "", "")
    assert cli("annotate", str(file_id), "rating", "7", "--delete") == (0, "", "")
    assert live.record(file_id)["annotations"] == {}
    assert cli("annotate", str(file_id), "", "x") == (
        2,
        "",
        "filewarden: key must be 1 to 256 characters\n",
    )


def test_purge_exit_codes_and_what_it_says(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """purge prints how many went and each refusal; exit 0 when none was refused, 1 when one was, 2 for bad params."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    paths = [live.tree / "d0000" / f"f0000{i}.txt" for i in range(4)]
    ids = [live.id_of(p) for p in paths]
    live.remove(*paths[:3])
    assert cli("purge", "--id", str(ids[0]), str(ids[3]), "--yes") == (
        1,
        "purged 1\n",
        f"not purged: {ids[3]}: file is present; only missing files are purged\n",
    )
    assert cli("purge", "--older-than", "30d", "--yes") == (0, "purged 0\n", "")
    assert cli("purge", "--older-than", "never", "--yes") == (
        2,
        "",
        'filewarden: older_than: "never" is not allowed here\n',
    )
    assert cli("purge", "--all", "--yes") == (0, "purged 2\n", "")
    assert live.call("list", {"state": "missing"})["files"] == []
    with pytest.raises(SystemExit) as usage:
        main(["purge", "--socket", str(live.sock)])
    assert usage.value.code == 2
    assert (
        "one of the arguments --id --older-than --all --root is required" in capsys.readouterr().err
    )


def test_purge_asks_first_on_a_terminal(
    start: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, purge asks (y or yes, any case); anything else purges nothing (exit 1); --yes does not ask."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    paths = [live.tree / "d0000" / f"f0000{i}.txt" for i in range(4)]
    ids = [live.id_of(p) for p in paths]
    live.remove(*paths)
    master, slave = pty.openpty()
    monkeypatch.setattr(sys, "stdin", open(slave, encoding="utf-8"))

    def answer(text: str, *args: str) -> tuple[int, str, str]:
        os.write(master, text.encode() + b"\n")
        return cli("purge", *args)

    what = "Purge {} from the catalog, with their annotations? [y/N] "
    asked = what.format(f"files {ids[0]}, {ids[1]}")
    assert answer("n", "--id", str(ids[0]), str(ids[1])) == (1, asked, "nothing purged\n")
    assert answer("", "--id", str(ids[0]), str(ids[1])) == (1, asked, "nothing purged\n")
    assert answer("yes", "--id", str(ids[0]), str(ids[1])) == (0, asked + "purged 2\n", "")
    live.write("UPDATE files SET missing_since = missing_since - 7200 WHERE id = ?", ids[2])
    asked = what.format("every file missing for more than 1h")
    assert answer(" Y ", "--older-than", "1h") == (0, asked + "purged 1\n", "")
    # --yes does not ask: the answer typed ahead is still there for the next question.
    assert answer("n", "--all", "--yes") == (0, "purged 1\n", "")
    assert cli("purge", "--all") == (1, what.format("every missing file"), "nothing purged\n")
    sys.stdin.close()
    os.close(master)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_purge_and_accept_root_by_a_user_outside_admin_group_exit_4(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """Who is neither root nor in admin_group gets exit 4 and one line for purge and accept-root; reading is for everyone."""
    with public_dir() as public:
        live = start(sock=public / "fw.sock")
        cli = Cli(live, capsys)
        make_files(live.tree, 1)
        assert live.d.syncer.sync(30)
        live.remove(live.tree / "d0000" / "f00000.txt")
        assert cli("purge", "--all", "--yes") == (0, "purged 1\n", "")

        def as_nobody(*args: str) -> Any:
            def work() -> list[object]:
                sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
                code = main([*args, "--socket", str(live.sock)])
                return [code, sys.stdout.getvalue(), sys.stderr.getvalue()]

            return as_user(65534, work)

        assert as_nobody("purge", "--all", "--yes") == [
            4,
            "",
            "filewarden: purge is for root and members of admin_group\n",
        ]
        assert as_nobody("accept-root", str(live.tree)) == [
            4,
            "",
            "filewarden: accept_root is for root and members of admin_group\n",
        ]
        assert as_nobody("sync")[0] == 0
        live.close()


def test_accept_root_exit_0_when_online_and_1_when_still_offline(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """accept-root: online → exit 0; still offline → exit 1 with the reason; no such root → 5."""
    live = start(other_online=False)
    cli = Cli(live, capsys)
    assert cli("accept-root", str(live.tree)) == (0, f"{live.tree}: accepted; online\n", "")
    assert cli("accept-root", str(live.other)) == (
        1,
        "",
        f"{live.other}: accepted, but still offline: marker .online is missing\n",
    )
    nowhere = str(live.tree / "nowhere")
    assert cli("accept-root", nowhere) == (5, "", f"filewarden: no configured root {nowhere!r}\n")


def test_sync_exit_0_in_sync_and_1_when_it_times_out(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    """sync prints the seq it reached; when the catalog cannot take the change in time, exit 1 and say so."""
    live = start()
    cli = Cli(live, capsys)
    make_files(live.tree, 2)
    assert live.d.syncer.sync(30)
    seq = live.call("changes", {"since": 0})["seq"]
    assert cli("sync") == (0, f"in sync at seq {seq}\n", "")
    with live.writes_blocked() as release:
        (live.tree / "late.txt").write_text("a change the catalog cannot take yet")
        # Were the timeout not passed on, the daemon's own (60 s) would wait for this.
        safety = threading.Timer(20, release)
        safety.start()
        assert cli("sync", "--timeout", "0.3") == (1, "", "filewarden: not in sync within 0.3 s\n")
        safety.cancel()
    # The change waited for the lock: it is in once the lock is let go.
    assert cli("sync")[0] == 0
    assert live.call("lookup", {"path": str(live.tree / "late.txt")})["state"] == "present"


# --- 2, 3, 130, and a closed pipe: the command line and the connection ------------------


def test_no_daemon_exits_3_and_a_config_that_cannot_be_read_exits_2(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """No daemon at the socket: exit 3, naming it. An unreadable config: exit 2, naming it, with its own bytes when they are not UTF-8."""
    none = tmp_path / "none.sock"
    assert main(["status", "--socket", str(none)]) == 3
    assert capfdbinary.readouterr() == (
        b"",
        f"filewarden: cannot reach the daemon at {none}: No such file or directory"
        " (is `filewarden run` running?)\n".encode(),
    )
    name = os.fsencode(tmp_path) + b"/caf\xe9.toml"
    assert main(["status", "--config", os.fsdecode(name)]) == 2
    assert capfdbinary.readouterr() == (
        b"",
        b"filewarden: " + name + b": cannot read: No such file or directory\n",
    )


def test_socket_and_config_may_come_before_the_command(
    start: Start, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`filewarden --socket S status` and `--config F status` reach the daemon; the command's own --socket wins."""
    live = start()
    sock, cfg = str(live.sock), str(live.config)
    none = str(tmp_path / "none.sock")
    assert main(["--socket", sock, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == os.getpid()
    assert main(["--config", cfg, "sync"]) == 0
    assert main(["sync", "--config", cfg]) == 0
    assert main(["--socket", none, "sync", "--socket", sock]) == 0
    assert main(["--config", str(tmp_path / "none.toml"), "sync", "--socket", sock]) == 0
    assert main(["--socket", none, "sync"]) == 3
    assert main(["check-config", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert out.count("in sync at seq") == 4 and f"{cfg}: ok (2 roots," in out


def test_ctrl_c_exits_130(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while waiting for a daemon that does not answer: exit 130."""
    path = str(tmp_path / "stuck.sock")
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(path)
    stuck.listen(1)

    def interrupt() -> None:
        conn, _ = stuck.accept()
        if conn.recv(4096):  # the request is in: the command waits for its answer
            os.kill(os.getpid(), signal.SIGINT)
        conn.close()

    # Python's own handler, as the command has it (a test runner may ignore SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    try:
        assert main(["status", "--socket", path]) == 130
    finally:
        thread.join(10)
        stuck.close()
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr() == ("", "")


def test_a_reader_that_goes_away_is_no_failure(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output into a pipe nobody reads any more (`| head`): exit 0, no traceback."""
    live = start()
    read, write = os.pipe()
    os.close(read)
    closed = io.TextIOWrapper(io.FileIO(write, "w"), encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["status", "--json", "--socket", str(live.sock)]) == 0
    monkeypatch.undo()
    with contextlib.suppress(BrokenPipeError):
        closed.close()
