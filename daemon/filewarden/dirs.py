"""Directories the daemon makes for itself: its state directory and its socket's."""

from __future__ import annotations

import os

from filewarden.errors import FilewardenError


def prepare_dir(path: os.PathLike[str] | str, mode: int) -> None:
    """Create ``path`` (and parents) if absent; refuse one owned by another user.

    The fallback locations are under /tmp, where anyone could have created
    the directory first to catch the catalog or the socket.
    """
    os.makedirs(path, mode=mode, exist_ok=True)
    st = os.stat(path)
    if st.st_uid not in (os.geteuid(), 0):
        raise FilewardenError(
            f"{os.fspath(path)} belongs to uid {st.st_uid}, not to this user; refusing to use it"
        )
