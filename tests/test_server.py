"""The socket API against a real daemon process and a real Unix socket."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden import catalog
from filewarden.client import Client
from filewarden.protocol import RpcError
from filewarden.testing import DaemonProcess
from tests.conftest import api_config, make_files, rss_kib


class Running:
    """A daemon on a tree, its socket, and the files it was started with."""

    def __init__(
        self, tmp: Path, tree: Path, files: list[Path], proc: DaemonProcess, sock: Path
    ) -> None:
        self.tmp, self.tree, self.files, self.proc, self.sock = tmp, tree, files, proc, sock

    def client(self) -> Client:
        return Client(self.sock, timeout=30)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.client() as c:
            return c.call(method, params)


@pytest.fixture
def running(tmp_path: Path, tree: Path) -> Iterator[Running]:
    files = make_files(tree, 60, per_dir=20)
    sock = tmp_path / "run" / "fw.sock"
    cfg = api_config(tmp_path, [tree], socket=sock, socket_mode="0660")
    proc = cfg.start()
    try:
        proc.wait_event("sweep.finish")
        yield Running(tmp_path, tree, files, proc, sock)
    finally:
        assert proc.stop() == 0


def raw(
    sock: Path, data: bytes, *, read_lines: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    """Send raw bytes on a fresh connection and read ``read_lines`` JSON answers."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(data)
        f = s.makefile("rb")
        return [json.loads(f.readline()) for _ in range(read_lines)]


def test_status_shape(running: Running) -> None:
    """status carries the contract's fields and exact counts."""
    st = running.call("status")
    assert {"version", "pid", "uptime_s", "seq", "roots", "totals", "jobs", "warnings"} <= set(st)
    assert st["pid"] == running.proc.proc.pid
    [root] = st["roots"]
    assert root["path"] == str(running.tree) and root["state"] == "online"
    assert root["files"] == {"present": 60, "missing": 0, "offline": 0}
    assert {"mode", "backend", "last_sweep", "warnings"} <= set(root)
    assert st["totals"] == {"present": 60, "missing": 0, "offline": 0}
    assert st["seq"] == 60
    # The daemon's memory, as the kernel counts it, and SQLite's share under its budget.
    memory = st["memory"]
    assert memory["rss_kib"] == pytest.approx(rss_kib(running.proc.proc.pid), rel=0.2)
    assert memory["sqlite_budget_kib"] == catalog.MEMORY_BUDGET_KIB
    assert 0 < memory["sqlite_kib"] < min(memory["rss_kib"], memory["sqlite_budget_kib"])


def test_lookup_file_and_history(running: Running) -> None:
    """lookup finds a file by path (or path_b64), file gives the record with its history."""
    path = running.files[7]
    rec = running.call("lookup", {"path": str(path)})
    assert (
        rec["path"] == str(path) and rec["root"] == str(running.tree) and rec["state"] == "present"
    )
    assert rec["size"] == path.stat().st_size and rec["inode"] == path.stat().st_ino
    assert rec["first_seen"].endswith("Z") and rec["annotations"] == {}
    # Hashed in the background: not yet, or the content's xxh3-128.
    assert rec["hash"] is None  # the hasher is off (api_config)
    same = running.call("lookup", {"path_b64": base64.b64encode(os.fsencode(path)).decode()})
    assert same["id"] == rec["id"]
    full = running.call("file", {"id": rec["id"]})
    assert [h["kind"] for h in full["history"]] == ["new"]
    assert full["history"][0]["path"] == str(path)
    assert running.call("lookup", {"path": str(running.tree / "nope")}) is None
    assert running.call("lookup", {"path": "/not/under/any/root"}) is None
    with pytest.raises(RpcError) as err:
        running.call("file", {"id": 999999})
    assert err.value.code == -32002


def test_non_utf8_path_gets_path_b64(running: Running) -> None:
    """A name that is not UTF-8 comes back with \\udcXX escapes and path_b64, and can be looked up either way."""
    raw_path = os.fsencode(running.tree) + b"/caf\xe9\n.jpg"
    with open(raw_path, "wb") as f:
        f.write(b"x")
    running.call("sync")
    rec = running.call("lookup", {"path_b64": base64.b64encode(raw_path).decode()})
    assert rec is not None
    assert base64.b64decode(rec["path_b64"]) == raw_path
    assert rec["path"].encode("utf-8", "surrogateescape") == raw_path
    again = running.call("lookup", {"path": rec["path"]})
    assert again["id"] == rec["id"]


