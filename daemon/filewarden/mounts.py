"""The mount table: which filesystem a root is on, and what kind it is."""

from __future__ import annotations

import dataclasses
import os
import re

MOUNTINFO = "/proc/self/mountinfo"

# Filesystems where inotify sees only this host's changes, not those made by
# other clients of the share (or by the FUSE daemon's backend).
REMOTE_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "9p",
        "virtiofs",
        "davfs",
        "coda",
        "ocfs2",
        "gfs2",
        "beegfs",
        "fuse",
        "fuseblk",
    }
)
_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class Mount:
    mount_id: int
    device: str  # "major:minor"
    root: bytes  # the path inside the filesystem that is mounted here (bind mounts)
    mount_point: bytes
    fstype: str
    source: str
    options: str


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def parse_line(line: bytes) -> Mount | None:
    """One /proc/self/mountinfo line, or None when it is not one."""
    fields = line.rstrip(b"\n").split(b" ")
    try:
        sep = fields.index(b"-", 6)
        return Mount(
            mount_id=int(fields[0]),
            device=fields[2].decode(),
            root=_unescape(fields[3]),
            mount_point=_unescape(fields[4]),
            fstype=fields[sep + 1].decode(errors="replace"),
            source=_unescape(fields[sep + 2]).decode(errors="replace"),
            options=fields[sep + 3].decode(errors="replace") if len(fields) > sep + 3 else "",
        )
    except (ValueError, IndexError):
        return None


def table(path: str = MOUNTINFO) -> list[Mount]:
    try:
        with open(path, "rb") as f:
            return [m for m in map(parse_line, f) if m is not None]
    except OSError:
        return []


def mount_of(path: bytes, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount a path is on: the longest mount point that contains its real path (last mounted wins)."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts if mounts is not None else table():
        point = m.mount_point
        if real == point or real.startswith(point.rstrip(b"/") + b"/") or point == b"/":
            if best is None or len(point) >= len(best.mount_point):
                best = m
    return best


def is_remote(fstype: str) -> bool:
    """True for network and FUSE filesystems, where a root must be polled."""
    return fstype in REMOTE_FS or fstype.startswith("fuse.")
