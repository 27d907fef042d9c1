"""inotify's limits: how many watches a root needs and how many are left.

watchdog swallows ENOSPC for subdirectories and leaves a tree partly
watched without a word; counting before and after is the only way to know.
"""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.errors import FilewardenError

PROC = Path("/proc/sys/fs/inotify")


def sysctl(name: str) -> int | None:
    """A value from /proc/sys/fs/inotify (max_user_watches, max_user_instances, max_queued_events)."""
    try:
        return int((PROC / name).read_text().strip())
    except (OSError, ValueError):
        return None


def count_dirs(path: bytes, limit: int | None = None) -> int:
    """Directories at and below ``path`` (symlinks not followed), stopping past ``limit``."""
    count, stack = 0, [path]
    while stack:
        current = stack.pop()
        count += 1
        if limit is not None and count > limit:
            return count
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue  # unreadable or gone: inotify cannot watch it either
    return count


def _watches_of(pid: str) -> int:
    """inotify watches held by process ``pid`` ("self" for this one), from its fdinfo."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                total += sum(1 for line in f if line.startswith(b"inotify wd:"))
        except OSError:
            continue
    return total


def watches_in_use(uid: int | None = None) -> int:
    """inotify watches held by the processes of ``uid`` (default: ours), from /proc/*/fdinfo.

    max_user_watches is per user, so the desktop, an IDE and other daemons
    of the same user share it.
    """
    uid = os.geteuid() if uid is None else uid
    total = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                total += _watches_of(pid)
        except OSError:
            continue
    return total


def own_watches() -> int:
    """inotify watches held by this process."""
    return _watches_of("self")


class WatchLimit(FilewardenError):
    """A root cannot be fully watched; the message says which sysctl to raise."""


def check_room(root: bytes) -> int:
    """Raise WatchLimit unless the watches ``root`` needs are available; returns how many it needs."""
    limit = sysctl("max_user_watches")
    if limit is None:
        return count_dirs(root)
    free = limit - watches_in_use()
    needed = count_dirs(root, limit=max(free, 0) + 1)
    if needed > free:
        raise WatchLimit(
            f"{os.fsdecode(root)} needs {'more than ' if needed > free + 1 else ''}{needed} inotify watches, "
            f"{max(free, 0)} of fs.inotify.max_user_watches={limit} are free; raise it, e.g. "
            f"sysctl fs.inotify.max_user_watches={max(limit * 2, 524288)}"
        )
    return needed
