"""A real daemon for the benchmarks: config, start, JSON log, stop.

Each benchmark runs ``python -m filewarden run`` on its own state dir and
socket under its work dir, reads the JSON log lines the daemon writes to
stderr (and, if asked, the sd_notify datagrams it sends as under systemd),
and stops it with SIGTERM. Hashing is off unless asked for: the
first pass of the background hasher over a fresh catalog would otherwise
compete with what is measured on a two-core machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filewarden.client import Client, Unreachable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon_proc import NotifyListener


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def log_time(record: dict[str, Any]) -> float:
    """The wall-clock time (epoch seconds) of a JSON log line."""
    stamp = record["timestamp"].replace("Z", "+00:00")
    return dt.datetime.fromisoformat(stamp).timestamp()


def inotify_limits() -> dict[str, int]:
    base = Path("/proc/sys/fs/inotify")
    return {p.name: int(p.read_text()) for p in sorted(base.iterdir())}


class LimitWatch(threading.Thread):
    """Samples the fs.inotify limits: they are system-wide, and another process may lower them
    for a while (a test that provokes an overflow does), which would spoil a measurement."""

    def __init__(self, every: float = 0.05) -> None:
        super().__init__(name="inotify-limits", daemon=True)
        self.every = every
        self.start_values = inotify_limits()
        self.lowest = dict(self.start_values)
        self.start()

    def run(self) -> None:
        while True:
            for k, v in inotify_limits().items():
                self.lowest[k] = min(self.lowest.get(k, v), v)
            time.sleep(self.every)

    def take(self) -> dict[str, int]:
        """The limits that were lower than at the start since the last call (and reset)."""
        lowered = {k: v for k, v in self.lowest.items() if v < self.start_values.get(k, v)}
        self.lowest = dict(self.start_values)
        return lowered


def require_watched(client: Client, roots: list[Path], backend: str) -> None:
    """Refuse to measure a root the daemon polls (the inotify limits reached, say)."""
    wanted = {str(r) for r in roots}
    for root in client.call("status")["roots"]:
        if root["path"] in wanted and (root["mode"] != "watch" or root["backend"] != backend):
            raise SystemExit(
                f"the daemon does not watch {root['path']} with {backend}: {root}; "
                f"fs.inotify: {inotify_limits()}"
            )


class Daemon:
    def __init__(
        self,
        work: Path,
        name: str,
        roots: list[Path],
        *,
        backend: str = "watchdog",
        hash_enabled: bool = False,
        exclude: tuple[str, ...] = (),
    ) -> None:
        self.work = work
        self.name = name
        self.sock = work / f"{name}.sock"
        self.state = work / f"{name}-state"
        self.config = work / f"{name}.toml"
        self.log_path = work / f"{name}.log"
        excl = "[" + ", ".join(json.dumps(e) for e in exclude) + "]"
        text = (
            f'[daemon]\nstate_dir = "{self.state}"\nsocket = "{self.sock}"\n'
            'client_idle_timeout = "1h"\n'
            '[sweep]\ninterval = "never"\nquick_interval = "never"\n'
            f'[watch]\nbackend = "{backend}"\n'
            f"[hash]\nenabled = {'true' if hash_enabled else 'false'}\n"
            '[log]\nlevel = "info"\n'
        )
        for root in roots:
            text += f'[[root]]\npath = "{root}"\nexclude = {excl}\n'
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0
        self.started = 0.0  # time.monotonic() at the same moment
        self.notify: NotifyListener | None = None
        self._offset = 0  # log bytes already read by ``records``

    def reset_state(self) -> None:
        """Forget the catalog: the next start is a first index."""
        if self.state.exists():
            for p in self.state.iterdir():
                p.unlink()

    def start(self, *, notify: bool = False) -> None:
        """Start the daemon; ``started_wall`` is the wall clock just before the process exists.

        With ``notify``, NOTIFY_SOCKET points at a listener of ours, as
        systemd's would for ``Type=notify``: see ``ready_after``.
        """
        assert self.proc is None
        self.log_path.write_bytes(b"")
        self._offset = 0
        env = None
        if notify:
            self.notify = NotifyListener(self.work / f"{self.name}-notify.sock")
            env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path))
        log = open(self.log_path, "ab")
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "filewarden",
                "run",
                "--config",
                str(self.config),
                "--log-format",
                "json",
                "--log-level",
                "info",
            ],
            stderr=log,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        log.close()

    def ready_after(self, timeout: float = 1800) -> float:
        """Seconds from start to the daemon's READY=1 (started with ``notify``)."""
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while not (ready := self.notify.lines("READY=1")):
            if self.proc.poll() is not None:
                raise SystemExit("the daemon exited before sending READY=1")
            if time.monotonic() > deadline:
                raise SystemExit(f"no READY=1 from the daemon within {timeout:.0f} s")
            time.sleep(0.005)  # polling the listener, with a deadline
        return ready[0][0] - self.started

    def records(self, *, from_start: bool = False) -> Iterator[dict[str, Any]]:
        """JSON log lines written since the last call (or since start)."""
        if from_start:
            self._offset = 0
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def wait_event(
        self,
        event: str,
        where: Callable[[dict[str, Any]], bool] = lambda r: True,
        timeout: float = 1800,
        poll: float = 0.01,
    ) -> dict[str, Any]:
        """The next log line ``event`` (matching ``where``), read as the daemon writes it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.records():
                if rec.get("event") == event and where(rec):
                    return rec
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"daemon exited ({self.proc.returncode}): {tail}")
            time.sleep(poll)
        raise SystemExit(f"no {event} from the daemon within {timeout:.0f} s")

    def wait_socket(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                Client(self.sock, timeout=5).close()
                return
            except Unreachable:
                time.sleep(0.02)
        raise SystemExit("daemon socket did not answer")

    def client(self) -> Client:
        return Client(self.sock, timeout=900)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit("daemon did not stop within 60 s of SIGTERM") from None
        finally:
            self.proc = None
            if self.notify is not None:  # after the exit: STOPPING=1 still finds it
                self.notify.close()
                self.notify = None
        if code != 0:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"daemon exited with {code}: {tail}")

    def all_files(self, client: Client, state: str | None = "present") -> list[dict[str, Any]]:
        """Every file record, through ``list`` pages."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"limit": 10_000, "after_id": after}
            if state:
                params["state"] = state
            page = client.call("list", params)
            out += page["files"]
            if page["next_after_id"] is None:
                return out
            after = page["next_after_id"]


def start_and_sweep(daemon: Daemon, *, notify: bool = False) -> dict[str, Any]:
    """Start the daemon, wait for its first sweep; the sweep's counts and timings.

    ``to_ready_s`` is the ``daemon.ready`` log line; with ``notify``, also
    ``to_ready_notify_s``: the READY=1 datagram systemd would act on.
    """
    daemon.start(notify=notify)
    rec = daemon.wait_event("sweep.finish", poll=0.005)
    ready = next(
        (r for r in daemon.records(from_start=True) if r.get("event") == "daemon.ready"), None
    )
    out = {
        **{
            k: rec.get(k)
            for k in ("kind", "files", "new", "moved", "relinked", "missing", "changed")
        },
        "to_sweep_finish_s": log_time(rec) - daemon.started_wall,
        "sweep_s": rec["duration_s"],
        "to_ready_s": log_time(ready) - daemon.started_wall if ready else None,
    }
    if notify:
        out["to_ready_notify_s"] = daemon.ready_after()
    return out