def test_lookup_verify_marks_missing_at_once(running: Running) -> None:
    """lookup with verify stats the file: a deleted one becomes missing (not_found) in the answer."""
    path = running.files[3]
    path.unlink()
    stale = running.call("lookup", {"path": str(path)})
    assert stale["state"] == "present"
    checked = running.call("lookup", {"path": str(path), "verify": True})
    assert checked["state"] == "missing" and checked["missing_reason"] == "not_found"
    assert checked["missing_since"] is not None
    new = running.tree / "appeared.txt"
    new.write_text("hello")
    rec = running.call("lookup", {"path": str(new), "verify": True})
    assert rec["state"] == "present" and rec["size"] == 5


def test_list_pages_by_after_id(running: Running) -> None:
    """list returns pages in id order; following next_after_id visits every file once."""
    seen: list[int] = []
    after = 0
    while True:
        page = running.call("list", {"limit": 7, "after_id": after})
        seen += [f["id"] for f in page["files"]]
        if page["next_after_id"] is None:
            break
        after = page["next_after_id"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 60
    running.files[0].unlink()
    running.call("sync")
    missing = running.call("list", {"state": "missing", "root": str(running.tree)})
    assert [f["path"] for f in missing["files"]] == [str(running.files[0])]
    with pytest.raises(RpcError) as err:
        running.call("list", {"state": "gone"})
    assert err.value.code == -32602


def test_changes_since(running: Running) -> None:
    """changes returns journal entries after a seq, and the seq to ask from next."""
    first = running.call("changes", {"since": 0, "limit": 10})
    assert [c["seq"] for c in first["changes"]] == list(range(1, 11)) and first["seq"] == 10
    running.files[5].unlink()
    running.call("sync")
    later = running.call("changes", {"since": 60})
    assert [(c["kind"], c["path"]) for c in later["changes"]] == [
        ("missing", str(running.files[5]))
    ]
    assert later["changes"][0]["reason"] == "not_found"


def test_scan_wait_and_jobs(running: Running) -> None:
    """scan with wait returns the finished job with its counts; jobs lists it."""
    (running.tree / "extra.txt").write_text("x")
    result = running.call("scan", {"wait": True})
    job = result["job"]
    assert job["state"] == "done" and job["kind"] == "full" and job["counts"]["new"] == 1
    assert any(j["id"] == job["id"] for j in running.call("jobs"))
    queued = running.call("scan", {"root": str(running.tree)})
    assert queued["job"]["state"] in ("queued", "running", "done")
    with pytest.raises(RpcError) as err:
        running.call("scan", {"root": "/elsewhere"})
    assert err.value.code == -32002


def test_annotate_set_replace_remove(running: Running) -> None:
    """annotate sets, replaces and (value null) removes keys; unknown ids are -32002."""
    file_id = running.call("lookup", {"path": str(running.files[0])})["id"]
    rec = running.call("annotate", {"id": file_id, "key": "rating", "value": "4"})
    assert rec["annotations"] == {"rating": "4"}
    running.call("annotate", {"id": file_id, "key": "rating", "value": "5"})
    running.call("annotate", {"id": file_id, "key": "caption", "value": 'été, "quoted"\n'})
    assert running.call("file", {"id": file_id})["annotations"] == {
        "rating": "5",
        "caption": 'été, "quoted"\n',
    }
    rec = running.call("annotate", {"id": file_id, "key": "rating", "value": None})
    assert rec["annotations"] == {"caption": 'été, "quoted"\n'}
    for bad, code in [
        ({"id": 999999, "key": "k", "value": "v"}, -32002),
        ({"id": file_id, "key": "", "value": "v"}, -32602),
        ({"id": file_id, "key": "k"}, -32602),
        ({"id": "1", "key": "k", "value": "v"}, -32602),
        ({"id": file_id, "key": "k", "value": 5}, -32602),
    ]:
        with pytest.raises(RpcError) as err:
            running.call("annotate", bad)
        assert err.value.code == code, bad


def test_purge_by_id_refuses_present_files(running: Running) -> None:
    """purge deletes missing files only; present ids are reported, not deleted."""
    gone, kept = running.files[0], running.files[1]
    ids = {p: running.call("lookup", {"path": str(p)})["id"] for p in (gone, kept)}
    running.call("annotate", {"id": ids[gone], "key": "rating", "value": "5"})
    gone.unlink()
    running.call("sync")
    result = running.call("purge", {"ids": [ids[gone], ids[kept], 424242]})
    assert result["purged"] == 1
    assert {r["id"] for r in result["refused"]} == {ids[kept], 424242}
    with pytest.raises(RpcError):
        running.call("file", {"id": ids[gone]})
    assert running.call("file", {"id": ids[kept]})["state"] == "present"
    assert running.call("status")["totals"] == {"present": 59, "missing": 0, "offline": 0}
    purge = running.proc.wait_event("file.purge")
    assert purge["id"] == ids[gone] and purge["by_uid"] == os.getuid()
    with pytest.raises(RpcError) as err:
        running.call("purge", {"all": True, "ids": [1]})
    assert err.value.code == -32602


def _as_nobody(sock: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request as uid 65534 from a forked child (no exec: the venv need not be readable)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(sock))
                s.sendall(json.dumps(request).encode() + b"\n")
                answer = s.makefile("rb").readline()
            os.write(write_end, answer)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return json.loads(answer)  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_purge_by_non_admin_is_refused(tmp_path: Path, tree: Path) -> None:
    """A purge (or a relink) from a peer that is neither root nor in admin_group gets -32001
    and changes nothing."""
    make_files(tree, 5)
    public = (
        Path(os.environ.get("TMPDIR", "/tmp"))
        / f"fw-public-{os.getpid()}-{random.randrange(1 << 30)}"
    )
    public.mkdir(mode=0o755)
    try:
        sock = public / "fw.sock"
        cfg = api_config(tmp_path, [tree], socket=sock, socket_mode="0666")
        proc = cfg.start()
        try:
            proc.wait_event("sweep.finish")
            (tree / "d0000" / "f00000.txt").unlink()
            with Client(sock) as c:
                c.call("sync")
                assert c.call("status")["totals"]["missing"] == 1
            status = _as_nobody(sock, {"jsonrpc": "2.0", "id": 1, "method": "status"})
            assert status["result"]["totals"]["missing"] == 1  # reads are for everyone
            answer = _as_nobody(
                sock, {"jsonrpc": "2.0", "id": 2, "method": "purge", "params": {"all": True}}
            )
            assert answer["error"]["code"] == -32001
            with Client(sock) as c:
                assert c.call("status")["totals"]["missing"] == 1
                gone = c.call("list", {"state": "missing"})["files"][0]["id"]
                other = c.call("lookup", {"path": str(tree / "d0000" / "f00001.txt")})["id"]
            relink = {"missing_id": gone, "present_id": other}
            answer = _as_nobody(
                sock, {"jsonrpc": "2.0", "id": 3, "method": "relink", "params": relink}
            )
            assert answer["error"]["code"] == -32001
            with Client(sock) as c:
                assert c.call("file", {"id": gone})["state"] == "missing"
                assert c.call("file", {"id": other})["state"] == "present"
            # The web page: a reader's token for anyone who may read; an admin's, and
            # revoking one, for admins only.
            ask = {"jsonrpc": "2.0", "id": 4, "method": "web_token", "params": {"role": "admin"}}
            assert _as_nobody(sock, ask)["error"]["code"] == -32001
            ask["params"] = {"role": "reader"}
            made = _as_nobody(sock, ask)["result"]
            assert made["role"] == "reader" and len(made["token"]) >= 40
            ask["params"] = {"revoke": made["id"]}
            assert _as_nobody(sock, ask)["error"]["code"] == -32001
            with Client(sock) as c:
                [token] = c.call("web_token", {"list": True})["tokens"]
                assert token["revoked"] is None and "token" not in token
        finally:
            assert proc.stop() == 0
    finally:
        for p in public.iterdir():
            p.unlink()
        public.rmdir()


def test_pipelined_requests_answered_in_order(running: Running) -> None:
    """Fifty requests sent in one write are answered in order, each with its id."""
    paths = running.files[:50]
    data = b"".join(
        json.dumps(
            {"jsonrpc": "2.0", "id": f"r{i}", "method": "lookup", "params": {"path": str(p)}}
        ).encode()
        + b"\n"
        for i, p in enumerate(paths)
    )
    answers = raw(running.sock, data, read_lines=50)
    assert [a["id"] for a in answers] == [f"r{i}" for i in range(50)]
    assert [a["result"]["path"] for a in answers] == [str(p) for p in paths]


def test_pipelined_requests_of_every_way_keep_their_order(running: Running) -> None:
    """Requests the loop answers itself (a lookup, a changes call held or shared) and
    requests answered by worker threads (status, list, a verifying lookup), sent in one
    write: answered in the order sent. A held call holds the ones after it."""
    seq = running.call("status")["seq"]
    path = str(running.files[0])
    asks: list[tuple[str, dict[str, Any]]] = [
        ("lookup", {"path": path}),
        ("status", {}),
        ("changes", {"since": 0, "limit": 5}),
        ("changes", {"since": 0, "limit": 5}),  # the same: the answer just read
        ("lookup", {"path": path, "verify": True}),
        ("changes", {"since": seq, "wait": 0.3}),  # nothing comes: held to its end
        ("lookup", {"path": "relative"}),  # an error, in its place
        ("list", {"limit": 2}),
        ("lookup", {"path": path}),
    ]
    data = b"".join(
        json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).encode() + b"\n"
        for i, (m, p) in enumerate(asks * 3)
    )
    t0 = time.monotonic()
    answers = raw(running.sock, data, read_lines=len(asks) * 3)
    assert time.monotonic() - t0 >= 0.9  # three held calls, one after the other
    assert [a["id"] for a in answers] == list(range(len(asks) * 3))
    for i, answer in enumerate(answers):
        method, params = asks[i % len(asks)]
        if params.get("path") == "relative":
            assert answer["error"]["code"] == -32602
        elif method == "lookup":
            assert answer["result"]["path"] == path
        elif method == "changes" and "wait" in params:
            assert answer["result"]["changes"] == [] and answer["result"]["seq"] == seq
        elif method == "changes":
            assert [c["seq"] for c in answer["result"]["changes"]] == [1, 2, 3, 4, 5]
        elif method == "list":
            assert len(answer["result"]["files"]) == 2
        else:
            assert answer["result"]["seq"] == seq


