"""A configured root as the daemon uses it: its catalog id, its path as bytes, its excludes."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import threading
from collections.abc import Iterator

from filewarden.config import RootConfig

# ``sync`` drops files named like this in watched roots and waits for their
# events; they are the daemon's own and never catalogued.
COOKIE_PREFIX = b".filewarden-sync-"


class Excluder:
    """The ``exclude`` globs of a root, compiled once.

    A pattern without ``/`` matches a name at any depth (``*.tmp``,
    ``.cache``); a pattern with ``/`` matches the whole root-relative path
    (``Trash/*``, ``*/thumbs/*``), where ``*`` also crosses ``/``. An excluded
    directory is not entered.
    """

    def __init__(self, patterns: tuple[str, ...], exact: tuple[bytes, ...] = ()) -> None:
        names = [fnmatch.translate(p.rstrip("/")) for p in patterns if "/" not in p.rstrip("/")]
        paths = [fnmatch.translate(p.rstrip("/")) for p in patterns if "/" in p.rstrip("/")]
        self._name = re.compile("|".join(names)) if names else None
        self._path = re.compile("|".join(paths)) if paths else None
        self._exact = frozenset(exact)
        self.active = bool(patterns or exact)

    def excluded(self, dir: bytes, name: bytes) -> bool:
        """True when the entry ``name`` in root-relative ``dir`` is excluded."""
        if self._exact and (dir + b"/" + name if dir else name) in self._exact:
            return True
        if self._name is not None and self._name.match(os.fsdecode(name)):
            return True
        if self._path is not None:
            path = os.fsdecode(dir + b"/" + name if dir else name)
            return self._path.match(path) is not None
        return False

    def excluded_path(self, path: bytes) -> bool:
        """True when a root-relative path or any directory above it is excluded."""
        if not self.active:
            return False
        parts = path.split(b"/")
        for i, name in enumerate(parts):
            if self.excluded(b"/".join(parts[:i]), name):
                return True
        return False


@dataclasses.dataclass(frozen=True)
class Root:
    id: int
    config: RootConfig
    path: bytes  # absolute, no trailing slash
    excluder: Excluder

    @classmethod
    def make(cls, root_id: int, config: RootConfig) -> Root:
        # The marker says "this is the library"; it is not part of it.
        exact = (os.fsencode(os.path.normpath(config.marker)),) if config.marker else ()
        return cls(root_id, config, os.fsencode(config.path), Excluder(config.exclude, exact))

    def abs(self, rel: bytes) -> bytes:
        """The absolute path of a root-relative one."""
        return self.path + b"/" + rel if rel else self.path

    @property
    def display(self) -> str:
        return str(self.config.path)


class RootSet:
    """The configured roots: the one set that every part reads.

    Copy on write: a change swaps in a new mapping, so a thread iterating
    the one it was handed is never disturbed by a reload adding or removing
    a root.
    """

    def __init__(self) -> None:
        self._roots: dict[int, Root] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> dict[int, Root]:
        """The roots now, by id; never changed afterwards (do not change it either)."""
        return self._roots

    def __iter__(self) -> Iterator[Root]:
        return iter(list(self._roots.values()))

    def __len__(self) -> int:
        return len(self._roots)

    def get(self, root_id: int) -> Root | None:
        return self._roots.get(root_id)

    def ids(self) -> set[int]:
        return set(self._roots)

    def by_path(self, path: bytes) -> Root | None:
        return next((r for r in self._roots.values() if r.path == path), None)

    def add(self, root: Root) -> None:
        with self._lock:
            self._roots = {**self._roots, root.id: root}

    def remove(self, root_id: int) -> None:
        with self._lock:
            self._roots = {k: v for k, v in self._roots.items() if k != root_id}
