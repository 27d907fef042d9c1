"""The daemon as a process: started, its JSON log read as it is written, stopped."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filewarden.client import Client, Unreachable

Record = dict[str, Any]


def log_time(record: Mapping[str, Any]) -> float:
    """The wall-clock time (epoch seconds) of a JSON log line."""
    stamp = str(record["timestamp"]).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(stamp).timestamp()


class DaemonProcess:
    """``python -m filewarden run --log-format json ARGS``, its stderr written to a log file
    (``command``: another long-running command, such as ``ship``).

    The log is read as the daemon writes it (no pipe to keep drained, and
    nothing of ours runs while it works). ``records`` and ``wait_event``
    share a cursor: each returns what came after what they returned last.
    Without a config, state and socket go under ``tmp`` (``XDG_*``).
    """

    def __init__(
        self,
        tmp: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        notify: bool = False,
        log: Path | None = None,
        socket: Path | None = None,
        command: str = "run",
    ) -> None:
        self.socket = socket
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("XDG_STATE_HOME", str(tmp / "state"))
        self.env.setdefault("XDG_RUNTIME_DIR", str(tmp / "run"))
        (tmp / "run").mkdir(exist_ok=True)
        if log is None:  # several daemons may share ``tmp``, one after another or at once
            fd, name = tempfile.mkstemp(prefix="daemon-", suffix=".log", dir=tmp)
            os.close(fd)
            log = Path(name)
        self.log_path = log
        self.notify: NotifyListener | None = None
        if notify:  # as systemd's for Type=notify: see ready_after
            self.notify = NotifyListener(log.with_suffix(".notify"))
            self.env["NOTIFY_SOCKET"] = str(self.notify.path)
        self._raw: list[str] = []
        self._events: list[Record] = []
        self._read_to = 0  # bytes of the log parsed into _raw and _events
        self._cursor = 0  # events already handed out by records/wait_event
        with open(log, "wb") as out:
            self.started_wall = time.time()
            self.started = time.monotonic()  # the same moment
            self.proc = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "filewarden",
                    command,
                    "--log-format",
                    "json",
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pull(self) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(self._read_to)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._read_to += end
        for line in data[:end].decode("utf-8", "replace").splitlines(keepends=True):
            self._raw.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a library's plain line; tests that care check ``raw``
            if isinstance(event, dict):
                self._events.append(event)

    @property
    def raw(self) -> list[str]:
        """Every line logged so far, JSON or not."""
        self._pull()
        return self._raw

    @property
    def events(self) -> list[Record]:
        """Every JSON line logged so far."""
        self._pull()
        return self._events

    def seen(self, name: str) -> list[Record]:
        """Every event called ``name`` logged so far."""
        return [e for e in self.events if e.get("event") == name]

    def records(self, *, from_start: bool = False) -> list[Record]:
        """The events logged since the last call (or since the start), moving the cursor past them."""
        if from_start:
            self._cursor = 0
        new = self.events[self._cursor :]
        self._cursor += len(new)
        return new

    def tail(self, lines: int = 20) -> str:
        return "".join(self.raw[-lines:])

    def wait_event(
        self,
        name: str,
        timeout: float = 30,
        *,
        where: Callable[[Record], bool] | None = None,
        poll: float = 0.005,
        **fields: Any,
    ) -> Record:
        """The next event called ``name`` (with these field values, matching ``where``).

        Fails at the deadline, or as soon as the daemon exits without it.
        """
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None  # before reading: its last lines are in
            events = self.events
            while self._cursor < len(events):
                event = events[self._cursor]
                self._cursor += 1
                if (
                    event.get("event") == name
                    and all(event.get(k) == v for k, v in fields.items())
                    and (where is None or where(event))
                ):
                    return event
            if exited:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before {name}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                seen = [e.get("event") for e in self.events]
                raise AssertionError(
                    f"no {name} {fields} within {timeout} s; last seen: {seen[-20:]}"
                )
            time.sleep(poll)

    def connect(self, timeout: float = 60, *, call_timeout: float = 120) -> Client:
        """A client on the daemon's socket once it answers ``status``; fails if the daemon exits first."""
        assert self.socket is not None, "started without a config: which socket?"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}): {self.tail()}")
            try:
                client = Client(self.socket, timeout=call_timeout)
            except Unreachable:
                pass
            else:
                try:
                    client.call("status")
                    return client
                except (Unreachable, ConnectionError):
                    client.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon socket did not answer within {timeout} s")
            time.sleep(0.02)

    def ready_after(self, timeout: float = 1800) -> float:
        """Seconds from start to the daemon's READY=1 (started with ``notify``)."""
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        while not (ready := self.notify.lines("READY=1")):
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited before READY=1: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no READY=1 from the daemon within {timeout:.0f} s")
            time.sleep(0.005)
        return ready[0][0] - self.started

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, and the exit code (killed at the deadline: fails).

        Fails too if any line was logged outside the catalogue (log_events.py).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not stop within {timeout} s of SIGTERM") from None
        finally:
            if self.notify is not None:  # after the exit: STOPPING=1 still finds it
                self.notify.close()
        wrong = [e for e in self.events if "uncatalogued" in e]
        assert not wrong, f"logged outside the catalogue (log_events.py): {wrong[:5]}"
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


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
