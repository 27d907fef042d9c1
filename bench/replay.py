"""Replay check: `list`, `changes` and `missing --csv` answer byte for byte as before a change.

A scenario (renames, a directory move, a move between roots, deletions, an
editor-style save, files moved out and aside and back, annotations, a purge
by id, content duplicates, relinks by content, a root gone offline) is run
once; its catalog and its answers are kept. Any code can then be started on
a copy of that catalog over the same untouched tree and must answer the same
bytes. The code under test is the `filewarden` on PYTHONPATH:

    PYTHONPATH=CHECKOUT/daemon python bench/replay.py record DIR  # scenario, catalog, answers
    PYTHONPATH=CHECKOUT/daemon python bench/replay.py replay DIR  # same bytes? exit 1 if not
    PYTHONPATH=CHECKOUT/daemon python bench/replay.py live DIR    # replay, and the scenario again

Answers as a user gets them: `list` (every state, paged by 25) as the raw
JSON-RPC reply lines of the socket (the CLI has no `list`), `filewarden
changes --since S --limit 25 --json` paged from 0, and `filewarden missing --csv`.

A restart writes one thing the answers show: its start-up full sweep sets the
root's last sweep, and a present file's `last_seen` is reported as that. So in
the JSON answers, in `last_seen` fields only, a time within the daemon run
that answered becomes "<restart>"; nothing else is rewritten (DIR/answers/raw
keeps the bytes as answered). `live` runs the scenario from scratch into
DIR/live and compares with DIR/answers/raw after rewriting, on both sides,
only what two runs cannot share: RFC 3339 times, `inode` numbers, and the
tree's own path (in `path_b64` too).
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

PAGE = 25  # small pages, so that paging is exercised
MARKER = ".filewarden-root"
ANSWERS = ("list.json", "changes.json", "missing.csv")
STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
Answers = dict[str, bytes]

# The scenario, one step a line. `put PATH:SIZE[:TAG] ...`: SIZE bytes of TAG (default:
# the file's name), with a fixed mtime (from the line number). With the daemon running,
# each step is followed by `sync` and by the hasher's catching up.
TREE = f"""
put a/photos/p1.jpg:1000 a/photos/p2.jpg:2000 a/photos/p3.jpg:3000
put a/photos/2020/x.jpg:1500 a/photos/2020/y.jpg:1600
put a/docs/readme.txt:100 a/docs/notes.txt:200 a/docs/report.txt:300
put a/docs/caf\udce9.txt:50 'a/docs/say "hi", ok.txt:60'  # not UTF-8 (0xe9); CSV quoting
put a/music/s1.mp3:4000 a/music/s2.mp3:4100
put a/dup1.bin:777:same a/docs/dup2.bin:777:same  # content duplicates
put b/archive/old1.dat:5000 b/archive/old2.dat:5100 b/inbox/i1.txt:10 b/{MARKER}:0
"""
STEPS = """
annotate a/photos/p1.jpg rating 5       # annotations, to travel with their files
annotate a/music/s1.mp3 album 'Blue, "live"'
annotate a/photos/2020/x.jpg tag trip
mv a/photos/p1.jpg a/photos/p1-renamed.jpg
mv a/photos/2020 a/archive2020          # a directory move
mv a/music/s1.mp3 b/inbox/s1.mp3        # a move between roots
rm a/docs/notes.txt                     # deleted: missing
rm a/docs/caf\udce9.txt
rm 'a/docs/say "hi", ok.txt'
rm b/inbox/i1.txt
save a/docs/readme.txt:120              # an editor's save: a temp file renamed over it
mv a/docs/report.txt outside/report.txt # out of every root: missing,
mv outside/report.txt a/docs/report.txt # and back: restored
mv a/photos/p3.jpg a/aside-p3.jpg       # moved aside,
mv a/aside-p3.jpg a/photos/p3.jpg       # and back
put a/photos/p3-copy.jpg:3000:p3.jpg    # a copy of a present file: a new id
rm a/photos/p2.jpg                      # a hashed file deleted,
put a/back/p2-back.jpg:2000:p2.jpg      # back elsewhere: relinked by content
put a/old1.dat:5000:old1.dat            # copy, then delete the original: a move
rm b/archive/old1.dat
purge a/docs/notes.txt                  # by id
offline b                               # its marker deleted
"""


def rpc(sock: Path, method: str, params: dict[str, Any] | None = None) -> tuple[bytes, Any]:
    """One JSON-RPC call on a fresh connection: the reply line as sent, and its result."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, s.makefile("rb") as f:
        s.settimeout(120)
        s.connect(str(sock))
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(request).encode() + b"\n")
        line = f.readline()
    reply = json.loads(line)
    if "error" in reply:
        raise SystemExit(f"{method}: {reply['error']}")
    return line, reply["result"]


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Daemon:
    """`python -m filewarden run` on its own state dir and socket; JSON log to a file."""

    def __init__(self, tree: Path, catalog: Path | None = None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="fw-replay-"))
        self.state, self.sock, self.log = self.work / "state", self.work / "s", self.work / "log"
        self.state.mkdir()
        if catalog is not None:
            shutil.copyfile(catalog, self.state / "catalog.db")
        config = self.work / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{self.state}"\nsocket = "{self.sock}"\n'
            '[sweep]\ninterval = "never"\nquick_interval = "never"\nmount_check_interval = "200ms"\n'
            '[watch]\nbackend = "watchdog"\n[hash]\nenabled = true\n'
            '[retention]\njournal_keep = "never"\npurge_missing_after = "never"\n'
            f'[[root]]\npath = "{tree / "a"}"\n[[root]]\npath = "{tree / "b"}"\nmarker = "{MARKER}"\n'
        )
        self.started = int(time.time() * 1000) / 1000  # RFC 3339 times are milliseconds, cut
        with open(self.log, "wb") as log:
            cmd = [sys.executable, "-m", "filewarden", "run", "--config", str(config)]
            self.proc = subprocess.Popen([*cmd, "--log-format", "json"], stdout=log, stderr=log)
        self.until("the socket answers", lambda: self.status() is not None)

    def status(self) -> Any:
        try:
            return rpc(self.sock, "status")[1]
        except OSError:
            return None

    def until(self, what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.fail(f"not so: {what}")
            time.sleep(0.05)

    def fail(self, why: str) -> None:
        self.proc.kill()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{why} (daemon exit {self.proc.wait()}); log tail:\n{tail}")

    def cli(self, *args: str) -> bytes:
        """`filewarden COMMAND --socket S ARGS...`: its stdout, exactly."""
        cmd = [sys.executable, "-m", "filewarden", args[0], "--socket", str(self.sock), *args[1:]]
        done = subprocess.run(cmd, capture_output=True, check=False)
        if done.returncode != 0:
            self.fail(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.decode()}")
        return done.stdout

    def idle(self, startup: bool = False) -> bool:
        """Nothing to hash and no sweep running; with ``startup``, also every online root
        fully swept since this start (asked instead of `sync`, whose cookie files would
        touch the roots)."""
        st = self.status()
        if st["jobs"] or st["hashing"]["pending"] or st["hashing"]["busy"]:
            return False
        online = [r["last_full_sweep"] for r in st["roots"] if r["state"] == "online"]
        return not startup or all(t and stamp(t) >= self.started for t in online)

    def settle(self) -> None:
        self.cli("sync")
        self.until("nothing left to hash", self.idle)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            if self.proc.wait(30) != 0:
                self.fail("the daemon failed")
        except subprocess.TimeoutExpired:
            self.fail("no exit within 30 s of SIGTERM")


def put(tree: Path, arg: str, n: int, *, temp: bool = False) -> None:
    """`PATH:SIZE[:TAG]`, with mtime number ``n``; ``temp``: written aside, renamed over it."""
    name, size, tag = [*arg.split(":"), ""][:3]
    file = tree / name
    aside = file.with_name(f".{file.name}.tmp") if temp else file
    aside.parent.mkdir(parents=True, exist_ok=True)
    aside.write_bytes(
        ((tag or file.name).encode(errors="surrogateescape") * int(size))[: int(size)]
    )
    mtime = (1_600_000_000 + n * 1000) * 10**9 + n
    os.utime(aside, ns=(mtime, mtime))
    if temp:
        aside.rename(file)


def file_id(d: Daemon | None, path: Path) -> int:
    return int(rpc(d.sock, "lookup", {"path": str(path)})[1]["id"]) if d else 0


def offline(d: Daemon, path: Path) -> bool:
    return (str(path), "offline") in ((r["path"], r["state"]) for r in d.status()["roots"])


def play(script: str, tree: Path, d: Daemon | None, first: int = 0) -> None:
    purge: dict[str, int] = {}
    for n, line in enumerate(script.splitlines(), first):
        op, *args = shlex.split(line, comments=True) or ["#"]
        path = tree / args[0] if args else tree
        if op in ("put", "save"):
            for k, arg in enumerate(args):
                put(tree, arg, n * 10 + k, temp=op == "save")
        elif op == "mv":
            os.rename(path, tree / args[1])
        elif op == "rm":
            purge[args[0]] = file_id(d, path)  # known now: the CLI cannot look up a missing file
            os.unlink(path)
        elif op == "#":
            continue
        elif d is None:
            raise SystemExit(f"{op}: not without the daemon")
        elif op == "annotate":
            d.cli("annotate", str(file_id(d, path)), args[1], args[2])
        elif op == "purge":
            d.cli("purge", "--id", str(purge[args[0]]), "--yes")
        elif op == "offline":
            os.unlink(path / MARKER)
            d.until(f"{path} offline", partial(offline, d, path))
        if d:
            d.settle()


def answers(d: Daemon) -> Answers:
    """The three answers, raw: every page, concatenated as received."""
    out = {name: b"" for name in ANSWERS}
    after: int | None = 0
    while after is not None:
        line, page = rpc(d.sock, "list", {"after_id": after, "limit": PAGE})
        out["list.json"] += line
        after = page["next_after_id"]
    since, more = 0, True
    while more:
        text = d.cli("changes", "--since", str(since), "--limit", str(PAGE), "--json")
        out["changes.json"] += text
        result = json.loads(text)
        since, more = result["seq"], bool(result["changes"])
    out["missing.csv"] = d.cli("missing", "--csv")
    return out


def answers_of(catalog: Path, tree: Path) -> tuple[Answers, Answers]:
    """Start on a copy of ``catalog`` over ``tree``: the raw answers, and without the restart:
    `last_seen` times within this daemon run become "<restart>", in JSON answers only."""
    d = Daemon(tree, catalog)
    try:
        d.until("start-up sweeps done", lambda: d.idle(startup=True))
        raw, ended = answers(d), time.time()
    finally:
        d.stop()
    shutil.rmtree(d.work)

    def sub(m: re.Match[bytes]) -> bytes:
        inside = d.started <= stamp(m.group(2).decode()) <= ended
        return m.group(1) + b'"<restart>"' if inside else m.group(0)

    seen = re.compile(rb'("last_seen": ?)"(' + STAMP + rb')"')
    return raw, {k: seen.sub(sub, v) if k.endswith(".json") else v for k, v in raw.items()}


def record_into(base: Path) -> tuple[Answers, Answers]:
    tree, recorded = base / "tree", base / "catalog.recorded.db"
    shutil.rmtree(tree, ignore_errors=True)
    play(TREE, tree, None)
    (tree / "outside").mkdir()
    d = Daemon(tree)
    try:
        d.settle()
        play(STEPS, tree, d, first=100)
    finally:
        d.stop()
    recorded.unlink(missing_ok=True)  # one self-contained file: the WAL folded in
    with closing(sqlite3.connect(d.state / "catalog.db")) as src:
        with closing(sqlite3.connect(recorded)) as dst:
            src.backup(dst)
    shutil.rmtree(d.work)
    return answers_of(recorded, tree)


def compare(label: str, want: Answers, got: Answers) -> bool:
    for name in ANSWERS:
        if want[name] == got[name]:
            print(f"{label} {name}: identical ({len(got[name])} bytes)")
            continue
        print(f"{label} {name}: DIFFERENT")
        # One file record a line for the socket's one-line replies; CRs shown.
        w, g = (x[name].replace(b"},{", b"},\n{").replace(b"\r", b"\\r") for x in (want, got))
        old, new = (t.decode(errors="replace").split("\n") for t in (w, g))
        diff = difflib.unified_diff(old, new, "recorded", "now", lineterm="")
        for line in list(diff)[:40]:
            print("    " + line[:600])
    return all(want[name] == got[name] for name in ANSWERS)


def normalise_run(data: bytes, tree: Path) -> bytes:
    """What two runs of the scenario cannot share: times, inode numbers, the tree's path."""
    prefix = str(tree).encode()

    def b64(m: re.Match[bytes]) -> bytes:
        path = base64.b64decode(m.group(2)).replace(prefix, b"<tree>", 1)
        return m.group(1) + b'"' + base64.b64encode(path) + b'"'

    data = re.sub(rb'("(?:old_)?path_b64": ?)"([A-Za-z0-9+/=]*)"', b64, data)
    data = re.sub(STAMP, b"<time>", data.replace(prefix, b"<tree>"))
    return re.sub(rb'("inode": ?)\d+', rb"\1<inode>", data.replace(b"<restart>", b"<time>"))


def save(folder: Path, answers: Answers) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in answers.items():
        (folder / name).write_bytes(data)


def load(folder: Path) -> Answers:
    return {name: (folder / name).read_bytes() for name in ANSWERS}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("record", "replay", "live"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, base = sys.argv[1], Path(sys.argv[2]).resolve()
    if mode == "record":
        base.mkdir(parents=True, exist_ok=True)
        raw, clean = record_into(base)
        save(base / "answers", clean)
        save(base / "answers/raw", raw)
        print(f"recorded {base}/catalog.recorded.db and {base}/answers/")
        return 0
    ok = compare(
        "replay", load(base / "answers"), answers_of(base / "catalog.recorded.db", base / "tree")[1]
    )
    if mode == "live":
        raw, _ = record_into(base / "live")
        save(base / "live/answers/raw", raw)
        want = {k: normalise_run(v, base / "tree") for k, v in load(base / "answers/raw").items()}
        got = {k: normalise_run(v, base / "live/tree") for k, v in raw.items()}
        ok = compare("live", want, got) and ok
    print("identical" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
