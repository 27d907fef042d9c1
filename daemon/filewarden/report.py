"""How file records are written for people: the missing list as CSV, sizes in units.

Shared by the command line and the web page, so that an export from either
is the same bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# The columns of the missing list's CSV, in order.
CSV_FIELDS = ["id", "root", "path", "size", "hash", "missing_since", "missing_reason", "last_seen"]


def missing_csv(files: Iterable[Mapping[str, Any]], fields: list[str] = CSV_FIELDS) -> str:
    """RFC 4180 CSV of file records with a header row: CRLF rows, quotes doubled; names
    that are not UTF-8 stay lone surrogates, written back as their bytes by the caller
    (``surrogateescape``)."""
    return "".join(missing_csv_chunks(files, fields=fields))


def missing_csv_chunks(
    files: Iterable[Mapping[str, Any]], rows: int = 1000, fields: list[str] = CSV_FIELDS
) -> Iterator[str]:
    """The same text, ``rows`` records at a time (an export of a million files is
    sent as it is read, never held whole)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    for i, f in enumerate(files, 1):
        writer.writerow(["" if f[k] is None else f[k] for k in fields])
        if i % rows == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def human_size(n: int | None) -> str:
    """``1.5M``; ``-`` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)
