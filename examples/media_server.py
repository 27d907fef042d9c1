"""A tiny "media server" that keeps ratings and play counts keyed by filewarden's ids.

What a photo or music server would do with filewarden, in one file:

- its own SQLite keeps ``items`` (id, path, state, root) and ``ratings``
  (id, stars, plays), keyed by filewarden's stable ids, never by path;
- it reads the catalog once (``list``), then follows the journal
  (``iter_changes``), so renames and moves made by any tool update the
  paths it shows, and ratings stay with their files;
- a missing file is greyed out, not forgotten; a root that is offline is
  shown as "drive offline", and its files keep everything;
- ratings go only when filewarden says ``purge``;
- a cursor the feed cannot serve (``Reset``) makes it read the catalog again.

    python -m examples.media_server --db app.db            # follow, printing the library
    python -m examples.media_server --db app.db --once     # catch up, print, exit
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
from pathlib import Path
from typing import Any

from filewarden.client import Change, Client, Reset, connect, iter_changes, socket_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, state TEXT NOT NULL, root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY, stars INTEGER, plays INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY, online INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (
    one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL, instance TEXT NOT NULL
);
"""


class MediaServer:
    """The app's library: its own database, kept in step with filewarden."""

    def __init__(self, db: Path, socket: Path | None = None) -> None:
        self.socket = socket_path(socket)
        self.db = sqlite3.connect(db, check_same_thread=False)
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    # -- what the user does -------------------------------------------------------

    def rate(self, file_id: int, stars: int) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO ratings(id, stars) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET stars = excluded.stars",
                (file_id, stars),
            )

    def play(self, file_id: int) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO ratings(id, plays) VALUES (?, 1)"
                " ON CONFLICT(id) DO UPDATE SET plays = plays + 1",
                (file_id,),
            )

    def library(self) -> list[dict[str, Any]]:
        """What the app shows: each item with its rating, greyed out if missing or offline."""
        with self.lock:
            rows = self.db.execute(
                "SELECT i.id, i.path, i.state, i.root, r.stars, coalesce(r.plays, 0),"
                " coalesce(o.online, 1) FROM items i LEFT JOIN ratings r ON r.id = i.id"
                " LEFT JOIN roots o ON o.path = i.root ORDER BY i.path"
            ).fetchall()
        return [
            {
                "id": id,
                "path": path,
                "state": state,
                "greyed": state != "present",
                "drive_offline": not online,
                "stars": stars,
                "plays": plays,
            }
            for id, path, state, root, stars, plays, online in rows
        ]

    def ratings(self) -> dict[int, tuple[int | None, int]]:
        with self.lock:
            rows = self.db.execute("SELECT id, stars, plays FROM ratings").fetchall()
        return {id: (stars, plays) for id, stars, plays in rows}

    # -- keeping in step with filewarden -----------------------------------------------

    def cursor(self) -> tuple[int, str] | None:
        with self.lock:
            row = self.db.execute("SELECT seq, instance FROM cursor").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def read_catalog(self) -> tuple[int, str]:
        """Read every file anew (the first time, and after a ``Reset``); returns the cursor."""
        with connect(self.socket) as fw:
            status = fw.status()  # the seq before the listing: replaying after it is harmless
            files = list(fw.iter_files())
        roots = {r["path"]: r["state"] == "online" for r in status["roots"]}
        with self.lock, self.db:
            self.db.execute("DELETE FROM items")
            self.db.executemany(
                "INSERT INTO items(id, path, state, root) VALUES (?, ?, ?, ?)",
                [(f["id"], f["path"], f["state"], f["root"]) for f in files],
            )
            self.db.execute("DELETE FROM roots")
            self.db.executemany("INSERT INTO roots VALUES (?, ?)", list(roots.items()))
            self._save_cursor(status["seq"], status["instance"])
        return status["seq"], status["instance"]

    def apply(self, change: Change) -> None:
        """One journal entry, and the cursor after it, in one transaction."""
        kind, file_id = change["kind"], change.get("id")
        with self.lock, self.db:
            if kind in ("new", "move", "relink", "restore", "change") and change.get("path"):
                root = self._root_of(str(change["path"]))
                self.db.execute(
                    "INSERT INTO items(id, path, state, root) VALUES (?, ?, 'present', ?)"
                    " ON CONFLICT(id) DO UPDATE SET path = excluded.path, state = 'present',"
                    " root = excluded.root",
                    (file_id, change["path"], root),
                )
            elif kind == "missing":
                self.db.execute("UPDATE items SET state = 'missing' WHERE id = ?", (file_id,))
            elif kind == "retire":
                # An interim id went into an older one: what was known of it goes along.
                into = change.get("into")
                self.db.execute("DELETE FROM items WHERE id = ?", (file_id,))
                self.db.execute(
                    "INSERT INTO ratings(id, stars, plays) SELECT ?, stars, plays FROM ratings"
                    " WHERE id = ? ON CONFLICT(id) DO UPDATE SET"
                    " stars = coalesce(ratings.stars, excluded.stars),"
                    " plays = ratings.plays + excluded.plays",
                    (into, file_id),
                )
                self.db.execute("DELETE FROM ratings WHERE id = ?", (file_id,))
            elif kind in ("offline", "online"):
                online = kind == "online"
                root = str(change.get("root"))
                self.db.execute(
                    "INSERT INTO roots VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET"
                    " online = excluded.online",
                    (root, online),
                )
                self.db.execute(
                    "UPDATE items SET state = ? WHERE root = ? AND state = ?",
                    ("present", root, "offline") if online else ("offline", root, "present"),
                )
            elif kind == "purge":
                # Only now do ratings go: the file is gone for good.
                self.db.execute("DELETE FROM items WHERE id = ?", (file_id,))
                self.db.execute("DELETE FROM ratings WHERE id = ?", (file_id,))
            instance = self.db.execute("SELECT instance FROM cursor").fetchone()[0]
            self._save_cursor(change["seq"], instance)

    def follow(self, stop: threading.Event, *, wait: float = 5.0) -> None:
        """Keep in step until ``stop``: catch up from the cursor, then follow the feed."""
        cursor = self.cursor() or self.read_catalog()
        for item in iter_changes(
            cursor[0], instance=cursor[1], socket=self.socket, wait=wait, stop=stop
        ):
            if isinstance(item, Reset):
                self.read_catalog()
                with self.lock, self.db:
                    self._save_cursor(item.seq, item.instance)
            else:
                self.apply(item)

    def caught_up(self) -> bool:
        """Whether the cursor is at the catalog's last seq."""
        cursor = self.cursor()
        with Client(self.socket) as fw:
            status = fw.status()
        return cursor is not None and cursor == (status["seq"], status["instance"])

    def _save_cursor(self, seq: int, instance: str) -> None:
        self.db.execute(
            "INSERT INTO cursor VALUES (1, ?, ?) ON CONFLICT(one) DO UPDATE"
            " SET seq = excluded.seq, instance = excluded.instance",
            (seq, instance),
        )

    def _root_of(self, path: str) -> str:
        roots = [r for (r,) in self.db.execute("SELECT path FROM roots")]
        under = [r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")]
        return max(under, key=len) if under else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--once", action="store_true", help="catch up, print, exit")
    args = parser.parse_args()
    app = MediaServer(args.db, args.socket)
    stop = threading.Event()
    if args.once:
        follower = threading.Thread(target=app.follow, args=(stop,), kwargs={"wait": 0.5})
        follower.start()
        while not app.caught_up():
            stop.wait(0.2)
        stop.set()
        follower.join()
        for item in app.library():
            flag = "offline" if item["drive_offline"] else item["state"]
            print(
                f"{item['id']:>8} {flag:8} {item['stars'] or '-':>2}* {item['plays']:>3} {item['path']}"
            )
        return
    try:
        app.follow(stop)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
