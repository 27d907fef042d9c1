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
