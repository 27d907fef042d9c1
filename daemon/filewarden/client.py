"""A small JSON-RPC client for the daemon's Unix socket (used by the CLI and the tests)."""

from __future__ import annotations

import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

from filewarden.errors import FilewardenError
from filewarden.protocol import RpcError


class Unreachable(FilewardenError):
    """No daemon answers on the socket."""


class Client:
    """One connection; calls are answered in order."""

    def __init__(self, path: Path | str, timeout: float | None = 120.0) -> None:
        self.path = Path(path)
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

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; raises RpcError for an error answer."""
        request_id = next(self._ids)
        line = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}},
            ensure_ascii=True,
        )
        try:
            self._sock.sendall(line.encode("ascii") + b"\n")
            reply = self._file.readline()
        except OSError as exc:
            raise Unreachable(f"lost the daemon at {self.path}: {exc.strerror or exc}") from None
        if not reply:
            raise Unreachable(f"the daemon at {self.path} closed the connection")
        answer = json.loads(reply)
        if "error" in answer:
            error = answer["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return answer["result"]

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
