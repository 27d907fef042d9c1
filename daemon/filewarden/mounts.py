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


# --- is a root there, and is it the same volume? ---------------------------------------

# Sources that name no particular volume: a filesystem of these is told apart by its device number.
PSEUDO_SOURCES = frozenset(
    {"tmpfs", "none", "overlay", "ramfs", "proc", "sysfs", "devtmpfs", "shm", ""}
)
PROBE_TIMEOUT = 5.0  # a hung network mount must not hang the daemon: no answer in time is offline


@dataclasses.dataclass(frozen=True)
class Identity:
    """Which volume a root's directory is, and where in it.

    ``fsid`` is statvfs's filesystem id: derived from the UUID on ext4,
    XFS and btrfs (stable across mounts and device names), new for every
    tmpfs mount. ``uuid`` is the filesystem UUID where udev publishes it.
    ``inner`` is the directory's path inside its filesystem (mountinfo's
    root field plus the path below the mount point): after an unmount, the
    empty mount point is another directory of the parent filesystem, and a
    bind mount going away shows the same way.
    """

    uuid: str | None
    source: str
    fstype: str
    device: int
    inner: bytes
    fsid: int = 0

    def describe(self) -> str:
        what = (
            f"UUID {self.uuid}"
            if self.uuid
            else f"{self.source} ({self.fstype}, fsid {self.fsid & (1 << 64) - 1:x})"
        )
        return f"{what}, {os.fsdecode(self.inner)}"

    def same_volume(self, other: Identity) -> bool:
        if self.inner != other.inner:
            return False
        if self.uuid and other.uuid:
            return self.uuid == other.uuid
        if self.fsid and other.fsid:
            return self.fsid == other.fsid and self.fstype == other.fstype
        if self.source not in PSEUDO_SOURCES and self.source == other.source:
            return self.fstype == other.fstype
        return self.device == other.device and self.fstype == other.fstype


def volume_uuid(source: str) -> str | None:
    """The filesystem UUID of a block device, where udev publishes /dev/disk/by-uuid.

    Looked up afresh each time (a loop device or a USB port is reused by the
    next volume); no blkid: its cache answers for the previous volume.
    """
    if not source.startswith("/dev/"):
        return None
    by_uuid = "/dev/disk/by-uuid"
    try:
        rdev = os.stat(source).st_rdev
        for name in os.listdir(by_uuid):
            if os.stat(os.path.join(by_uuid, name)).st_rdev == rdev:
                return name
    except OSError:
        pass
    return None


def identity(path: bytes, mounts: list[Mount] | None = None) -> Identity | None:
    """The identity of the directory at ``path`` now, or None when it cannot be told."""
    try:
        st = os.stat(path)
        fsid = os.statvfs(path).f_fsid
    except OSError:
        return None
    if fsid >= 1 << 63:
        fsid -= 1 << 64  # kept as SQLite's signed 64-bit integer; equality is all that matters
    mount = mount_of(path, mounts)
    if mount is None:
        return None
    real = os.path.realpath(path)
    below = real[len(mount.mount_point.rstrip(b"/")) :] if mount.mount_point != b"/" else real
    inner = os.path.normpath(mount.root.rstrip(b"/") + below) if below else mount.root
    return Identity(volume_uuid(mount.source), mount.source, mount.fstype, st.st_dev, inner, fsid)


def is_mount_point(path: bytes, mounts: list[Mount] | None = None) -> bool:
    real = os.path.realpath(path)
    return any(m.mount_point == real for m in (mounts if mounts is not None else table()))


def probe(path: bytes, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Read the directory once, in a thread with a deadline; the error, or None if it reads.

    A dead USB disk answers EIO, a lost share ENOTCONN/ESTALE, a hung NFS
    server does not answer at all.
    """
    import threading

    result: list[str | None] = []

    def read() -> None:
        try:
            with os.scandir(path) as entries:
                next(entries, None)
            result.append(None)
        except OSError as exc:
            result.append(exc.strerror or str(exc))

    worker = threading.Thread(target=read, name="filewarden-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        return f"not responding within {timeout:g} s"
    return result[0]
