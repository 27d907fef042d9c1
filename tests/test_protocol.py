"""Encoding answers: long arrays a chunk at a time, the same text as encoding them whole."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from filewarden import protocol


def records(n: int) -> Iterator[dict[str, Any]]:
    """File records like ``list`` answers, a non-UTF-8 name among them."""
    for i in range(n):
        name = os.fsdecode(b"caf\xe9-%d" % i) if i % 7 == 0 else f"café-{i}"
        yield {"id": i, "path": f"/photos/{i // 100}/{name}.jpg", "size": i * 1000, "hash": None}


@pytest.mark.parametrize("n", [0, 1, protocol.ENCODE_CHUNK - 1, protocol.ENCODE_CHUNK, 1000])
def test_encode_array_is_the_whole_array_encoded(n: int) -> None:
    whole = json.dumps(list(records(n)), ensure_ascii=True, separators=(",", ":"))
    encoded = protocol.encode_array(records(n))
    assert encoded.text == whole.encode("ascii")
    assert (encoded.count, encoded.last) == (n, list(records(n))[-1] if n else None)


def test_response_splices_encoded_values() -> None:
    result = protocol.encode_object({"files": protocol.encode_array(records(300)), "next": None})
    line = protocol.response(7, result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"files": list(records(300)), "next": None},
    }


@pytest.mark.parametrize("request_id", [7, "r-\u00e9", None, 2.5])
def test_a_shared_answer_gives_each_caller_the_same_line_but_its_id(request_id: Any) -> None:
    """One encoded answer sent to many callers (a crowd woken by one commit): each line is
    exactly what encoding it afresh gives, names that are not UTF-8 included."""
    entry = {"seq": 3, "path": "/m/caf\udce9.flac", "kind": "move"}
    shared = protocol.encode_object({"changes": protocol.encode_array([entry]), "seq": 3})
    for _ in range(3):  # the same object, answered again and again
        line = protocol.response(request_id, shared)
        plain = {"jsonrpc": "2.0", "id": request_id, "result": {"changes": [entry], "seq": 3}}
        assert line == json.dumps(plain, separators=(",", ":")).encode("ascii") + b"\n"
    note = protocol.notification("change", entry)
    plain = {"jsonrpc": "2.0", "method": "change", "params": entry}
    assert note == json.dumps(plain, separators=(",", ":")).encode("ascii") + b"\n"


def test_encode_array_holds_one_chunk_of_records_at_a_time() -> None:
    """Encoding 10,000 records from a generator peaks near their text, not near the records."""

    def peak(encode: Any) -> int:
        tracemalloc.start()
        try:
            encode()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    text = len(protocol.encode_array(records(10_000)).text)
    chunked = peak(lambda: protocol.encode_array(records(10_000)))
    whole = peak(lambda: json.dumps(list(records(10_000))))
    # Chunked: the text in pieces, then joined, and one chunk of records
    # (1.3x the text here); whole, the records are 9x their text.
    assert chunked < 2 * text < whole
