"""What the drills share: a daemon that can be killed and restarted on one config, and checks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from filewarden import catalog
from filewarden.client import Client, Unreachable
from tests.daemon_proc import DaemonProcess
from tests.scenarios.conftest import Live


def write_config(
    tmp: Path,
    roots: list[Path],
    *,
    state: Path | None = None,
    backend: str = "watchdog",
    daemon_extra: str = "",
    extra: str = "",
) -> tuple[Path, Path, Path]:
    """A config like the scenarios' (no periodic sweeps); returns (config, socket, state_dir)."""
    state = state or tmp / "state"
    sock = tmp / "run" / "fw.sock"
    lines = [
        "[daemon]",
        f'state_dir = "{state}"',
        f'socket = "{sock}"',
        daemon_extra,
        "[sweep]",
        'interval = "never"',
        'quick_interval = "never"',
        'poll_interval = "1h"',
        "[watch]",
        f'backend = "{backend}"',
    ]
    for r in roots:
        lines += ["[[root]]", f'path = "{r}"', 'exclude = ["excluded"]']
    cfg = tmp / "config.toml"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    return cfg, sock, state


def wait_socket(sock: Path, proc: DaemonProcess, timeout: float = 60) -> Client:
    """A client on the daemon's socket once it answers (fails if the daemon exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited ({proc.proc.returncode}): {''.join(proc.raw[-20:])}"
            )
        try:
            client = Client(sock, timeout=120)
            client.call("status")
            return client
        except (Unreachable, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon socket did not answer within {timeout} s")
        time.sleep(0.02)


def live(tmp: Path, roots: list[Path], proc: DaemonProcess, sock: Path, backend: str) -> Live:
    """The scenarios' Live view over a daemon started here (for sync, files, assert_matches_disk)."""
    wait_socket(sock, proc).close()
    return Live(tmp, roots, tmp / "outside", proc, sock, backend)


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection: "ok" for a sound catalog."""
    conn = catalog.connect(db, readonly=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:10])


def regular_files(roots: list[Path]) -> dict[bytes, os.stat_result]:
    """Every regular file under the roots (sync cookies aside), by raw path, never following links."""
    found: dict[bytes, os.stat_result] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
            dirnames[:] = [d for d in dirnames if d != b"excluded"]
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                if (
                    not name.startswith(b".filewarden-sync-")
                    and (st.st_mode & 0o170000) == 0o100000
                ):
                    found[p] = st
    return found


def report(name: str, figures: dict[str, Any]) -> str:
    return f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())


CAPPED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


class CappedDaemon(DaemonProcess):
    """The daemon run by root without the capabilities that override file permissions.

    Run as plain root it reads everything; without them a directory with
    mode 000 gives it a real EACCES, as it would the service's own user.
    """

    def __init__(self, tmp: Path, *args: str) -> None:
        import queue
        import subprocess
        import sys
        import threading

        self.env = dict(os.environ)
        self.env.setdefault("XDG_STATE_HOME", str(tmp / "state"))
        self.env.setdefault("XDG_RUNTIME_DIR", str(tmp / "run"))
        (tmp / "run").mkdir(exist_ok=True)
        prefix = CAPPED if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "filewarden", "run", "--log-format", "json", *args],
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