def test_hundred_clients_hundred_requests_each(running: Running) -> None:
    """100 concurrent clients doing 100 requests each all get correct answers."""
    expected = {str(p): running.call("lookup", {"path": str(p)})["id"] for p in running.files}
    paths = list(expected)
    errors: list[str] = []
    barrier = threading.Barrier(100)

    def client(n: int) -> None:
        rng = random.Random(n)
        try:
            with Client(running.sock, timeout=60) as c:
                barrier.wait()
                for i in range(100):
                    if i % 10 == 0:
                        st = c.call("status")
                        if st["totals"]["present"] != 60:
                            errors.append(f"client {n}: status {st['totals']}")
                        continue
                    p = rng.choice(paths)
                    rec = c.call("lookup", {"path": p})
                    if rec is None or rec["id"] != expected[p] or rec["path"] != p:
                        errors.append(f"client {n}: lookup {p} -> {rec}")
        except Exception as exc:  # collected, asserted below
            errors.append(f"client {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_stalled_client_does_not_block_others_and_is_dropped(running: Running) -> None:
    """A client that sends half a line and stalls is dropped after the request timeout; others are served meanwhile."""
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(str(running.sock))
    stalled.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(running.sock))
    t0 = time.monotonic()
    for _ in range(20):
        assert running.call("status")["totals"]["present"] == 60
    stalled.settimeout(10)
    assert stalled.recv(100) == b""  # closed by the daemon (client_request_timeout = 1s)
    assert time.monotonic() - t0 < 5
    silent.settimeout(10)
    assert silent.recv(100) == b""  # idle connection closed (client_idle_timeout = 3s)
    stalled.close()
    silent.close()


