"""What several benchmarks measure the same way: the ``find`` baseline, a process's memory,
a catalog's size on disk, the inotify limits, and a real daemon's start-up.

The daemon is ``filewarden.testing``'s, on its own state dir and socket
under the work dir, with its JSON log in ``NAME.log`` there.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filewarden.client import Client
from filewarden.testing import DaemonProcess, Setup, log_time, write_config


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def find_command(tree: Path) -> list[str]:
    """``find`` printing what a sweep compares (inode, size, mtime, path): the baseline."""
    return ["find", str(tree), "-printf", "%i %s %T@ %p\\n"]


def timed(cmd: list[str], **kw: object) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.monotonic() - t0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak resident) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, window: float = 1.0, busy: float = 0.02, timeout: float = 300) -> bool:
    """Wait until a process uses under ``busy`` of a CPU over ``window`` seconds; False on timeout."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before < busy * window:
            return True
        before = now
    return False


def catalog_bytes(db: Path) -> int:
    """A SQLite database on disk: the file, its write-ahead log and its shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += Path(str(db) + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total


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


def daemon_setup(
    work: Path,
    name: str,
    roots: list[Path],
    *,
    backend: str = "watchdog",
    hash_enabled: bool = False,
    exclude: Sequence[str] = (),
) -> Setup:
    """A benchmark's daemon config: ``NAME.toml``, ``NAME-state/`` and ``NAME.sock`` under ``work``.

    Hashing is off unless asked for: the first pass of the background
    hasher over a fresh catalog would otherwise compete with what is
    measured on a two-core machine.
    """
    return write_config(
        work,
        roots,
        name=name,
        backend=backend,
        state_dir=work / f"{name}-state",
        socket=work / f"{name}.sock",
        daemon={"client_idle_timeout": "1h"},
        sections={"hash": {"enabled": hash_enabled}, "log": {"level": "info"}},
        root={"exclude": list(exclude)},
    )


def start(setup: Setup, *, notify: bool = False) -> DaemonProcess:
    """The daemon on ``setup``, its log in ``NAME.log`` (the last run's, for a look after)."""
    return setup.start(notify=notify, log=setup.path.with_suffix(".log"))


def stop(proc: DaemonProcess) -> None:
    """SIGTERM, and exit (with the log's tail) unless the daemon stopped cleanly within 60 s."""
    code = proc.stop(60)
    if code != 0:
        raise SystemExit(f"daemon exited with {code}: {proc.tail()}")


def connect(proc: DaemonProcess) -> Client:
    """A client for long calls (a sync over a million files), once the socket answers."""
    return proc.connect(call_timeout=900)


def require_watched(client: Client, roots: list[Path], backend: str) -> None:
    """Refuse to measure a root the daemon polls (the inotify limits reached, say)."""
    wanted = {str(r) for r in roots}
    for root in client.call("status")["roots"]:
        if root["path"] in wanted and (root["mode"] != "watch" or root["backend"] != backend):
            raise SystemExit(
                f"the daemon does not watch {root['path']} with {backend}: {root}; "
                f"fs.inotify: {inotify_limits()}"
            )


def start_and_sweep(setup: Setup, *, notify: bool = False) -> tuple[DaemonProcess, dict[str, Any]]:
    """Start the daemon, wait for its first sweep; the daemon, and the sweep's counts and timings.

    ``to_ready_s`` is the ``daemon.ready`` log line; with ``notify``, also
    ``to_ready_notify_s``: the READY=1 datagram systemd would act on.
    """
    proc = start(setup, notify=notify)
    rec = proc.wait_event("sweep.finish", timeout=1800)
    ready = next((r for r in proc.events if r.get("event") == "daemon.ready"), None)
    out = {
        **{
            k: rec.get(k)
            for k in ("kind", "files", "new", "moved", "relinked", "missing", "changed")
        },
        "to_sweep_finish_s": log_time(rec) - proc.started_wall,
        "sweep_s": rec["duration_s"],
        "to_ready_s": log_time(ready) - proc.started_wall if ready else None,
    }
    if notify:
        out["to_ready_notify_s"] = proc.ready_after()
    return proc, out
