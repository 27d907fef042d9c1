"""A real daemon process for tests: started with `python -m filewarden run`, logs read as JSON lines."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class DaemonProcess:
    """Runs the daemon in the foreground with JSON logs on stderr, parsed as they come."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("XDG_STATE_HOME", str(tmp / "state"))
        self.env.setdefault("XDG_RUNTIME_DIR", str(tmp / "run"))
        (tmp / "run").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "filewarden", "run", "--log-format", "json", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            text = line.decode("utf-8")
            self.raw.append(text)
            try:
                event = json.loads(text)
            except ValueError:
                continue  # a library's plain line; tests that care check self.raw
            self.events.append(event)
            self._queue.put(event)
        self._queue.put(None)

    def wait_event(self, name: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        """The next log event called ``name`` (with these field values); fails at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e["event"] for e in self.events]
                raise AssertionError(
                    f"no {name} {fields} within {timeout} s; last seen: {seen[-20:]}"
                )
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(
                    f"daemon exited ({self.proc.wait()}) before {name}: {''.join(self.raw)[-2000:]}"
                )
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event

    def seen(self, name: str) -> list[dict[str, Any]]:
        """Every event called ``name`` logged so far."""
        return [e for e in self.events if e.get("event") == name]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, and the exit code; fails if any line was logged outside the catalogue."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)
            wrong = [e for e in self.events if "uncatalogued" in e]
            assert not wrong, f"logged outside the catalogue (log_events.py): {wrong[:5]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_config(tmp: Path, roots: list[Path], backend: str = "poll", **daemon: object) -> Path:
    """A config file for a test daemon: state and socket under ``tmp``, short client timeouts.

    The API tests default to the poll backend: what they check (lookup with
    verify, scan counts) must not race a watcher that got there first.
    """
    socket_path = daemon.pop("socket", tmp / "run" / "fw.sock")
    lines = [
        "[daemon]",
        f'state_dir = "{tmp / "state"}"',
        f'socket = "{socket_path}"',
        'client_request_timeout = "1s"',
        'client_idle_timeout = "3s"',
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in daemon.items()]
    lines += ["[sweep]", 'interval = "never"', 'quick_interval = "never"', 'poll_interval = "1h"']
    lines += ["[watch]", f'backend = "{backend}"']
    for root in roots:
        lines += ["[[root]]", f'path = "{root}"']
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class NotifyListener:
    """systemd's side of sd_notify: a real AF_UNIX datagram socket; each line kept with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []  # (time.monotonic(), "KEY=value")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.received += [(now, line) for line in data.decode(errors="replace").splitlines()]

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        """The lines received so far that start with ``prefix``, with their arrival times."""
        return [(t, line) for t, line in list(self.received) if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
