"""The mount table: parsing, which mount a path is on, remote filesystems, volume identity."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden import mounts
from filewarden.config import RootConfig
from filewarden.mounts import Identity
from filewarden.roots import Root
from filewarden.watch import decide_mode

LINES = [
    b"22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    b"41 22 0:38 / /srv/music rw,relatime shared:20 - nfs4 nas:/export/music rw,vers=4.2",
    b"42 22 0:39 / /srv/cloud rw,nosuid - fuse.rclone remote: rw,user_id=0",
    b"43 22 0:40 / /srv/share rw - cifs //nas/photos rw",
    b"44 22 0:41 /sub/dir /srv/with\\040space rw - ext4 /dev/sdb1 rw",
    b"45 22 0:42 / /srv/photos/inner rw - tmpfs tmpfs rw",
]


def test_parse_mountinfo_lines() -> None:
    """Fields are read past the optional fields; octal escapes in paths are undone."""
    m = mounts.parse_line(LINES[4])
    assert m is not None
    assert m.mount_point == b"/srv/with space" and m.root == b"/sub/dir"
    assert (m.fstype, m.source, m.device) == ("ext4", "/dev/sdb1", "0:41")
    assert mounts.parse_line(b"garbage") is None


def test_mount_of_takes_the_longest_mount_point() -> None:
    """A path belongs to the deepest mount containing it."""
    table = [m for m in map(mounts.parse_line, LINES) if m is not None]
    assert mounts.mount_of(b"/srv/music/album", table).fstype == "nfs4"  # type: ignore[union-attr]
    assert mounts.mount_of(b"/srv/photos", table).fstype == "ext4"  # type: ignore[union-attr]
    assert mounts.mount_of(b"/srv/photos/inner/x", table).fstype == "tmpfs"  # type: ignore[union-attr]
    assert mounts.mount_of(b"/srv/musical", table).fstype == "ext4"  # type: ignore[union-attr]


def test_network_and_fuse_filesystems_are_remote() -> None:
    """NFS, CIFS/SMB and FUSE are polled in auto mode; local filesystems are watched."""
    table = [m for m in map(mounts.parse_line, LINES) if m is not None]
    remote = {m.mount_point for m in table if mounts.is_remote(m.fstype)}
    assert remote == {b"/srv/music", b"/srv/cloud", b"/srv/share"}


def test_auto_mode_on_this_machine(tmp_path: Path) -> None:
    """A root on a local filesystem is watched in auto mode; mode = poll always polls."""
    assert decide_mode(Root.make(1, RootConfig(path=tmp_path)))[0] == "watch"
    assert decide_mode(Root.make(1, RootConfig(path=tmp_path, mode="poll")))[0] == "poll"


def test_identity_of_a_directory(tmp_path: Path) -> None:
    """A directory's identity names its filesystem and its path inside it."""
    ident = mounts.identity(os.fsencode(tmp_path))
    assert ident is not None
    assert ident.device == os.stat(tmp_path).st_dev
    assert ident.inner.endswith(os.fsencode(tmp_path.name))
    assert ident.same_volume(ident)


def test_same_volume_rules() -> None:
    """Same UUID: same volume; tmpfs-like sources compare devices; another directory of the same disk is not the root."""
    a = Identity("u1", "/dev/sdb1", "ext4", 100, b"/photos")
    assert a.same_volume(
        Identity("u1", "/dev/sdc1", "ext4", 200, b"/photos")
    )  # re-plugged, new device name
    assert not a.same_volume(Identity("u2", "/dev/sdb1", "ext4", 100, b"/photos"))  # another disk
    assert not a.same_volume(Identity("u1", "/dev/sdb1", "ext4", 100, b"/"))  # another directory
    t = Identity(None, "tmpfs", "tmpfs", 39, b"/", fsid=0x19B0)
    assert not t.same_volume(
        Identity(None, "tmpfs", "tmpfs", 39, b"/", fsid=0x5A34)
    )  # a fresh tmpfs, same st_dev
    e = Identity(None, "/dev/loop0", "ext4", 1792, b"/", fsid=0xD18F)
    assert not e.same_volume(
        Identity(None, "/dev/loop0", "ext4", 1792, b"/", fsid=0x7642)
    )  # another image, same loop device
    assert e.same_volume(
        Identity(None, "/dev/loop1", "ext4", 1793, b"/", fsid=0xD18F)
    )  # same image, other loop device
    n = Identity(None, "nas:/export", "nfs4", 50, b"/")
    assert n.same_volume(Identity(None, "nas:/export", "nfs4", 51, b"/"))  # remounted share