def test_oversize_line_gets_error_and_close(running: Running) -> None:
    """A request line over 1 MiB gets -32600 and the connection is closed; the daemon serves on."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(running.sock))
        big = (
            b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": {"pad": "'
            + b"x" * (1 << 20)
            + b'"}}\n'
        )
        try:
            s.sendall(big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: also a refusal
        f = s.makefile("rb")
        answer = json.loads(f.readline())
        assert answer["error"]["code"] == -32600
        assert f.readline() == b""
    assert running.call("status")["totals"]["present"] == 60


def test_client_that_disconnects_mid_answer(running: Running) -> None:
    """Clients that hang up before reading their (large) answers do not disturb the daemon."""
    for _ in range(20):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(running.sock))
            s.sendall(
                b'{"jsonrpc": "2.0", "id": 1, "method": "list", "params": {"limit": 10000}}\n' * 5
            )
    assert running.call("status")["totals"]["present"] == 60


def malformed_lines(count: int, seed: int) -> list[bytes]:
    """Lines that each deserve an error answer: bad JSON, wrong shapes, wrong types, unknown methods."""
    rng = random.Random(seed)
    valid = {"jsonrpc": "2.0", "id": 1, "method": "lookup", "params": {"path": "/x"}}
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(
            b"\n", b" "
        ),
        lambda: json.dumps(valid).encode()[: rng.randrange(1, 40)],
        lambda: json.dumps(rng.choice([[], [1, 2], "str", 42, None, True, [valid]])).encode(),
        lambda: json.dumps({**valid, "jsonrpc": rng.choice(["1.0", 2, None, ""])}).encode(),
        lambda: json.dumps(
            {**valid, "method": rng.choice(["", 5, None, "nope", "STATUS", "status.x", "__init__"])}
        ).encode(),
        lambda: json.dumps({**valid, "params": rng.choice([[1], "p", 3, True])}).encode(),
        lambda: json.dumps(
            {**valid, "params": {"path": rng.choice([1, None, [], {}, "", "rel/ative"])}}
        ).encode(),
        lambda: json.dumps(
            {**valid, "params": {"path_b64": rng.choice(["!!!", 5, "", "AA=A"])}}
        ).encode(),
        lambda: json.dumps(
            {
                **valid,
                "method": "file",
                "params": {"id": rng.choice(["1", 1.5, None, True, [], -1, 10**30])},
            }
        ).encode(),
        lambda: json.dumps(
            {
                **valid,
                "method": "list",
                "params": {"limit": rng.choice(["x", -5, True]), "state": "present"},
            }
        ).encode(),
        lambda: json.dumps(
            {**valid, "method": "changes", "params": {"since": rng.choice(["0", None, 1.5])}}
        ).encode(),
        lambda: json.dumps(
            {
                **valid,
                "method": "annotate",
                "params": {"id": 1, "key": rng.choice([None, 1, ""]), "value": "v"},
            }
        ).encode(),
        lambda: json.dumps(
            {
                **valid,
                "method": "purge",
                "params": rng.choice(
                    [
                        {},
                        {"ids": []},
                        {"ids": ["a"]},
                        {"older_than": "soon"},
                        {"all": True, "ids": [1]},
                    ]
                ),
            }
        ).encode(),
        lambda: json.dumps({**valid, "extra": 1}).encode(),
        lambda: json.dumps({**valid, "params": {"path": "/x", "bogus": 1}}).encode(),
        lambda: (
            b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": {}'
            + b"}" * rng.randrange(2, 5)
        ),
        lambda: '{"jsonrpc": "2.0", "id": 1, "method": "\udce9"}'.encode(
            "utf-8", "surrogateescape"
        ),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def test_thousand_malformed_lines_then_status(running: Running) -> None:
    """1,000 seeded malformed lines each get a JSON-RPC error; the connection and the daemon stay usable."""
    lines = malformed_lines(1000, seed=20261121)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(running.sock))
        f = s.makefile("rb")
        for line in lines:
            if not line.strip():
                line = b"?"
            s.sendall(line + b"\n")
            answer = json.loads(f.readline())
            assert "error" in answer and answer["error"]["code"] in (
                -32700,
                -32600,
                -32601,
                -32602,
                -32002,
            ), (line, answer)
        s.sendall(b'{"jsonrpc": "2.0", "id": "last", "method": "status"}\n')
        assert json.loads(f.readline())["result"]["totals"]["present"] == 60
    assert running.call("status")["totals"]["present"] == 60
    assert not [e for e in running.proc.events if e["event"] == "socket.error"]


def test_socket_mode_and_live_socket_refused(running: Running, tmp_path: Path) -> None:
    """The socket gets socket_mode; a second daemon on a live socket refuses to start with a clear message."""
    assert stat.S_IMODE(os.stat(running.sock).st_mode) == 0o660
    other_tmp = tmp_path / "other"
    other_tmp.mkdir()
    cfg = api_config(other_tmp, [running.tree], socket=running.sock)
    second = cfg.start()
    assert second.proc.wait(30) == 1
    assert any("already serving" in line for line in second.raw)
    assert running.call("status")["pid"] == running.proc.proc.pid


def test_stale_socket_is_replaced(tmp_path: Path, tree: Path) -> None:
    """After a daemon is killed, its leftover socket file does not stop the next one."""
    make_files(tree, 3)
    cfg = api_config(tmp_path, [tree])
    first = cfg.start()
    first.wait_event("daemon.ready")
    first.kill()
    sock = tmp_path / "run" / "fw.sock"
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    second = cfg.start()
    try:
        second.wait_event("sweep.finish")
        with Client(sock) as c:
            assert c.call("status")["pid"] == second.proc.pid
    finally:
        assert second.stop() == 0


def test_notification_gets_no_answer(running: Running) -> None:
    """A request without an id is a notification: no answer, and the next request is answered."""
    answers = raw(
        running.sock,
        b'{"jsonrpc": "2.0", "method": "status"}\n{"jsonrpc": "2.0", "id": 9, "method": "jobs"}\n',
    )
    assert answers[0]["id"] == 9
