"""A private watchman server for the benchmarks.

Its own socket, state, log and pid files under the work dir, so it neither
finds nor disturbs a watchman the user runs; started in the foreground so
its process (and its memory) is ours to read, and shut down after.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


class WatchmanServer:
    def __init__(self, dir: Path) -> None:
        self.dir = dir
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.log = self.dir / "log"
        self.base = [
            "watchman",
            f"--sockname={self.dir / 'sock'}",
            f"--statefile={self.dir / 'state'}",
            f"--logfile={self.log}",
            f"--pidfile={self.dir / 'pid'}",
            "--no-save-state",
        ]
        self.server = subprocess.Popen(
            [*self.base, "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while not (self.dir / "sock").exists():
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise SystemExit(f"watchman did not start; see {self.log}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.server.pid

    def client(self, *args: str) -> list[str]:
        """The command line of a client of this server (never one that spawns another)."""
        return [*self.base, "--no-spawn", *args]

    def call(self, *command: Any) -> dict[str, Any]:
        """One command, sent as JSON on stdin (``["query", root, {...}]``); its answer."""
        out = subprocess.run(
            self.client("-j"),
            input=json.dumps(list(command)).encode(),
            check=True,
            capture_output=True,
        )
        answer: dict[str, Any] = json.loads(out.stdout)
        if "error" in answer:
            raise SystemExit(f"watchman {command[0]}: {answer['error']}")
        return answer

    def close(self) -> None:
        subprocess.run(
            self.client("shutdown-server"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.terminate()
            self.server.wait(10)
