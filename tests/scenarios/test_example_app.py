"""The worked integration (examples/media_server.py) end to end: ratings keyed by
filewarden's ids survive renames, a directory move, an unplugged drive, a missing
file, a daemon restart, and go only with a purge."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from examples.media_server import MediaServer

from filewarden.testing import Live
from tests.conftest import wait_for
from tests.scenarios.conftest import live_daemon
from tests.scenarios.drives import Volume

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a filesystem")
MARKER = {"marker": ".library"}


def shown(app: MediaServer) -> dict[int, dict[str, Any]]:
    return {item["id"]: item for item in app.library()}


def until(app: MediaServer, check: Any, timeout: float = 30) -> dict[int, dict[str, Any]]:
    """The app's library once ``check(library)`` holds (poll with a deadline)."""
    return wait_for(lambda: (lib := shown(app)) and check(lib) and lib, timeout=timeout)  # type: ignore[no-any-return]


def catalog_view(live: Live) -> dict[int, tuple[str, str]]:
    return {
        f["id"]: (f["path"], f["state"])
        for state in ("present", "missing", "offline")
        for f in live.files(state)
    }


def test_the_example_media_server_follows_the_catalog(tmp_path: Path, drive: Volume) -> None:
    music = drive.mount_point / "Artist" / "Album"
    photos = tmp_path / "root2" / "2024"

    def fill(roots: list[Path]) -> None:
        music.mkdir(parents=True)
        photos.mkdir(parents=True)
        for root in roots:
            (root / ".library").write_text("")
        for n in range(4):
            (music / f"0{n}.flac").write_text(f"track {n}")
            (photos / f"img{n}.jpg").write_text(f"photo {n}")

    app = MediaServer(tmp_path / "app.db", tmp_path / "run" / "fw.sock")
    stop = threading.Event()
    follower = threading.Thread(target=app.follow, args=(stop,), kwargs={"wait": 1.0})
    try:
        with live_daemon(
            tmp_path, "watchdog", roots=2, before_start=fill, root_options=MARKER
        ) as live:
            follower.start()
            wait_for(app.caught_up, timeout=30)
            ids = {Path(p): i for i, (p, _) in catalog_view(live).items()}
            a, b, c = (ids[music / f"0{n}.flac"] for n in range(3))
            photo = ids[photos / "img0.jpg"]
            app.rate(a, 5)
            for _ in range(3):
                app.play(b)
            app.rate(c, 2)
            app.rate(photo, 4)
            # A rename, then a directory move, by any tool.
            (music / "00.flac").rename(music / "00 - Intro.flac")
            live.sync()
            until(app, lambda lib: lib[a]["path"] == str(music / "00 - Intro.flac"))
            album = music.parent / "Album (2020)"
            music.rename(album)
            live.sync()
            lib = until(app, lambda lib: lib[b]["path"] == str(album / "01.flac"))
            assert lib[a]["path"] == str(album / "00 - Intro.flac")
            # The drive unplugged: "drive offline", nothing lost.
            drive.unmount(lazy=True)
            lib = until(app, lambda lib: lib[a]["drive_offline"] and lib[a]["state"] == "offline")
            assert lib[a]["stars"] == 5 and lib[b]["plays"] == 3
            assert not lib[photo]["drive_offline"] and lib[photo]["state"] == "present"
            drive.mount()
            until(app, lambda lib: not lib[a]["drive_offline"] and lib[a]["state"] == "present")
            # A file deleted: greyed out, its rating kept.
            (album / "02.flac").unlink()
            live.sync()
            lib = until(app, lambda lib: lib[c]["state"] == "missing")
            assert lib[c]["greyed"] and lib[c]["stars"] == 2
        # The daemon restarts; meanwhile a photo is renamed.
        (photos / "img0.jpg").rename(photos / "beach.jpg")
        with live_daemon(tmp_path, "watchdog", roots=2, root_options=MARKER) as live:
            lib = until(app, lambda lib: lib[photo]["path"] == str(photos / "beach.jpg"))
            assert lib[photo]["stars"] == 4
            # Only a purge drops a rating.
            assert live.call("purge", {"ids": [c]})["purged"] == 1
            until(app, lambda lib: c not in lib)
            assert c not in app.ratings()
            wait_for(app.caught_up, timeout=30)
            view = {i: (item["path"], item["state"]) for i, item in shown(app).items()}
            assert view == catalog_view(live)
            assert app.ratings() == {a: (5, 0), b: (None, 3), photo: (4, 0)}
    finally:
        stop.set()
        follower.join(30)
