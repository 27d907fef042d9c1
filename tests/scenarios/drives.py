"""A drive that can be plugged (mounted) and unplugged: a loop-mounted ext4 image."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class Volume:
    """An ext4 image: a drive that can be plugged (mounted) and unplugged."""

    def __init__(self, image: Path, mount_point: Path) -> None:
        self.image, self.mount_point = image, mount_point

    def mount(self) -> None:
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount_point)], check=True)

    def unmount(self, *, lazy: bool = False) -> None:
        subprocess.run(["umount", *(["-l"] if lazy else []), str(self.mount_point)], check=True)

    @property
    def mounted(self) -> bool:
        return os.path.ismount(self.mount_point)


def make_volume(tmp: Path, name: str, mount_point: Path, size_mb: int = 64) -> Volume:
    image = tmp / f"{name}.img"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-N", "200000", str(image)], check=True)
    mount_point.mkdir(exist_ok=True)
    return Volume(image, mount_point)


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Volume]:
    vol = make_volume(tmp_path, "drive", tmp_path / "root1")
    vol.mount()
    try:
        yield vol
    finally:
        while vol.mounted:
            vol.unmount(lazy=True)
