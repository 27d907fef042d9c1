"""Reading the disk: one regular file, one path placed under its root, one directory still there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden import catalog
from filewarden.config import RootConfig
from filewarden.listing import resolve, stat_regular, still_listed
from filewarden.roots import Root


def _root(path: Path, root_id: int = 1, **options: object) -> Root:
    return Root.make(root_id, RootConfig(path=path, **options))  # type: ignore[arg-type]


def test_stat_regular_is_for_regular_files_only(tmp_path: Path) -> None:
    """A regular file's signature; None for a directory, a symlink, a FIFO or nothing."""
    f = tmp_path / "f"
    f.write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(f)
    os.mkfifo(tmp_path / "p")
    assert stat_regular(os.fsencode(f)) == catalog.signature(f.stat())
    for name in ("d", "l", "p", "absent"):
        assert stat_regular(os.fsencode(tmp_path / name)) is None


def test_stat_regular_strict_raises_what_lstat_raised(tmp_path: Path) -> None:
    """Strict, a path that cannot be stated raises; what is there but not a file is still None."""
    with pytest.raises(FileNotFoundError):
        stat_regular(os.fsencode(tmp_path / "absent"), strict=True)
    assert stat_regular(os.fsencode(tmp_path), strict=True) is None


def test_resolve_places_a_path_under_its_root_and_honours_excludes(tmp_path: Path) -> None:
    """Root and relative path; None outside, for the root itself and (unless kept) when excluded."""
    (tmp_path / "a").mkdir()
    (tmp_path / "ab").mkdir()
    a = _root(tmp_path / "a", 1, exclude=("*.tmp", "private/*"))
    ab = _root(tmp_path / "ab", 2)
    base = os.fsencode(tmp_path)
    assert resolve(base + b"/a/x/y.jpg", [a, ab]) == (a, b"x/y.jpg")
    assert resolve(base + b"/ab/y.jpg", [a, ab]) == (ab, b"y.jpg")
    assert resolve(base + b"/a", [a, ab]) is None
    assert resolve(base + b"/c/y.jpg", [a, ab]) is None
    for excluded in (b"/a/x/y.tmp", b"/a/private/y.jpg", b"/a/x.tmp/y.jpg"):
        assert resolve(base + excluded, [a]) is None
        assert resolve(base + excluded, [a], keep_excluded=True) == (a, excluded[3:])


def test_still_listed_is_the_same_directory_only(tmp_path: Path) -> None:
    """The directory listed, by device and inode; not once moved away, replaced or made a file."""
    root = _root(tmp_path)
    (tmp_path / "d").mkdir()
    st = (tmp_path / "d").stat()
    ident = (st.st_dev, st.st_ino)
    assert still_listed(root, b"d", ident)
    (tmp_path / "d").rename(tmp_path / "e")
    assert not still_listed(root, b"d", ident)
    (tmp_path / "d").write_bytes(b"")
    assert not still_listed(
        root, b"d", (os.stat(tmp_path / "d").st_dev, os.stat(tmp_path / "d").st_ino)
    )
    assert still_listed(root, b"e", ident)
