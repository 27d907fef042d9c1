"""What a watcher backend reports: hints about paths, never decisions.

Backends translate their kernel events into these; the aggregator orders
and times them, and the live planner (:mod:`filewarden.live`) decides what
they mean with the reconcile code a sweep uses. What the planner says back
is only what waits to settle (:class:`Settle`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from filewarden.roots import COOKIE_PREFIX


class Kind(enum.Enum):
    CREATED = "created"  # a file appeared; it may still be being written
    CLOSED = "closed"  # a file was written and closed
    ATTRIB = "attrib"  # a file's metadata changed (mtime set by path, mode, links)
    DELETED = "deleted"  # a file was unlinked
    MOVED = "moved"  # a file moved; src or dest is b"" when the other side is not watched
    DIR_MOVED = "dir_moved"  # a directory moved, with everything below it
    DIR_DELETED = "dir_deleted"
    DIR_CREATED = "dir_created"  # a directory was made (or its watch added late): list it
    DIR_SCAN = "dir_scan"  # a directory appeared and nobody reported its contents: list them
    OVERFLOW = "overflow"  # events were lost (path: the root, or b"" for all)
    UNMOUNT = "unmount"  # the filesystem under a watch went away
    # A directory could not be watched (inotify's watch limit); path: that directory.
    LIMIT = "limit"


class Hint(NamedTuple):
    kind: Kind
    path: bytes  # absolute; the source of a move
    dest: bytes = b""  # absolute destination of a move


def is_cookie(path: bytes) -> bool:
    """Cookie files of ``sync`` are the daemon's own; they are never catalogued."""
    return path.rpartition(b"/")[2].startswith(COOKIE_PREFIX)


@dataclass(frozen=True, slots=True)
class Settle:
    """What a planned hint changes among the created files waiting to settle.

    Applied at once, before the next hint of the batch is planned.
    """

    pend: tuple[
        bytes, ...
    ] = ()  # record these once settled (a path already waiting keeps its time)
    unpend: tuple[bytes, ...] = ()  # recorded already (an editor's save): stop waiting
    # A directory moved (src, dest): what waited below src waits below dest,
    # afresh; dest b"" when it moved out of sight.
    moved: tuple[bytes, bytes] | None = None
