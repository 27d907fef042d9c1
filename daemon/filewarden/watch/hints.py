"""What a watcher backend reports: hints about paths, never decisions.

Backends translate their kernel events into these; the aggregator orders
and times them, and the live planner (:mod:`filewarden.live`) decides what
they mean with the reconcile code a sweep uses.
"""

from __future__ import annotations

import enum
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
