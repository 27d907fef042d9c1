"""The client library: filewarden's socket from Python, for programs that key their data on its ids.

Public API (typed; ``mypy --strict`` clean)::

    from filewarden.client import connect, iter_changes

    with connect() as fw:                      # the socket the CLI would use
        record = fw.lookup("/srv/music/a.flac")  # a FileRecord, or None
        seq = fw.status()["seq"]
    for item in iter_changes(since=seq):       # follows the feed, across restarts
        if isinstance(item, Reset):            # the cursor cannot be served
            ...re-read with Client.iter_files(), then carry on...
        else:
            ...item["kind"], item["id"], item["path"]...

:class:`Client` is one connection; its methods are the socket's methods
(README, "The socket"), and :meth:`Client.call` reaches any method by name.
Errors come as :class:`~filewarden.protocol.RpcError` (with the JSON-RPC
code) or :class:`Unreachable` (no daemon, or the connection was lost).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

from filewarden import config
from filewarden.errors import FilewardenError
from filewarden.protocol import RpcError

__all__ = [
    "Change",
    "Changes",
    "Client",
    "FileRecord",
    "Fingerprint",
    "Reset",
    "RpcError",
    "Unreachable",
    "connect",
    "iter_changes",
    "socket_path",
]


# The end of a `list` answer: {"jsonrpc":"2.0","id":N,"result":{"files":[...],"next_after_id":N}}
_NEXT_AFTER = re.compile(rb'"next_after_id":\s*(null|\d+)\s*\}\s*\}\s*$')


class Unreachable(FilewardenError):
    """No daemon answers on the socket, or the connection was lost."""


class Fingerprint(TypedDict):
    kind: str
    value: str | None


class FileRecord(TypedDict, total=False):
    """A file record (``path_b64`` only where the name is not UTF-8)."""

    id: int
    root: str
    path: str
    path_b64: str
    state: str  # present, missing, offline
    size: int
    mtime_ns: int
    device: int
    inode: int
    hash: str | None
    first_seen: str
    last_seen: str
    missing_since: str | None
    missing_reason: str | None
    annotations: dict[str, str]
    fingerprint: Fingerprint | None
    history: list[Change]  # ``file`` only


class Change(TypedDict, total=False):
    """A journal entry; besides these, each kind carries its own fields (README, "The journal")."""

    seq: int
    time: str
    kind: str
    id: int | None
    path: str | None
    old_path: str | None
    root: str
    reason: str
    by: str


class Changes(TypedDict):
    changes: list[Change]
    seq: int
    oldest_seq: int
    truncated: bool
    instance: str
    reset_required: str | None


@dataclass(frozen=True)
class Reset:
    """The feed cannot serve the cursor (``reason``): re-read the catalog (``Client.iter_files``),
    and the feed carries on after ``seq``, in ``instance``."""

    reason: str
    seq: int
    instance: str


def socket_path(
    socket: str | os.PathLike[str] | None = None, config_file: str | None = None
) -> Path:
    """The socket a client talks to: ``socket``, else the config file's (``config_file``,
    ``$FILEWARDEN_CONFIG``, ``/etc/filewarden/config.toml``), else the per-user default."""
    if socket is not None:
        return Path(socket)
    file = config.find_config_file(config_file)
    if file is not None:
        return config.load(file).daemon.socket
    return config.user_defaults().socket


def connect(
    socket: str | os.PathLike[str] | None = None,
    *,
    config_file: str | None = None,
    timeout: float | None = 120.0,
) -> Client:
    """A :class:`Client` on the socket the CLI would use (see :func:`socket_path`)."""
    return Client(socket_path(socket, config_file), timeout)


class Client:
    """One connection; calls are answered in order."""

    def __init__(self, path: Path | str, timeout: float | None = 120.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(os.fspath(self.path))
        except OSError as exc:
            self._sock.close()
            raise Unreachable(
                f"cannot reach the daemon at {self.path}: {exc.strerror or exc}"
            ) from None
        self._file = self._sock.makefile("rb")

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one request and return its result; raises RpcError for an error answer.

        ``timeout`` (seconds) replaces the connection's for this call (a long ``wait``).
        """
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            self._send(method, params)
            reply = self._receive()
        finally:
            if timeout is not None:
                self._sock.settimeout(self.timeout)
        return self._result(reply)

    def _send(self, method: str, params: dict[str, Any] | None) -> int:
        request_id = next(self._ids)
        line = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}},
            ensure_ascii=True,
        )
        try:
            self._sock.sendall(line.encode("ascii") + b"\n")
        except OSError as exc:
            raise Unreachable(f"lost the daemon at {self.path}: {exc.strerror or exc}") from None
        return request_id

    def _receive(self) -> bytes:
        try:
            reply = self._file.readline()
        except OSError as exc:
            raise Unreachable(f"lost the daemon at {self.path}: {exc.strerror or exc}") from None
        if not reply:
            raise Unreachable(f"the daemon at {self.path} closed the connection")
        return reply

    def _result(self, reply: bytes) -> Any:
        answer = json.loads(reply)
        if "error" in answer:
            error = answer["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return answer["result"]

    # -- the socket's methods ---------------------------------------------------

    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("status"))

    def sync(self, timeout: float = 60.0) -> int:
        """Wait until every change made on disk before now is in the catalog; the journal seq."""
        return int(self.call("sync", {"timeout_s": timeout}, timeout=timeout + 30)["seq"])

    def lookup(self, path: str | os.PathLike[str], *, verify: bool = False) -> FileRecord | None:
        raw = os.fsencode(path)
        params: dict[str, Any] = _path_param(raw)
        if verify:
            params["verify"] = True
        return cast(FileRecord | None, self.call("lookup", params))

    def lookup_many(
        self, paths: Sequence[str | os.PathLike[str]] = (), *, ids: Sequence[int] = ()
    ) -> list[FileRecord | None]:
        """Up to 10,000 paths (or ids) in one call; the answers in the same order."""
        if ids:
            return cast(list[FileRecord | None], self.call("lookup", {"ids": list(ids)})["files"])
        raws = [os.fsencode(p) for p in paths]
        if all(_utf8(r) for r in raws):
            params = {"paths": [r.decode() for r in raws]}
        else:
            params = {"paths_b64": [_b64(r) for r in raws]}
        return cast(list[FileRecord | None], self.call("lookup", params)["files"])

    def file(self, file_id: int) -> FileRecord:
        """The record plus ``history`` (its journal entries)."""
        return cast(FileRecord, self.call("file", {"id": file_id}))

    def list_files(
        self,
        state: str | None = None,
        *,
        root: str | None = None,
        limit: int = 1000,
        after_id: int = 0,
    ) -> tuple[list[FileRecord], int | None]:
        """One page of files (``list``), and the ``after_id`` of the next (None after the last)."""
        params: dict[str, Any] = {"limit": limit, "after_id": after_id}
        if state:
            params["state"] = state
        if root:
            params["root"] = root
        page = self.call("list", params)
        return page["files"], page["next_after_id"]

    def iter_files(
        self, state: str | None = None, *, root: str | None = None
    ) -> Iterator[FileRecord]:
        """Every file (of ``state``, under ``root``), page by page (``list``)."""
        for page in self.iter_pages(state, root=root):
            yield from page

    def iter_pages(
        self, state: str | None = None, *, root: str | None = None
    ) -> Iterator[list[FileRecord]]:
        """Every file, a ``list`` page (10,000) at a time, each page asked for before the one
        before it is parsed: its ``next_after_id`` is read from the answer's end, so the
        daemon builds a page while this side decodes the last."""
        params: dict[str, Any] = {"limit": 10_000, "after_id": 0}
        if state:
            params["state"] = state
        if root:
            params["root"] = root
        self._send("list", params)
        asked = 1  # answers on their way
        try:
            while asked:
                line = self._receive()
                asked -= 1
                ahead = _NEXT_AFTER.search(line[-64:])
                if ahead is not None and ahead.group(1) != b"null":
                    self._send("list", {**params, "after_id": int(ahead.group(1))})
                    asked += 1
                page = self._result(line)
                if ahead is None and page["next_after_id"] is not None:  # shaped otherwise
                    self._send("list", {**params, "after_id": page["next_after_id"]})
                    asked += 1
                yield page["files"]
        finally:
            for _ in range(asked):  # left before the end: the next call must find its own answer
                self._receive()

    def changes(
        self, since: int, *, limit: int = 1000, wait: float = 0.0, instance: str | None = None
    ) -> Changes:
        """The journal after ``since``; with ``wait``, held until there is something."""
        params: dict[str, Any] = {"since": since, "limit": limit}
        if wait:
            params["wait"] = wait
        if instance is not None:
            params["instance"] = instance
        timeout = None if self.timeout is None else self.timeout + wait
        return cast(Changes, self.call("changes", params, timeout=timeout))

    def subscribe(
        self,
        since: int,
        *,
        instance: str | None = None,
        root: str | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Iterator[Change | Reset]:
        """Stream the journal after ``since`` on this connection (it then carries nothing
        else): each wanted entry as it is committed, in ``seq`` order, until a
        :class:`Reset` (the last item) or the connection ends (:class:`Unreachable`)."""
        params: dict[str, Any] = {"since": since}
        if instance is not None:
            params["instance"] = instance
        if root is not None:
            params["root"] = root
        if kinds is not None:
            params["kinds"] = list(kinds)
        answer = self.call("subscribe", params)
        self._sock.settimeout(None)  # entries come when they come
        seq = answer["seq"]
        while True:
            try:
                line = self._file.readline()
            except OSError as exc:
                raise Unreachable(f"lost the daemon at {self.path}: {exc}") from None
            if not line:
                raise Unreachable(f"the daemon at {self.path} ended the subscription at seq {seq}")
            note = json.loads(line)
            if note.get("method") == "reset":
                params = note["params"]
                yield Reset(params["reason"], params["seq"], params["instance"])
                return
            change: Change = note["params"]
            seq = change["seq"]
            yield change

    def annotate(self, file_id: int, key: str, value: str | None) -> FileRecord:
        return cast(FileRecord, self.call("annotate", {"id": file_id, "key": key, "value": value}))

    def scan(self, root: str | None = None, *, wait: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"wait": wait}
        if root:
            params["root"] = root
        return cast(dict[str, Any], self.call("scan", params))

    def jobs(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.call("jobs"))

    def purge(
        self,
        ids: Iterable[int] | None = None,
        *,
        older_than: str | float | None = None,
        all: bool = False,
        root: str | None = None,
    ) -> dict[str, Any]:
        """Delete missing files for good (admin): these ids, those missing longer, or all;
        or ``root``, a root removed from the config, with every file it still has."""
        params: dict[str, Any] = {}
        if root is not None:
            params["root"] = root
        if ids is not None:
            params["ids"] = list(ids)
        if older_than is not None:
            params["older_than"] = older_than
        if all:
            params["all"] = True
        return cast(dict[str, Any], self.call("purge", params))

    def accept_root(self, root: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("accept_root", {"root": root}))

    def candidates(self, file_id: int, *, limit: int = 20) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("candidates", {"id": file_id, "limit": limit}))

    def relink(self, missing_id: int, present_id: int) -> FileRecord:
        params = {"missing_id": missing_id, "present_id": present_id}
        return cast(FileRecord, self.call("relink", params))

    def metrics(self) -> str:
        """One scrape in the Prometheus text format."""
        return str(self.call("metrics")["text"])

    def web_token(self, role: str = "reader", label: str | None = None) -> dict[str, Any]:
        """A new token for the web page: ``{id, role, label, token}`` (the token is shown once)."""
        params: dict[str, Any] = {"role": role}
        if label:
            params["label"] = label
        return cast(dict[str, Any], self.call("web_token", params))

    def web_tokens(self) -> list[dict[str, Any]]:
        """Every token made, revoked ones too: ``{id, role, label, created, revoked}``."""
        return cast(list[dict[str, Any]], self.call("web_token", {"list": True})["tokens"])

    def revoke_web_token(self, token_id: int) -> None:
        self.call("web_token", {"revoke": token_id})

    def interrupt(self) -> None:
        """End what this connection waits for (a subscription), from another thread."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the connection; a call waiting on it in another thread ends (Unreachable)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_changes(
    since: int,
    *,
    instance: str | None = None,
    socket: str | os.PathLike[str] | None = None,
    config_file: str | None = None,
    wait: float = 30.0,
    limit: int = 1000,
    retry: tuple[float, float] = (0.1, 5.0),
    stop: Any = None,
) -> Iterator[Change | Reset]:
    """Follow the journal after ``since``, for ever (or until ``stop.is_set()``).

    Yields each :class:`Change` once, in ``seq`` order, holding a ``changes``
    call open (``wait`` seconds) rather than polling. A daemon that goes away
    is waited for with backoff (``retry``: first and longest pause), and the
    feed resumes from the last entry yielded. A cursor the feed cannot serve
    (compacted, another instance) yields a :class:`Reset`: the consumer
    re-reads with ``list`` and the feed goes on from ``Reset.seq``. Pass the
    ``instance`` the cursor was read in, so that a catalog made anew is
    noticed.
    """
    pause = retry[0]
    client: Client | None = None
    try:
        while stop is None or not stop.is_set():
            try:
                if client is None:
                    client = Client(socket_path(socket, config_file), timeout=wait + 60)
                answer = client.changes(since, limit=limit, wait=wait, instance=instance)
            except Unreachable:
                if client is not None:
                    client.close()
                    client = None
                time.sleep(pause)  # the daemon is restarting: wait for it, not a busy loop
                pause = min(pause * 2, retry[1])
                continue
            pause = retry[0]
            instance = answer["instance"]
            if answer["reset_required"]:
                since = answer["seq"]
                yield Reset(answer["reset_required"], since, instance)
                continue
            for change in answer["changes"]:
                since = change["seq"]
                yield change
    finally:
        if client is not None:
            client.close()


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _path_param(raw: bytes) -> dict[str, Any]:
    return {"path": raw.decode()} if _utf8(raw) else {"path_b64": _b64(raw)}
