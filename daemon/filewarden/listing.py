"""Reading the disk the way every observer does: one directory, one file, one path.

The sweep lists directories (:func:`list_dir`), the live planner, the
reconciler, the identity rules and checks on access stat single files
(:func:`stat_regular`), and a path reported by a watcher or a client is
placed under its root (:func:`resolve`). One implementation each, so they
never disagree about what a regular file or an excluded path is.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterable

from filewarden import catalog, logs
from filewarden.catalog import DirStamp, Signature
from filewarden.errors import Fault, classify
from filewarden.roots import COOKIE_PREFIX, Root

log = logs.get("filewarden.sweep")  # what a listing meets is reported as the sweep's

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """One directory as read from disk."""

    dir: bytes  # root-relative, b"" for the root itself
    stamp: DirStamp  # what the quick sweep compares next time (catalog.DIRTY to force a re-list)
    files: dict[bytes, Signature]  # regular files only, excluded names already dropped
    subdirs: frozenset[bytes]  # names of real (not symlinked) subdirectories, not excluded
    ident: tuple[int, int] | None = None  # (device, inode) of the directory listed


@dataclasses.dataclass
class Tally:
    """Counts of what a sweep did, for ``sweep.finish`` and the job table."""

    files: int = 0
    new: int = 0
    moved: int = 0
    changed: int = 0
    restored: int = 0
    relinked: int = 0
    missing: int = 0
    dirs_listed: int = 0
    dirs_skipped: int = 0
    unreadable: int = 0
    errors: int = 0

    def add(self, other: Tally) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def stat_regular(path: bytes, *, strict: bool = False) -> Signature | None:
    """The signature of the regular file at ``path`` (never followed), or None.

    An ``OSError`` of the ``lstat`` means None too, unless ``strict``: then
    it is raised, for a caller that tells a gone file from an unreadable one.
    """
    try:
        st = os.lstat(path)
    except OSError:
        if strict:
            raise
        return None
    return catalog.signature(st) if stat.S_ISREG(st.st_mode) else None


def resolve(
    path: bytes, roots: Iterable[Root], *, keep_excluded: bool = False
) -> tuple[Root, bytes] | None:
    """The root an absolute ``path`` is below and the path relative to it.

    None outside every root, for a root itself, and for an excluded path
    unless ``keep_excluded`` (a client asking about a path the catalog may
    still hold from before it was excluded).
    """
    for root in roots:
        if path.startswith(root.path + b"/"):
            rel = path[len(root.path) + 1 :]
            if not keep_excluded and root.excluder.excluded_path(rel):
                return None
            return root, rel
        if path == root.path:
            return None  # the root directory itself is not a file
    return None


def still_listed(root: Root, rel: bytes, ident: tuple[int, int]) -> bool:
    """Whether ``rel`` is still the directory that was listed (same device and inode).

    Checked in the writer thread, so a rename after the check has its live
    event applied after this listing is recorded, and moves its rows along.
    """
    try:
        st = os.lstat(root.abs(rel))
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == ident


def list_dir(
    root: Root, rel: bytes, tally: Tally, warn: Callable[..., object] | None = None
) -> tuple[os.stat_result, dict[bytes, Signature], list[bytes]]:
    """Read one directory: its own stat, its regular files' signatures, its real subdirectories.

    Entries are stat'ed relative to a descriptor of the directory opened with
    O_NOFOLLOW|O_DIRECTORY: shorter lookups than full paths, and FIFOs,
    sockets and devices are never opened. Raises OSError when the directory
    itself cannot be read. A file that cannot be read is logged, through
    ``warn`` when given (the walker process hands its warnings to the daemon).
    """
    files: dict[bytes, Signature] = {}
    subdirs: list[bytes] = []
    others: list[bytes] = []
    excluder = root.excluder if root.excluder.active else None
    path = root.abs(rel)
    fd = os.open(path, _OPEN_DIR)
    try:
        dir_st = os.fstat(fd)
        # scandir on the bytes path gives bytes names (on the descriptor it
        # would give str); readdir's d_type spares a stat for directories.
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if excluder is not None and excluder.excluded(rel, name):
                    continue
                if name[:1] == b"." and name.startswith(COOKIE_PREFIX):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue  # symlink, FIFO, socket, device: never catalogued
                except OSError:
                    pass  # d_type unknown and the stat failed: lstat below decides
                others.append(name)
        # Not stat_regular: a stat relative to the directory's descriptor, its
        # errors told apart, and no call per file (a million of them in a sweep).
        lstat = os.lstat
        for name in others:
            try:
                st = lstat(name, dir_fd=fd)
            except OSError as exc:
                fault = classify(exc)
                if fault is Fault.ROOT:
                    raise
                if fault is not Fault.GONE:  # vanished between readdir and stat: normal
                    tally.errors += 1
                    (warn or log.warning)(
                        "sweep.error",
                        root=root.display,
                        path=root.abs(catalog.join(rel, name)),
                        error=exc.strerror or str(exc),
                    )
                continue
            if stat.S_ISREG(st.st_mode):  # d_type said so; lstat is the word that counts
                files[name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)
    finally:
        os.close(fd)
    return dir_st, files, subdirs
