"""A fresh loop-mounted ext4 image for scenarios that need ext4's habits (it hands a freed inode number straight back)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts filesystems (needs root)")


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every one of ``tools`` is on PATH."""
    absent = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(absent), reason=f"not installed: {', '.join(absent)}")


@contextmanager
def ext4_mount(tmp: Path, size_mb: int = 128) -> Iterator[Path]:
    """A new ext4 filesystem (the image is ``tmp/ext4.img``), mounted on a fresh directory under /var/tmp; lazily unmounted after.

    Not under /tmp: vim (``backupskip``) and emacs (``backup-enable-predicate``)
    make no backup of a file under /tmp, and their backup rename is what
    the editor scenarios are about.
    """
    image = tmp / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount_point = Path(tempfile.mkdtemp(prefix="filewarden-ext4-", dir="/var/tmp"))
    try:
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
        try:
            yield mount_point
        finally:
            while os.path.ismount(mount_point):
                subprocess.run(["umount", "-l", str(mount_point)], check=True)
    finally:
        mount_point.rmdir()
