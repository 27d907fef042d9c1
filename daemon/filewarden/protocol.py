"""The socket protocol: JSON-RPC 2.0, one object per line, and how values cross it.

Paths are bytes inside filewarden. On the wire, ``path`` is always a string
(the ``surrogateescape`` decoding, so a name that is not UTF-8 shows
``\\udcXX`` escapes), and ``path_b64`` carries the raw bytes when they are not
UTF-8. Requests may give either. Times are RFC 3339 UTC strings.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from filewarden.errors import FilewardenError

MAX_LINE = 1 << 20  # a request line over 1 MiB is refused and the connection closed

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PERMISSION_DENIED = -32001
NOT_FOUND = -32002
UNAVAILABLE = -32003


class RpcError(FilewardenError):
    """An error answer: its JSON-RPC code, a message for people, optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


# --- framing --------------------------------------------------------------------


def check_params(
    params: Mapping[str, Any], allowed: Mapping[str, tuple[type | tuple[type, ...], bool]]
) -> None:
    """Refuse unknown params, missing required ones and wrong types (bool is not an int here)."""
    for key in params:
        if key not in allowed:
            raise invalid_params(
                f"unknown param {key!r} (known: {', '.join(sorted(allowed)) or 'none'})"
            )
    for key, (types, required) in allowed.items():
        if key not in params:
            if required:
                raise invalid_params(f"param {key!r} is required")
            continue
        value = params[key]
        if value is None and not required:
            continue
        wanted = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in wanted:
            raise invalid_params(f"param {key!r} must be {_names(wanted)}, not a boolean")
        if not isinstance(value, wanted):
            raise invalid_params(
                f"param {key!r} must be {_names(wanted)}, not {type(value).__name__}"
            )
        if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
            raise invalid_params(f"param {key!r} is out of range")
        if isinstance(value, list) and any(
            isinstance(v, int) and not 0 <= v < (1 << 63) for v in value
        ):
            raise invalid_params(f"param {key!r} holds an integer out of range")


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(
        {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "a boolean",
            "list": "an array",
        }.get(t.__name__, t.__name__)
        for t in types
    )


def bounded(params: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    """A non-negative integer param, ``default`` when absent, at most ``maximum``."""
    value = params.get(key)
    if value is None:
        return default
    if value < 0:
        raise invalid_params(f"param {key!r} must not be negative")
    return min(int(value), maximum)


ENCODE_CHUNK = 256  # items of a long array encoded together (see encode_array)


class Encoded:
    """JSON text of a value, already encoded, in pieces joined once when the line is sent."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    @property
    def text(self) -> bytes:
        """The whole text, joined once: a shared answer is sent to many callers."""
        if len(self.parts) != 1:
            self.parts[:] = [b"".join(self.parts)]
        return self.parts[0]


def _dumps(value: Any) -> bytes:
    # ensure_ascii: lone surrogates (non-UTF-8 names) become \\udcXX escapes,
    # and the text is plain ASCII, valid UTF-8 whatever the names hold.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class EncodedArray(Encoded):
    """An encoded JSON array, with how many items it holds and the last of them."""

    __slots__ = ("count", "last")

    def __init__(self, parts: list[bytes], count: int, last: Any) -> None:
        super().__init__(parts)
        self.count, self.last = count, last


def encode_array(items: Iterable[Any]) -> EncodedArray:
    """A JSON array of ``items``, encoded ``ENCODE_CHUNK`` at a time.

    ``items`` may be a generator: a long answer (a ``list`` page of 10,000
    files) then never holds more than a chunk of its records as Python
    objects, only their text. Thousands of short-lived dicts at once would
    spread the allocator's arenas under long-lived objects and keep them.
    """
    parts = [b"["]
    chunk: list[Any] = []
    count, last = 0, None

    def flush() -> None:
        if len(parts) > 1:
            parts.append(b",")
        parts.append(_dumps(chunk)[1:-1])
        chunk.clear()

    for last in items:
        count += 1
        chunk.append(last)
        if len(chunk) == ENCODE_CHUNK:
            flush()
    if chunk:
        flush()
    parts.append(b"]")
    return EncodedArray(parts, count, last)


def encode_object(fields: Mapping[str, Any]) -> Encoded:
    """A JSON object whose values may be :class:`Encoded` already."""
    parts = [b"{"]
    for key, value in fields.items():
        if len(parts) > 1:
            parts.append(b",")
        parts.append(_dumps(key) + b":")
        if isinstance(value, Encoded):
            parts += value.parts
        else:
            parts.append(_dumps(value))
    parts.append(b"}")
    return Encoded(parts)


def notification(method: str, params: Any) -> bytes:
    """A JSON-RPC notification line (no id): what a subscription streams."""
    return b'{"jsonrpc":"2.0","method":%b,"params":%b}\n' % (_dumps(method), _dumps(params))


def response(request_id: Any, result: Any) -> bytes:
    text = result.text if isinstance(result, Encoded) else _dumps(result)
    return b'{"jsonrpc":"2.0","id":%b,"result":%b}\n' % (_dumps(request_id), text)


def error_response(request_id: Any, error: RpcError) -> bytes:
    return _line({"jsonrpc": "2.0", "id": request_id, "error": error.to_json()})


def _line(obj: Mapping[str, Any]) -> bytes:
    encoded = encode_object(obj)
    encoded.parts.append(b"\n")
    return encoded.text


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any], bool]:
    """Parse one request line into ``(id, method, params, is_notification)``.

    Raises RpcError with the id set in ``data`` where one could be read.
    """
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcError(PARSE_ERROR, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RpcError(
            INVALID_REQUEST, "a request is one JSON object per line (batches are not supported)"
        )
    request_id = obj.get("id")
    if isinstance(request_id, bool) or not (
        request_id is None or isinstance(request_id, str | int | float)
    ):
        raise RpcError(INVALID_REQUEST, "id must be a string, a number or null")
    if obj.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"', data={"id": request_id})
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(
            INVALID_REQUEST, "method must be a non-empty string", data={"id": request_id}
        )
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object", data={"id": request_id})
    unknown = set(obj) - {"jsonrpc", "id", "method", "params"}
    if unknown:
        raise RpcError(
            INVALID_REQUEST,
            f"unknown member(s): {', '.join(sorted(unknown))}",
            data={"id": request_id},
        )
    return request_id, method, params, "id" not in obj


# --- values ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC string (milliseconds), or None.

    Remembered: a page of records repeats few times (the files a sweep batch
    found share its moment, and present files their root's last sweep), and
    formatting was a quarter of ``list``'s time.
    """
    if ts is None:
        return None
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def path_fields(path: bytes) -> dict[str, str]:
    """``{"path": str}`` plus ``path_b64`` when the bytes are not UTF-8."""
    try:
        return {"path": path.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "path": path.decode("utf-8", "surrogateescape"),
            "path_b64": base64.b64encode(path).decode("ascii"),
        }


def path_param(params: Mapping[str, Any], name: str = "path") -> bytes:
    """The path a request gives as ``path`` or ``path_b64``, as bytes."""
    b64 = params.get(f"{name}_b64")
    text = params.get(name)
    if b64 is not None:
        if not isinstance(b64, str):
            raise invalid_params(f"{name}_b64 must be a base64 string")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_params(f"{name}_b64 is not valid base64") from None
    elif isinstance(text, str):
        raw = text.encode("utf-8", "surrogateescape")
    else:
        raise invalid_params(f"{name} (a string) or {name}_b64 is required")
    if not raw or b"\0" in raw:
        raise invalid_params(f"{name} must be non-empty and hold no NUL byte")
    return raw


def hash_hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None
